// Client publish and RPC (PROTOCOL.md, "Client publish" and "RPC"): each call is a promise kept
// until its answer frame comes back with the same id.
//
// A publish is idempotent by its id (the server derives the AMQP message_id from it), so one
// that was sent when the connection dropped is sent once more, with the same id, on the next
// connection. A call is not: it is rejected with code "disconnected" unless the caller asked for
// `retry: true`. Nothing is sent over the one-way SSE transport: there it rejects at once with
// code "unsupported".

/** Rejections carry the server's code ("forbidden", "timeout", "no_route", ...) and message. */
export class HeraldRequestError extends Error {
  constructor(code, message, frame = null) {
    super(message);
    this.name = "HeraldRequestError";
    this.code = code;
    this.frame = frame;
  }
}

/** A random id (128 bits, hex): unique without coordination, so retries never collide. */
export function randomID() {
  const bytes = new Uint8Array(16);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** How long a publish waits for its answer before it rejects with "timeout" (ms). */
const PUBLISH_TIMEOUT = 15000;
/** Beyond a call's own timeout, how long the client waits for the server's answer (ms). */
const RPC_GRACE = 5000;
/** A call with no timeout of its own waits at most this long for the server's answer (ms). */
const RPC_DEFAULT_WAIT = 60000;

export class Requests {
  #link; // {send(text), canSend(), transport()}
  #timers;
  #pending = new Map(); // id -> {op, resolve, reject, timer, sent, retriesLeft, kind}

  constructor(link, timers) {
    this.#link = link;
    this.#timers = timers;
  }

  publish(channel, data, options = {}) {
    const id = options.id ?? randomID();
    const op = { op: "publish", channel, data: data === undefined ? null : data, id };
    return this.#start(id, "publish", op, options.timeout ?? PUBLISH_TIMEOUT, 1, (frame) => ({
      id: frame.id, channel: frame.channel, messageId: frame.message_id,
    }));
  }

  rpc(method, data, options = {}) {
    if (typeof method !== "string" || method === "") return Promise.reject(new TypeError("rpc: method must be a non-empty string"));
    const id = options.id ?? randomID();
    const op = { op: "rpc", id, method, data: data === undefined ? null : data };
    if (options.timeout !== undefined) op.timeout = options.timeout;
    const wait = options.timeout !== undefined ? options.timeout + RPC_GRACE : RPC_DEFAULT_WAIT;
    return this.#start(id, "rpc", op, wait, options.retry === true ? 1 : 0, (frame) => frame.data);
  }

  #start(id, kind, op, wait, retries, result) {
    if (this.#link.transport() === "sse") {
      return Promise.reject(new HeraldRequestError("unsupported", `${kind} needs a WebSocket: the SSE transport is one-way`));
    }
    if (this.#pending.has(id)) return Promise.reject(new HeraldRequestError("duplicate_id", `a ${kind} with id ${id} is already waiting`));
    return new Promise((resolve, reject) => {
      const entry = { kind, op, resolve, reject, result, sent: false, retriesLeft: retries, timer: null };
      entry.timer = this.#timers.setTimeout(() => this.#settle(id, new HeraldRequestError("timeout", `no answer to ${kind} ${id} within ${wait} ms`)), wait);
      this.#pending.set(id, entry);
      if (this.#link.canSend()) this.#send(entry);
    });
  }

  #send(entry) {
    entry.sent = true;
    this.#link.send(JSON.stringify(entry.op));
  }

  /** The connection is up: what waits is sent. */
  connected() {
    for (const entry of this.#pending.values()) if (!entry.sent) this.#send(entry);
  }

  /** The connection dropped: what was sent is sent again once where that is safe, or rejected. */
  disconnected() {
    for (const [id, entry] of this.#pending) {
      if (!entry.sent) continue;
      if (entry.retriesLeft > 0) {
        entry.retriesLeft -= 1;
        entry.sent = false;
      } else {
        this.#settle(id, new HeraldRequestError("disconnected", `the connection dropped before ${entry.kind} ${id} was answered`));
      }
    }
  }

  /** A frame answering a publish or call; true when it was one of ours. */
  answer(frame) {
    if (typeof frame.id !== "string" || !this.#pending.has(frame.id)) return false;
    const entry = this.#pending.get(frame.id);
    switch (frame.type) {
      case "published":
      case "rpc_result":
        this.#settle(frame.id, null, entry.result(frame));
        return true;
      case "rpc_error":
      case "error":
        if (frame.type === "error" && frame.op !== entry.kind) return false;
        this.#settle(frame.id, new HeraldRequestError(frame.code, frame.message, frame));
        return true;
      default:
        return false;
    }
  }

  /** Everything waiting is rejected (close()). */
  rejectAll(code, message) {
    for (const id of [...this.#pending.keys()]) this.#settle(id, new HeraldRequestError(code, message));
  }

  #settle(id, error, value) {
    const entry = this.#pending.get(id);
    if (!entry) return;
    this.#pending.delete(id);
    this.#timers.clearTimeout(entry.timer);
    if (error) entry.reject(error);
    else entry.resolve(value);
  }
}
