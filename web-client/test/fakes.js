// Test doubles for the client library: a scripted WebSocket, manual timers and a storage.

export class FakeWebSocket {
  static instances = [];
  static reset() { FakeWebSocket.instances = []; }
  static get last() { return FakeWebSocket.instances.at(-1); }

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeWebSocket.instances.push(this);
  }

  // What the client does.
  send(text) {
    if (this.closed) throw new Error("send on a closed socket");
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000, reason = "") { this.closed = { code, reason }; }

  // What the server does.
  open() { this.onopen?.({}); }
  receive(...frames) { this.onmessage?.({ data: frames.map((f) => JSON.stringify(f)).join("\n") }); }
  receiveRaw(data) { this.onmessage?.({ data }); }
  drop(code = 1006, reason = "") { this.closed = { code, reason }; this.onclose?.({ code, reason }); }
}

/** Timers that run only when the test advances the clock. */
export class FakeTimers {
  now = 0;
  #next = 1;
  #queue = new Map();

  setTimeout = (fn, ms) => {
    const id = this.#next++;
    this.#queue.set(id, { at: this.now + Math.max(0, ms), fn });
    return id;
  };
  clearTimeout = (id) => { this.#queue.delete(id); };

  /** Delays of the timers pending now, soonest first. */
  pending() { return [...this.#queue.values()].map((t) => t.at - this.now).sort((a, b) => a - b); }

  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.#queue.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#queue.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = end;
  }
}

export class FakeStorage {
  items = new Map();
  getItem(k) { return this.items.has(k) ? this.items.get(k) : null; }
  setItem(k, v) { this.items.set(k, String(v)); }
  removeItem(k) { this.items.delete(k); }
}

/** A message frame as Herald sends it. */
export function msg(channel, seq, data = `m${seq}`) {
  return { type: "message", channel, seq, id: `id-${seq}`, time: 1764000000000 + seq, data };
}

/** A scripted EventSource: the test plays the server's events. */
export class FakeEventSource {
  static instances = [];
  static reset() { FakeEventSource.instances = []; }
  static get last() { return FakeEventSource.instances.at(-1); }

  constructor(url) {
    this.url = url;
    this.closed = false;
    this.listeners = new Map();
    FakeEventSource.instances.push(this);
  }

  get params() { return new URL(this.url).searchParams; }
  addEventListener(type, fn) { this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]); }
  close() { this.closed = true; }

  // What the server does: one event per frame, a message with the id of every position.
  event(frame, id = "") {
    for (const fn of this.listeners.get(frame.type) ?? []) fn({ data: JSON.stringify(frame), lastEventId: id });
  }
  end(code, reason = "") {
    for (const fn of this.listeners.get("close") ?? []) fn({ data: JSON.stringify({ type: "close", code, reason }) });
  }
  lose() { for (const fn of this.listeners.get("error") ?? []) fn({}); }
}
