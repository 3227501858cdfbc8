// HeraldClient: one WebSocket to Herald, any number of channel subscriptions, and the
// reconnect/resume loop that keeps every feed gap-free across network drops, server restarts
// and page reloads.
//
// States: "disconnected" -> "connecting" -> "connected"; back to "connecting" while it retries.
// Events: "state" ({from, to}), "connecting", "connected", "disconnected" ({code, reason,
// willReconnect, delay}), "error" (error frames and protocol problems).

import { Emitter } from "./emitter.js";
import { Backoff } from "./backoff.js";
import { PositionStore } from "./positions.js";
import { Subscription } from "./subscription.js";
import { checkChannel, parseFrames, subscribeOp, unsubscribeOp } from "./frames.js";
import { EventStreamSocket, eventStreamURL } from "./eventstream.js";
import { refreshDelay, tokenExp } from "./tokens.js";
import { Requests } from "./requests.js";

const TRANSPORTS = new Set(["websocket", "sse"]);

/**
 * Close codes after which retrying cannot help: 4001 (token refused), 4003 (disconnected by the
 * server, which asks the client not to come back). 4005 (disconnected by the server, may come
 * back) and 4004 (token key not known yet) reconnect after the backoff.
 */
const TERMINAL_CLOSE_CODES = new Set([4001, 4003]);
/** The server asks the client to resume with `since` (it fell behind, or a gap). */
const RESUME_NOW = 4008;
/** The connection's token expired: reconnect at once with a fresh one and resume. */
const TOKEN_EXPIRED = 4002;
/** A fresh token is fetched and sent when this share of the current one's lifetime has passed. */
const REFRESH_AT = 0.8;

function defaultURL() {
  const loc = globalThis.location;
  if (!loc) throw new TypeError("HeraldClient needs a URL outside a browser");
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

function absoluteURL(url) {
  if (url === undefined || url === null || url === "") return defaultURL();
  if (/^wss?:\/\//i.test(url)) return url;
  const loc = globalThis.location;
  if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, "ws");
  if (loc && url.startsWith("/")) return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}${url}`;
  throw new TypeError(`HeraldClient: cannot use URL ${JSON.stringify(url)}; give ws://host:port/ws`);
}

export class HeraldClient extends Emitter {
  #WebSocket;
  #timers;
  #backoff;
  #positions;
  #minUptime;
  #connectTimeout;
  #ws = null;
  #wanted = false; // connect() was called and close() was not
  #pending = { connect: null, uptime: null, retry: null, refresh: null }; // timer ids
  #fastResumeUsed = false; // one immediate resume after 4008 per stable connection
  #subs = new Map();
  #revoked = new Set(); // channels a fresh token no longer covers, until the server's unsubscribed
  #serverSubs = new Map(); // subscriptions the server made for this connection (server API)
  #subscriptionToken; // options.getSubscriptionToken
  #token;
  #now;
  #EventSource;
  #transports;
  #transport = 0; // index in #transports of the one tried next
  #opened = false; // the current connection opened
  #requests; // publishes and calls waiting for their answer

