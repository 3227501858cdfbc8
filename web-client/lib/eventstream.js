// EventStreamSocket: Herald's Server-Sent Events stream (GET /sse) behind the small WebSocket
// interface the client uses (onopen, onmessage, onclose, send, close), so one client, one API
// and one resume loop serve both transports (PROTOCOL.md, "Server-Sent Events").
//
// A stream is one-way and names its channels in its URL, so the ops the client "sends" are kept
// here: each subscribe or unsubscribe reopens the stream with every channel, each from its
// newest position (the last event's id, which names every channel, or the position the client
// asked for), and the token of the last auth op. The browser's own reconnect is not used: a
// lost stream is reported as a close (1006), and the client's backoff and resume take over,
// as they do for a WebSocket.

/** The frame types a stream's events are named after. */
const EVENT_TYPES = ["subscribed", "message", "unsubscribed", "authenticated", "presence", "join", "leave"];

/** The positions in an event id: `channel:seq@epoch`, comma-separated, read from the end. */
export function parseEventID(id) {
  const out = new Map();
  for (const item of String(id ?? "").split(",")) {
    const at = item.lastIndexOf("@");
    const colon = at < 0 ? -1 : item.lastIndexOf(":", at);
    if (colon <= 0) continue;
    const seq = Number(item.slice(colon + 1, at));
    if (!Number.isSafeInteger(seq) || seq < 0 || at === item.length - 1) continue;
    out.set(item.slice(0, colon), { seq, epoch: item.slice(at + 1) });
  }
  return out;
}

/** The stream URL of a WebSocket URL: same host, http(s), `/ws` → `/sse`. */
export function eventStreamURL(wsURL) {
  const url = new URL(wsURL);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = url.pathname.replace(/\/ws$/, "") + "/sse";
  url.search = "";
  return url.toString();
}

export class EventStreamSocket {
  #EventSource;
  #timers;
  #source = null;
  #channels = new Map(); // channel -> the position its subscribe op asked for (or null)
  #presence = false;
  #token = null;
  #lastEventID = "";
  #reopenPending = false;
  #closed = false;

  constructor(url, { EventSource, timers }) {
    this.url = url;
    this.#EventSource = EventSource;
    this.#timers = timers;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    // Like a WebSocket's, "open" comes later: the client then sends its ops, and the stream
    // opens once with all of them.
    this.#timers.setTimeout(() => { if (!this.#closed) this.onopen?.({}); }, 0);
  }

  send(text) {
    if (this.#closed) throw new Error("send on a closed stream");
    const op = JSON.parse(text);
    switch (op.op) {
      case "auth":
        // Used by the next (re)open; a stream cannot take a token once open. When the current
        // token expires the server ends the stream (4002) and the client reconnects.
        this.#token = op.token;
        break;
      case "subscribe":
        this.#channels.delete(op.channel);
        this.#channels.set(op.channel, op.epoch !== undefined ? { seq: op.since, epoch: op.epoch } : null);
        if (op.presence) this.#presence = true;
        this.#reopenSoon();
        break;
      case "unsubscribe":
        if (this.#channels.delete(op.channel)) this.#reopenSoon();
        break;
      default:
        break;
    }
  }

  close() {
    this.#closed = true;
    this.#stopSource();
  }

  /** Ops sent together (one tick) open one stream. */
  #reopenSoon() {
    if (this.#reopenPending) return;
    this.#reopenPending = true;
    this.#timers.setTimeout(() => {
      this.#reopenPending = false;
      if (!this.#closed) this.#reopen();
    }, 0);
  }

  #reopen() {
    this.#stopSource();
    if (this.#channels.size === 0) return;
    const fromID = parseEventID(this.#lastEventID);
    const params = new URLSearchParams();
    const positions = [];
    for (const [channel, asked] of this.#channels) {
      params.append("channel", channel);
      const position = fromID.get(channel) ?? asked;
      if (position) positions.push(`${channel}:${position.seq}@${position.epoch}`);
    }
    if (positions.length > 0) params.set("last_event_id", positions.join(","));
    if (this.#token) params.set("token", this.#token);
    if (this.#presence) params.set("presence", "true");
    const source = new this.#EventSource(`${this.url}?${params}`);
    this.#source = source;
    const forward = (event) => {
      if (this.#source !== source) return;
      if (event.lastEventId) this.#lastEventID = event.lastEventId;
      this.onmessage?.({ data: event.data });
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, forward);
    source.addEventListener("close", (event) => {
      if (this.#source !== source) return;
      let frame = {};
      try { frame = JSON.parse(event.data); } catch { /* a malformed close still ends the stream */ }
      this.#fail(frame.code ?? 1006, frame.reason ?? "stream ended");
    });
    source.addEventListener("error", (event) => {
      if (this.#source !== source) return;
      // A server `error` event carries a frame; the browser's own (connection lost, or an HTTP
      // error such as 401) has no data.
      if (typeof event.data === "string") this.onmessage?.({ data: event.data });
      else this.#fail(1006, "event stream lost");
    });
  }

  #fail(code, reason) {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopSource();
    this.onclose?.({ code, reason });
  }

  #stopSource() {
    const source = this.#source;
    this.#source = null;
    try { source?.close(); } catch { /* already closed */ }
  }
}
