// Types of Herald's browser (and Node) client, written by hand beside herald.js and checked by
// `tsc --noEmit` over web-client/examples/typed.ts in the tests. See web-client/README.md.

/** A channel's place in its stream: the last seq received, in an epoch. */
export interface Position {
  seq: number;
  epoch: string;
}

/** A `message` frame (PROTOCOL.md, "What the server sends"). */
export interface Message<T = unknown> {
  type: "message";
  channel: string;
  seq: number;
  id: string;
  /** When the sequencer stored it, ms since the Unix epoch. */
  time: number;
  data: T;
  /** "base64" when `data` is a binary body. */
  encoding?: "base64";
}

/** A presence member (PROTOCOL.md, "Presence"). */
export interface Member {
  client: string;
  user: string | null;
  node: string;
  info?: Record<string, unknown>;
}

/** An `error` frame, or a client-side problem (`connect_failed`, `bad_frame`, `token_failed`). */
export interface HeraldError {
  type?: "error";
  code: string;
  message: string;
  op?: string;
  channel?: string;
}

export interface SubscribedInfo {
  channel: string;
  epoch: string;
  seq: number;
  replay: number;
  recovered?: boolean;
  missed?: number | null;
}

/** Messages that were lost: `from`..`to` (null when the epoch changed and they are unknown). */
export interface Gap {
  channel: string;
  reason: "expired" | "epoch";
  from: number | null;
  to: number | null;
  missed: number | null;
}

export type ClientState = "disconnected" | "connecting" | "connected";
export type SubscriptionState = "unsubscribed" | "subscribing" | "subscribed";
export type Transport = "websocket" | "sse";

export interface StateChange<S> {
  from: S;
  to: S;
}

export interface Disconnected {
  code: CloseCode;
  reason: string;
  willReconnect: boolean;
  delay: number | null;
}