  /**
   * @param url ws://host:port/ws, or a path such as "/ws" on the page's own host (the default).
   * @param options.WebSocket     the WebSocket constructor (default: the global one)
   * @param options.timers        {setTimeout, clearTimeout} (default: the global ones)
   * @param options.storage       "session" (default), "local", "none", or a Storage-like object
   * @param options.storageNamespace  key prefix for stored positions (default "herald")
   * @param options.backoff       {initial: 500, max: 20000, factor: 2} in milliseconds
   * @param options.random        the jitter source (default Math.random)
   * @param options.minUptime     ms a connection must stay up before the retry count resets (5000)
   * @param options.connectTimeout  ms to wait for the WebSocket to open before retrying (10000)
   * @param options.token         a connection token (string), or a function returning one (or a
   *                              promise of one), called before every connect so it can be refreshed.
   *                              A function is also called before the token expires (at 80% of its
   *                              lifetime), and its answer sent on the open connection.
   * @param options.getSubscriptionToken  (channel) => token (or a promise of one): a subscription
   *                              token for every subscribe (a subscribe's own `getToken` wins),
   *                              asked again before it expires and after the server ends a
   *                              subscription with reason "token_expired"
   * @param options.now           the clock, ms since the Unix epoch (default Date.now)
   * @param options.transports    the transports to try, in order: ["websocket"] (default), or
   *                              ["websocket", "sse"] to fall back to Server-Sent Events when a
   *                              WebSocket cannot open (a proxy that strips the upgrade)
   * @param options.sseURL        the stream URL (default: the WebSocket URL's host, http(s), /sse)
   * @param options.EventSource   the EventSource constructor (default: the global one)
   */
  constructor(url, options = {}) {
    super();
    this.url = absoluteURL(url);
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#timers = {
      setTimeout: options.timers?.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms)),
      clearTimeout: options.timers?.clearTimeout ?? ((id) => globalThis.clearTimeout(id)),
    };
    this.#backoff = new Backoff({ ...options.backoff, random: options.random ?? Math.random });
    this.#positions = new PositionStore(options.storage, options.storageNamespace);
    this.#minUptime = options.minUptime ?? 5000;
    this.#connectTimeout = options.connectTimeout ?? 10000;
    this.#token = options.token ?? null;
    this.#subscriptionToken = options.getSubscriptionToken ?? null;
    this.#now = options.now ?? (() => Date.now());
    this.#transports = options.transports ?? ["websocket"];
    if (!Array.isArray(this.#transports) || this.#transports.length === 0 || !this.#transports.every((t) => TRANSPORTS.has(t))) {
      throw new TypeError('HeraldClient: transports must list "websocket" and/or "sse"');
    }
    if (this.#transports.includes("websocket") && typeof this.#WebSocket !== "function") {
      throw new TypeError("HeraldClient: no WebSocket constructor");
    }
    this.#EventSource = options.EventSource ?? globalThis.EventSource;
    if (this.#transports.includes("sse") && typeof this.#EventSource !== "function") {
      throw new TypeError("HeraldClient: no EventSource constructor for the sse transport");
    }
    this.sseURL = options.sseURL ?? eventStreamURL(this.url);
    this.state = "disconnected";
    /** The transport of the current (or last) connection: "websocket" or "sse". */
    this.transport = this.#transports[0];
    /** Reconnect attempts since the last stable connection. */
    this.attempts = 0;
    this.#requests = new Requests({
      send: (text) => this.#send(text),
      canSend: () => this.state === "connected",
      transport: () => this.transport,
    }, this.#timers);
  }

  /**
   * Publishes `data` to `channel` through the server (its namespace must allow client publish).
   * Resolves with {id, channel, messageId} once RabbitMQ has it; rejects with a
   * HeraldRequestError whose `code` is the server's ("forbidden", "too_large", "rate_limited",
   * "unavailable", ...) or "timeout", "disconnected", "unsupported" (SSE), "closed". Sent again
   * once, with the same id, if the connection drops first: the server stores it once.
   * @param options.id       the publish's id (default: a random one)
   * @param options.timeout  ms to wait for the answer (default 15000)
   */
  publish(channel, data, options = {}) {
    checkChannel(channel);
    return this.#requests.publish(channel, data, options);
  }

  /**
   * Calls `method` on the application's workers. Resolves with the worker's result; rejects with
   * a HeraldRequestError: "no_route", "timeout", "forbidden", "worker_error", "unavailable",
   * "rate_limited", "too_large", or "disconnected" (not sent again unless `retry: true`).
   * @param options.timeout  ms the server waits for a worker (at most its --rpc-timeout)
   * @param options.retry    send it once more if the connection drops before the answer
   */
  rpc(method, data, options = {}) {
    return this.#requests.rpc(method, data, options);
  }

  /** Opens the connection and keeps it open until close(). */
  connect() {
    this.#wanted = true;
    if (this.state === "disconnected") this.#open();
    return this;
  }

  /** Closes the connection for good; subscriptions are kept and resume on the next connect(). */
  close() {
    this.#wanted = false;
    this.#clearTimers();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      this.#detach(ws);
      try { ws.close(1000, "client closed"); } catch { /* already closed */ }
    }
    for (const sub of this.#subs.values()) sub._setState("subscribing");
    this.#requests.rejectAll("closed", "the client was closed");
    this.#setState("disconnected");
    this.emit("disconnected", { code: 1000, reason: "client closed", willReconnect: false, delay: null });
  }

  /**
   * Subscribes to a channel, resuming from the stored position when there is one.
   * @param handlers optional {message, subscribed, gap, error, state, subscribing, unsubscribed};
   *   with `presence: true` also the member list (`sub.members`) and {members, join, leave};
   *   `getToken: (channel) => token` for a channel that needs a subscription token.
   */
  subscribe(channel, handlers = {}) {
    checkChannel(channel);
    const { presence = false, getToken = null, ...events } = handlers;
    let sub = this.#subs.get(channel);
    if (!sub) {
      sub = new Subscription(this, channel, this.#positions.load(channel), presence === true);
      this.#subs.set(channel, sub);
    }
    sub.getToken = getToken ?? sub.getToken ?? this.#subscriptionToken;
    for (const [event, fn] of Object.entries(events)) sub.on(event, fn);
    if (sub.state === "unsubscribed") {
      sub._subscribing();
      if (this.state === "connected") this.#sendSubscribe(sub);
    }
    return sub;
  }

  /** Sends the subscribe op, with a fresh subscription token when the subscription has a source. */
  async #sendSubscribe(sub) {
    if (typeof sub.getToken !== "function") {
      this.#send(subscribeOp(sub.channel, sub.position, sub.presence, sub.presencePosition));
      return;
    }
    const ws = this.#ws;
    const token = await this.#subscriptionTokenFor(sub);
    if (!token || this.#ws !== ws || this.state !== "connected" || this.#subs.get(sub.channel) !== sub) return;
    this.#send(subscribeOp(sub.channel, sub.position, sub.presence, sub.presencePosition, token));
    this.#scheduleSubscriptionRefresh(sub, token);
  }

  async #subscriptionTokenFor(sub) {
    try {
      return await sub.getToken(sub.channel);
    } catch (err) {
      const error = { code: "token_failed", channel: sub.channel, message: String(err?.message ?? err) };
      this.emit("error", error);
      sub.emit("error", error);
      return null;
    }
  }

  /** Before a subscription token expires, a fresh one is sent with {"op": "refresh"}. */
  #scheduleSubscriptionRefresh(sub, token) {
    if (sub._refreshTimer != null) this.#timers.clearTimeout(sub._refreshTimer);
    sub._refreshTimer = null;
    const delay = refreshDelay(tokenExp(token), this.#now());
    if (delay === null) return;
    const ws = this.#ws;
    sub._refreshTimer = this.#timers.setTimeout(async () => {
      sub._refreshTimer = null;
      const fresh = await this.#subscriptionTokenFor(sub);
      if (!fresh || this.#ws !== ws || this.#subs.get(sub.channel) !== sub) return;
      this.#send(JSON.stringify({ op: "refresh", channel: sub.channel, token: fresh }));
      this.#scheduleSubscriptionRefresh(sub, fresh);
    }, delay);
  }

  /** The subscription of a channel, if any. */
  getSubscription(channel) {
    return this.#subs.get(channel) ?? null;
  }

  _unsubscribe(sub) {
    this.#end(sub, true);
  }

  /** Ends a subscription for good: it is forgotten, with its stored position. */
  #end(sub, tellServer) {
    if (this.#serverSubs.get(sub.channel) === sub) {
      this.#serverSubs.delete(sub.channel);
      if (tellServer && this.state === "connected") this.#send(unsubscribeOp(sub.channel));
      sub._setState("unsubscribed");
      return;
    }
    if (this.#subs.get(sub.channel) !== sub) return;
    if (sub._refreshTimer != null) this.#timers.clearTimeout(sub._refreshTimer);
    this.#subs.delete(sub.channel);
    this.#positions.forget(sub.channel);
    if (tellServer && this.state === "connected") this.#send(unsubscribeOp(sub.channel));
    sub._setState("unsubscribed");
  }

  #setState(to) {
    if (this.state === to) return;
    const from = this.state;
    this.state = to;
    this.emit("state", { from, to });
    if (to !== "disconnected") this.emit(to, {});
  }

  #open() {
    this.#setState("connecting");
    let ws;
    this.transport = this.#transports[this.#transport];
    this.#opened = false;
    try {
      ws = this.transport === "sse"
        ? new EventStreamSocket(this.sseURL, { EventSource: this.#EventSource, timers: this.#timers })
        : new this.#WebSocket(this.url);
    } catch (err) {
      this.emit("error", { code: "connect_failed", message: String(err?.message ?? err) });
      this.#scheduleReconnect(1006, "could not open", false);
      return;
    }
    this.#ws = ws;
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (event) => this.#onMessage(event.data);
    ws.onclose = (event) => this.#onClose(ws, event.code, event.reason);
    ws.onerror = () => { /* onclose follows with the code */ };
    this.#after("connect", this.#connectTimeout, () => {
      if (this.#ws !== ws) return;
      this.#onClose(ws, 4000, "connect timeout");
      try { ws.close(); } catch { /* never opened */ }
    });
  }

  async #onOpen(ws) {
    if (this.#ws !== ws) return;
    this.#opened = true;
    this.#cancel("connect");
    if (this.#token !== null) {
      // The token goes in the first frame, not the URL, so it stays out of proxy logs.
      const token = await this.#fetchToken();
      if (this.#ws !== ws) return;
      if (token) this.#send(JSON.stringify({ op: "auth", token }));
    }
    this.#setState("connected");
    this.#after("uptime", this.#minUptime, () => {
      this.#backoff.reset();
      this.attempts = 0;
      this.#fastResumeUsed = false;
    });
    for (const sub of this.#subs.values()) {
      sub._subscribing();
      this.#sendSubscribe(sub);
    }
    this.#requests.connected();
  }

  async #fetchToken() {
    try {
      return typeof this.#token === "function" ? await this.#token() : this.#token;
    } catch (err) {
      this.emit("error", { code: "token_failed", message: String(err?.message ?? err) });
      return null;
    }
  }

  /** Before the token expires, a token function is asked for a fresh one, sent on this connection. */
  #scheduleRefresh(exp) {
    const delay = refreshDelay(exp, this.#now(), REFRESH_AT);
    if (typeof this.#token !== "function" || delay === null) return;
    const ws = this.#ws;
    this.#after("refresh", delay, async () => {
      const token = await this.#fetchToken();
      if (token && this.#ws === ws && this.state === "connected") this.#send(JSON.stringify({ op: "auth", token }));
    });
  }

  #onMessage(data) {
    if (typeof data !== "string") {
      this.emit("error", { code: "bad_frame", message: "binary frame from the server" });
      return;
    }
    const { frames, invalid } = parseFrames(data);
    for (const line of invalid) this.emit("error", { code: "bad_frame", message: `unparsable server frame: ${line.slice(0, 200)}` });
    const touched = new Set();
    for (const frame of frames) {
      let sub = typeof frame.channel === "string" ? this.#subs.get(frame.channel) ?? this.#serverSubs.get(frame.channel) : undefined;
      if (!sub && frame.type === "subscribed" && typeof frame.channel === "string") sub = this.#serverSubscribed(frame.channel);
      switch (frame.type) {
        case "message": {
          if (!sub) break;
          const outcome = sub._onMessage(frame);
          if (outcome === "delivered") touched.add(sub);
          else if (outcome === "gap") this.#resubscribe(sub);
          break;
        }
        case "subscribed":
          if (sub) { sub._onSubscribed(frame); touched.add(sub); }
          break;
        case "presence":
          if (sub) sub._onPresence(frame);
          break;
        case "join":
        case "leave":
          // A hole in the presence changes: ask again from the last one applied; the server
          // replays what is missing, or sends the whole list.
          if (sub && sub._onPresenceChange(frame) === "gap") this.#resubscribe(sub);
          break;
        case "published":
        case "rpc_result":
        case "rpc_error":
          this.#requests.answer(frame);
          break;
        case "error":
          // The answer to a publish or call rejects its promise, and is not an event.
          if ((frame.op === "publish" || frame.op === "rpc") && this.#requests.answer(frame)) break;
          if (sub && frame.code === "forbidden" && frame.op === "auth") this.#revoked.add(sub.channel);
          this.emit("error", frame);
          if (sub) sub.emit("error", frame);
          break;
        case "unsubscribed":
          // Asked for by unsubscribe() (already gone from #subs), or ended by the server because
          // a fresh token no longer covers the channel (announced by a forbidden error for op
          // "auth"), or by the server API ("reason": "server"): then the subscription ends here
          // and is not resubscribed on reconnect. A subscription token that ran out is replaced
          // when the subscription has a source of them, and the feed resumes where it was.
          if (!sub) break;
          if (frame.reason === "token_expired" && typeof sub.getToken === "function" && this.#subs.get(sub.channel) === sub) {
            this.#resubscribe(sub);
          } else if (this.#revoked.delete(sub.channel) || frame.reason === "server" || frame.reason === "token_expired") {
            const server = this.#serverSubs.get(sub.channel) === sub;
            this.#end(sub, false);
            if (server) this.emit("serverUnsubscribed", { channel: sub.channel, reason: frame.reason ?? "server" });
          }
          break;
        case "authenticated":
          this.#scheduleRefresh(frame.exp);
          break;
        default:
          // A frame type from a newer server: ignore it (the protocol may only add).
          break;
      }
    }
    // One storage write per WebSocket frame per channel, however many messages it carried.
    for (const sub of touched) if (sub.position) this.#positions.save(sub.channel, sub.position);
  }

  /** A live seq jumped: ask again from our position; the replay fills the hole or reports it. */
  #resubscribe(sub) {
    sub._subscribing();
    this.#sendSubscribe(sub);
  }

  /**
   * The server subscribed this connection to a channel it did not ask for (the server API):
   * a Subscription for it, announced with "serverSubscribed" ({channel, subscription}) so the
   * page can attach handlers before its first messages. It lasts for this connection.
   */
  #serverSubscribed(channel) {
    const sub = new Subscription(this, channel, null, false);
    sub.server = true;
    this.#serverSubs.set(channel, sub);
    sub._subscribing();
    this.emit("serverSubscribed", { channel, subscription: sub });
    return sub;
  }

  #onClose(ws, code, reason) {
    if (this.#ws !== ws) return;
    this.#detach(ws);
    this.#ws = null;
    this.#cancel("connect");
    this.#cancel("uptime");
    this.#cancel("refresh");
    this.#revoked.clear();
    this.#requests.disconnected();
    // Server-made subscriptions belonged to that connection.
    for (const [channel, sub] of this.#serverSubs) {
      this.#serverSubs.delete(channel);
      sub._setState("unsubscribed");
      this.emit("serverUnsubscribed", { channel, reason: "disconnected" });
    }
    // A transport that could not even open (a proxy refusing the upgrade): the next one is
    // tried, and kept while it works.
    if (!this.#opened && this.#transports.length > 1) this.#transport = (this.#transport + 1) % this.#transports.length;
    for (const sub of this.#subs.values()) sub._setState("subscribing");
    if (!this.#wanted) {
      this.#setState("disconnected");
      return;
    }
    if (TERMINAL_CLOSE_CODES.has(code)) {
      this.#wanted = false;
      this.#setState("disconnected");
      this.emit("disconnected", { code, reason, willReconnect: false, delay: null });
      return;
    }
    const immediate = (code === RESUME_NOW || code === TOKEN_EXPIRED) && !this.#fastResumeUsed;
    if (immediate) this.#fastResumeUsed = true;
    this.#scheduleReconnect(code, reason, immediate);
  }

  #scheduleReconnect(code, reason, immediate) {
    const delay = immediate ? 0 : this.#backoff.next();
    this.attempts += 1;
    this.#setState("connecting");
    this.emit("disconnected", { code, reason, willReconnect: true, delay });
    this.#after("retry", delay, () => { if (this.#wanted) this.#open(); });
  }

  #send(text) {
    try {
      this.#ws?.send(text);
    } catch {
      // The socket is closing; onclose resubscribes everything on the next connection.
    }
  }

  #detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  /** Runs `fn` after `ms` under `name`, replacing any timer already pending under that name. */
  #after(name, ms, fn) {
    this.#cancel(name);
    this.#pending[name] = this.#timers.setTimeout(() => {
      this.#pending[name] = null;
      fn();
    }, ms);
  }

  #cancel(name) {
    if (this.#pending[name] !== null) this.#timers.clearTimeout(this.#pending[name]);
    this.#pending[name] = null;
  }

  #clearTimers() {
    for (const name of Object.keys(this.#pending)) this.#cancel(name);
  }
}
