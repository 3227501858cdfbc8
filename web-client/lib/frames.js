// Reading server frames and writing client frames (PROTOCOL.md, "WebSocket").

/** Channel names Herald accepts: 1 to 128 of A-Z a-z 0-9 _ . : @ - */
export const CHANNEL_PATTERN = /^[A-Za-z0-9_.:@-]{1,128}$/;

export function checkChannel(channel) {
  if (typeof channel !== "string" || !CHANNEL_PATTERN.test(channel)) {
    throw new TypeError(`bad channel name ${JSON.stringify(channel)}: use 1 to 128 of A-Z a-z 0-9 _ . : @ -`);
  }
}

/**
 * Splits one WebSocket text frame into server frames. Herald batches several JSON objects
 * into one frame separated by "\n"; compact JSON never contains a raw newline.
 * Returns the parsed objects and the lines that did not parse.
 */
export function parseFrames(text) {
  const frames = [];
  const invalid = [];
  for (const line of String(text).split("\n")) {
    if (line === "") continue;
    try {
      const frame = JSON.parse(line);
      if (frame && typeof frame === "object" && typeof frame.type === "string") frames.push(frame);
      else invalid.push(line);
    } catch {
      invalid.push(line);
    }
  }
  return { frames, invalid };
}

/**
 * A subscribe op; `presence`: also follow the members, from `presencePosition` when known;
 * `token`: a subscription token (PROTOCOL.md, "Subscription tokens").
 */
export function subscribeOp(channel, position, presence = false, presencePosition = null, token = null) {
  const op = { op: "subscribe", channel };
  if (token) op.token = token;
  if (position) {
    op.since = position.seq;
    op.epoch = position.epoch;
  }
  if (presence) {
    op.presence = true;
    if (presencePosition) {
      op.presence_since = presencePosition.seq;
      op.presence_epoch = presencePosition.epoch;
    }
  }
  return JSON.stringify(op);
}

export function unsubscribeOp(channel) {
  return JSON.stringify({ op: "unsubscribe", channel });
}