export interface TimersLike {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface ClientOptions {
  backoff?: { initial?: number; max?: number; factor?: number };
  minUptime?: number;
  connectTimeout?: number;
  storage?: "session" | "local" | "none" | StorageLike;
  storageNamespace?: string;
  /** A token, or a function returning one (or a promise of one), called before every connect. */
  token?: string | (() => string | null | Promise<string | null>);
  /**
   * A subscription token for a channel (PROTOCOL.md, "Subscription tokens"), asked before each
   * subscribe, again before it expires (sent as a refresh) and after the server ends the
   * subscription with reason "token_expired". A subscribe's own `getToken` wins.
   */
  getSubscriptionToken?: (channel: string) => string | null | Promise<string | null>;
  transports?: Transport[];
  sseURL?: string;
  WebSocket?: unknown;
  EventSource?: unknown;
  timers?: TimersLike;
  random?: () => number;
  now?: () => number;
}

/**
 * Close codes the server sends: 4001 token refused, 4002 token expired, 4003 disconnected by the
 * server (do not reconnect), 4004 token key not known yet (retry), 4005 disconnected by the
 * server (reconnect), 4008 resume. The client stops after 4001 and 4003 only.
 */
export type CloseCode = 4001 | 4002 | 4003 | 4004 | 4005 | 4008 | number;

interface ClientEvents {
  state: StateChange<ClientState>;
  connecting: Record<string, never>;
  connected: Record<string, never>;
  disconnected: Disconnected;
  error: HeraldError;
  /** The server subscribed this connection to a channel (the server API): attach handlers here. */
  serverSubscribed: { channel: string; subscription: Subscription };
  /** A server-made subscription ended: by the server API ("server") or with the connection ("disconnected"). */
  serverUnsubscribed: { channel: string; reason: string };
}

interface SubscriptionEvents {
  message: [message: Message, info: { replayed: boolean }];
  subscribed: [info: SubscribedInfo];
  gap: [gap: Gap];
  error: [error: HeraldError];
  state: [change: StateChange<SubscriptionState>];
  members: [info: { channel: string; members: Map<string, Member>; recovered?: boolean; missed?: number | null }];
  join: [members: Member[], info: { replayed: boolean; frame: unknown }];
  leave: [members: Member[], info: { replayed: boolean; frame: unknown }];
}

/** Handlers given to `subscribe`, and `presence: true` to follow the member list. */
export type SubscribeHandlers = {
  [E in keyof SubscriptionEvents]?: (...args: SubscriptionEvents[E]) => void;
} & { presence?: boolean; getToken?: (channel: string) => string | null | Promise<string | null> };

export declare class Subscription {
  readonly channel: string;
  readonly state: SubscriptionState;
  /** The last message received (kept across reloads by the client's storage). */
  readonly position: Position | null;
  readonly presence: boolean;
  /** With presence: every member, by client id. */
  readonly members: Map<string, Member>;
  /** With presence: this connection's own client id. */
  readonly self: string | null;
  readonly presencePosition: Position | null;
  /** Messages received twice and dropped (a redelivery after a reconnect). */
  readonly duplicates: number;
  /** Made by the server (the server API) for this connection, not by `subscribe`. */
  readonly server: boolean;
  unsubscribe(): void;
  /** Adds a listener; returns a function that removes it. */
  on<E extends keyof SubscriptionEvents>(event: E, listener: (...args: SubscriptionEvents[E]) => void): () => void;
  once<E extends keyof SubscriptionEvents>(event: E, listener: (...args: SubscriptionEvents[E]) => void): () => void;
  off<E extends keyof SubscriptionEvents>(event: E, listener: (...args: SubscriptionEvents[E]) => void): void;
}

export declare class HeraldClient {
  /** ws://host:port/ws, wss://…, or a path such as "/ws" on the page's own host. */
  constructor(url?: string, options?: ClientOptions);
  readonly url: string;
  readonly sseURL: string;
  readonly state: ClientState;
  /** The transport of the current (or last) connection. */
  readonly transport: Transport;
  /** Reconnect attempts since the last stable connection. */
  readonly attempts: number;
  connect(): this;
  close(): void;
  subscribe(channel: string, handlers?: SubscribeHandlers): Subscription;
  getSubscription(channel: string): Subscription | null;
  /**
   * Publishes through the server (the channel's namespace must allow client publish). Resolves
   * once RabbitMQ has it; rejects with a HeraldRequestError. Sent again once, with the same id,
   * if the connection drops before the answer (stored once).
   */
  publish(channel: string, data: unknown, options?: PublishOptions): Promise<Published>;
  /** Calls a method an AMQP worker answers; resolves with its result, rejects with a HeraldRequestError. */
  rpc<T = unknown>(method: string, data?: unknown, options?: RPCOptions): Promise<T>;
  /** Adds a listener; returns a function that removes it. */
  on<E extends keyof ClientEvents>(event: E, listener: (event: ClientEvents[E]) => void): () => void;
  once<E extends keyof ClientEvents>(event: E, listener: (event: ClientEvents[E]) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, listener: (event: ClientEvents[E]) => void): void;
}

export interface PublishOptions {
  /** The publish's id (default: 128 random bits); the same id is stored once. */
  id?: string;
  /** ms to wait for the answer (default 15000). */
  timeout?: number;
}

export interface Published {
  id: string;
  channel: string;
  /** The AMQP message_id, and the `id` of the delivered message frame. */
  messageId: string;
}

export interface RPCOptions {
  /** ms the server waits for a worker (never more than its --rpc-timeout). */
  timeout?: number;
  /** Send the call once more if the connection drops before its answer (only for idempotent methods). */
  retry?: boolean;
  /** The call's id (default: 128 random bits). */
  id?: string;
}

/** Why a publish or call failed: the server's code, or one of the client's own. */
export type RequestErrorCode =
  | "forbidden" | "too_large" | "rate_limited" | "unavailable" | "bad_request" | "bad_channel"
  | "no_route" | "timeout" | "worker_error"
  | "disconnected" | "unsupported" | "closed" | "duplicate_id";

export declare class HeraldRequestError extends Error {
  readonly code: RequestErrorCode;
  /** The server's error frame, when the server answered. */
  readonly frame: { type: string; [field: string]: unknown } | null;
}

/** Channel names Herald accepts: 1 to 128 of A-Z a-z 0-9 _ . : @ - */
export declare const CHANNEL_PATTERN: RegExp;
/** Splits one WebSocket text frame into server frames. */
export declare function parseFrames(text: string): { frames: Array<{ type: string; [field: string]: unknown }>; invalid: string[] };
/** The positions in an SSE event id (`channel:seq@epoch`, comma-separated). */
export declare function parseEventID(id: string): Map<string, Position>;

/** Reconnect delays with full jitter. */
export declare class Backoff {
  constructor(options?: { initial?: number; max?: number; factor?: number; random?: () => number });
  ceiling(): number;
  next(): number;
  reset(): void;
}

/** Where positions are kept across reloads. */
export declare class PositionStore {
  constructor(storage?: "session" | "local" | "none" | StorageLike, namespace?: string);
  load(channel: string): Position | null;
  save(channel: string, position: Position): void;
  forget(channel: string): void;
}

/** The /sse stream behind the WebSocket interface the client uses (the "sse" transport). */
export declare class EventStreamSocket {
  constructor(url: string, options: { EventSource: unknown; timers: TimersLike });
  onopen: ((event: object) => void) | null;
  onmessage: ((event: { data: string }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: object) => void) | null;
  send(text: string): void;
  close(): void;
}
