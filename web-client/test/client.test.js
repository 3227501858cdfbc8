import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";

import { HeraldClient } from "../herald.js";
import { Backoff } from "../lib/backoff.js";
import { parseFrames } from "../lib/frames.js";
import { FakeWebSocket, FakeTimers, FakeStorage, msg } from "./fakes.js";

const URL_ = "ws://herald.test/ws";

function setup({ storage = new FakeStorage(), random = () => 0.5, ...rest } = {}) {
  const timers = new FakeTimers();
  const client = new HeraldClient(URL_, { WebSocket: FakeWebSocket, timers, storage, random, ...rest });
  return { client, timers, storage };
}

/** Subscribes and records everything the subscription reports. */
function record(client, channel) {
  const log = { seqs: [], replayed: [], subscribed: [], gaps: [], errors: [], states: [] };
  const sub = client.subscribe(channel, {
    message: (m, info) => { log.seqs.push(m.seq); if (info.replayed) log.replayed.push(m.seq); },
    subscribed: (s) => log.subscribed.push(s),
    gap: (g) => log.gaps.push(g),
    error: (e) => log.errors.push(e),
    state: (s) => log.states.push(s.to),
  });
  return { sub, log };
}

beforeEach(() => FakeWebSocket.reset());

test("backoff: full jitter stays within [0, min(max, initial * 2^n)] and grows to the cap", () => {
  for (const r of [0, 0.25, 0.999999]) {
    const b = new Backoff({ initial: 500, max: 20000, random: () => r });
    const ceilings = [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000];
    for (const c of ceilings) {
      const d = b.next();
      assert.ok(d >= 0 && d <= c, `delay ${d} outside [0, ${c}]`);
      assert.equal(d, Math.floor(r * c));
    }
  }
  const b = new Backoff({ random: () => 0.999 });
  b.next(); b.next(); b.reset();
  assert.equal(b.ceiling(), 500);
  assert.throws(() => new Backoff({ initial: 0 }), RangeError);
  assert.throws(() => new Backoff({ initial: 1000, max: 10 }), RangeError);
});

test("backoff: delays are spread out, not synchronized across clients", () => {
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const delays = new Set();
  for (let i = 0; i < 100; i++) {
    const b = new Backoff({ random });
    b.next(); b.next(); b.next();
    delays.add(b.next()); // 4th retry: anywhere in [0, 4000)
  }
  assert.ok(delays.size > 90, `only ${delays.size} distinct delays among 100 clients`);
});

test("frames: a batched frame splits on newlines; junk lines are reported, not thrown", () => {
  const { frames, invalid } = parseFrames(`${JSON.stringify(msg("a", 1))}\n${JSON.stringify(msg("a", 2))}\nnot json\n[1]`);
  assert.deepEqual(frames.map((f) => f.seq), [1, 2]);
  assert.deepEqual(invalid, ["not json", "[1]"]);
});

test("connect, subscribe, history then live, in order, with the replayed ones flagged", () => {
  const { client } = setup();
  const states = [];
  client.on("state", (s) => states.push(s.to));
  const { sub, log } = record(client, "news");
  client.connect();
  const ws = FakeWebSocket.last;
  assert.equal(ws.url, URL_);
  assert.equal(ws.sent.length, 0, "nothing is sent before the socket opens");
  ws.open();
  assert.deepEqual(ws.sent, [{ op: "subscribe", channel: "news" }]);
  ws.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 3, replay: 3 }, msg("news", 1), msg("news", 2));
  ws.receive(msg("news", 3), msg("news", 4), msg("news", 5));
  assert.deepEqual(log.seqs, [1, 2, 3, 4, 5]);
  assert.deepEqual(log.replayed, [1, 2, 3]);
  assert.deepEqual(log.subscribed, [{ channel: "news", epoch: "e1", seq: 3, replay: 3 }]);
  assert.deepEqual(states, ["connecting", "connected"]);
  assert.deepEqual(log.states, ["subscribing", "subscribed"]);
  assert.deepEqual(sub.position, { seq: 5, epoch: "e1" });
});

test("handlers receive the message frame's fields as PROTOCOL.md names them", () => {
  const { client } = setup();
  let got;
  client.subscribe("news", { message: (m) => { got = m; } });
  client.connect();
  FakeWebSocket.last.open();
  FakeWebSocket.last.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 0, replay: 0 },
    { type: "message", channel: "news", seq: 1, id: "abc", time: 1764000000123, data: { price: 3 } });
  assert.deepEqual(got, { type: "message", channel: "news", seq: 1, id: "abc", time: 1764000000123, data: { price: 3 } });
});

test("a message with a seq already seen is dropped", () => {
  const { client } = setup();
  const { sub, log } = record(client, "news");
  client.connect();
  const ws = FakeWebSocket.last;
  ws.open();
  ws.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 2, replay: 2 }, msg("news", 1), msg("news", 2));
  ws.receive(msg("news", 2), msg("news", 1), msg("news", 3), msg("news", 3));
  assert.deepEqual(log.seqs, [1, 2, 3]);
  assert.equal(sub.duplicates, 3);
});

test("reconnect resumes each subscription from its last seq and epoch", () => {
  const { client, timers } = setup();
  const a = record(client, "a");
  const b = record(client, "b");
  client.connect();
  let ws = FakeWebSocket.last;
  ws.open();
  ws.receive({ type: "subscribed", channel: "a", epoch: "ea", seq: 2, replay: 2 }, msg("a", 1), msg("a", 2),
    { type: "subscribed", channel: "b", epoch: "eb", seq: 0, replay: 0 });
  ws.drop(1006);
  assert.equal(client.state, "connecting");
  assert.equal(a.sub.state, "subscribing");
  timers.advance(250); // random 0.5 of the first ceiling, 500 ms
  ws = FakeWebSocket.last;
  assert.equal(FakeWebSocket.instances.length, 2);
  ws.open();
  assert.deepEqual(ws.sent, [
    { op: "subscribe", channel: "a", since: 2, epoch: "ea" },
    { op: "subscribe", channel: "b", since: 0, epoch: "eb" },
  ]);
  ws.receive({ type: "subscribed", channel: "a", epoch: "ea", seq: 4, replay: 2, recovered: true, missed: 0 },
    msg("a", 3), msg("a", 4));
  assert.deepEqual(a.log.seqs, [1, 2, 3, 4]);
  assert.deepEqual(a.log.gaps, []);
  assert.equal(a.log.subscribed[1].recovered, true);
});

test("reconnect delays follow the backoff and reset only after the minimum uptime", () => {
  const { client, timers } = setup({ random: () => 0.999, minUptime: 5000 });
  const delays = [];
  client.on("disconnected", (d) => delays.push(d.delay));
  client.connect();
  for (let i = 0; i < 4; i++) {
    FakeWebSocket.last.drop(1006);
    timers.advance(delays.at(-1));
  }
  assert.deepEqual(delays, [499, 999, 1998, 3996]);
  // Up for less than the minimum: the next retry keeps growing.
  FakeWebSocket.last.open();
  timers.advance(4999);
  FakeWebSocket.last.drop(1006);
  assert.equal(delays.at(-1), 7992);
  timers.advance(7992);
  // Up long enough: the count starts over.
  FakeWebSocket.last.open();
  timers.advance(5000);
  FakeWebSocket.last.drop(1006);
  assert.equal(delays.at(-1), 499);
  assert.equal(FakeWebSocket.instances.length, 6);
});

test("4008 resumes at once, with the position; a second 4008 in a row backs off", () => {
  const { client, timers } = setup();
  const { log } = record(client, "news");
  const delays = [];
  client.on("disconnected", (d) => delays.push(d.delay));
  client.connect();
  let ws = FakeWebSocket.last;
  ws.open();
  ws.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 7, replay: 1 }, msg("news", 7));
  ws.drop(4008, "slow consumer");
  assert.equal(delays[0], 0);
  timers.advance(0);
  ws = FakeWebSocket.last;
  assert.equal(FakeWebSocket.instances.length, 2);
  ws.open();
  assert.deepEqual(ws.sent, [{ op: "subscribe", channel: "news", since: 7, epoch: "e1" }]);
  ws.drop(4008, "slow consumer");
  assert.ok(delays[1] > 0, "a client that keeps falling behind must not hammer the server");
  assert.deepEqual(log.seqs, [7]);
});

test("a live seq that jumps resubscribes with since; frames in flight meanwhile are ignored", () => {
  const { client } = setup();
  const { log } = record(client, "news");
  client.connect();
  const ws = FakeWebSocket.last;
  ws.open();
  ws.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 0, replay: 0 }, msg("news", 1), msg("news", 2));
  ws.receive(msg("news", 5), msg("news", 6));
  assert.deepEqual(ws.sent.at(-1), { op: "subscribe", channel: "news", since: 2, epoch: "e1" });
  assert.equal(ws.sent.length, 2, "one resubscribe for one gap");
  ws.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 6, replay: 4, recovered: true, missed: 0 },
    msg("news", 3), msg("news", 4), msg("news", 5), msg("news", 6));
  assert.deepEqual(log.seqs, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(log.gaps, []);
});

test("messages no longer retained are reported as a gap with how many were missed", () => {
  const storage = new FakeStorage();
  storage.setItem("herald:position:news", JSON.stringify({ seq: 5, epoch: "e1" }));
  const { client } = setup({ storage });
  const { log } = record(client, "news");
  client.connect();
  const ws = FakeWebSocket.last;
  ws.open();
  assert.deepEqual(ws.sent, [{ op: "subscribe", channel: "news", since: 5, epoch: "e1" }]);
  ws.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 35, replay: 10, recovered: false, missed: 20 },
    ...Array.from({ length: 10 }, (_, i) => msg("news", 26 + i)));
  assert.deepEqual(log.gaps, [{ channel: "news", reason: "expired", from: 6, to: 25, missed: 20 }]);
  assert.deepEqual(log.seqs, Array.from({ length: 10 }, (_, i) => 26 + i));
});

test("another epoch: the gap says the position is void, and the new sequence is delivered from 1", () => {
  const storage = new FakeStorage();
  storage.setItem("herald:position:news", JSON.stringify({ seq: 50, epoch: "old" }));
  const { client } = setup({ storage });
  const { sub, log } = record(client, "news");
  client.connect();
  FakeWebSocket.last.open();
  FakeWebSocket.last.receive({ type: "subscribed", channel: "news", epoch: "new", seq: 2, replay: 2, recovered: false, missed: null },
    msg("news", 1), msg("news", 2));
  assert.deepEqual(log.gaps, [{ channel: "news", reason: "epoch", from: null, to: null, missed: null }]);
  assert.deepEqual(log.seqs, [1, 2]);
  assert.deepEqual(sub.position, { seq: 2, epoch: "new" });
});

test("the position survives a reload: a new client on the same storage replays only what was missed", () => {
  const storage = new FakeStorage();
  {
    const { client } = setup({ storage });
    record(client, "news");
    client.connect();
    FakeWebSocket.last.open();
    FakeWebSocket.last.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 3, replay: 3 },
      msg("news", 1), msg("news", 2), msg("news", 3));
    // The page goes away without closing anything.
  }
  const { client } = setup({ storage });
  const { log } = record(client, "news");
  client.connect();
  const ws = FakeWebSocket.last;
  ws.open();
  assert.deepEqual(ws.sent, [{ op: "subscribe", channel: "news", since: 3, epoch: "e1" }]);
  ws.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 5, replay: 2, recovered: true, missed: 0 },
    msg("news", 4), msg("news", 5));
  assert.deepEqual(log.seqs, [4, 5]);
  assert.deepEqual(log.replayed, [4, 5]);
});

test('storage "none" keeps nothing across a reload; unsubscribe forgets the position', () => {
  const { client } = setup({ storage: "none" });
  record(client, "news");
  client.connect();
  FakeWebSocket.last.open();
  FakeWebSocket.last.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 1, replay: 1 }, msg("news", 1));
  const again = setup({ storage: "none" });
  record(again.client, "news");
  again.client.connect();
  FakeWebSocket.last.open();
  assert.deepEqual(FakeWebSocket.last.sent, [{ op: "subscribe", channel: "news" }]);

  const storage = new FakeStorage();
  const third = setup({ storage });
  const { sub, log } = record(third.client, "news");
  third.client.connect();
  const ws = FakeWebSocket.last;
  ws.open();
  ws.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 1, replay: 1 }, msg("news", 1));
  assert.ok(storage.getItem("herald:position:news"));
  sub.unsubscribe();
  assert.deepEqual(ws.sent.at(-1), { op: "unsubscribe", channel: "news" });
  assert.equal(storage.getItem("herald:position:news"), null);
  assert.equal(sub.state, "unsubscribed");
  // A message already on its way when the app unsubscribed reaches no handler and stores no
  // position, and the client neither resubscribes nor reports a gap for it.
  const sentBefore = ws.sent.length;
  ws.receive(msg("news", 2));
  assert.deepEqual(log.seqs, [1]);
  assert.deepEqual(log.gaps, []);
  assert.deepEqual(log.errors, []);
  assert.equal(storage.getItem("herald:position:news"), null);
  assert.equal(ws.sent.length, sentBefore);
  assert.equal(sub.state, "unsubscribed");
});

test("close() stops reconnecting; connect() later resumes", () => {
  const { client, timers } = setup();
  record(client, "news");
  client.connect();
  FakeWebSocket.last.open();
  FakeWebSocket.last.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 1, replay: 1 }, msg("news", 1));
  const ws = FakeWebSocket.last;
  client.close();
  assert.equal(ws.closed.code, 1000);
  assert.equal(client.state, "disconnected");
  timers.advance(60000);
  assert.equal(FakeWebSocket.instances.length, 1);
  client.connect();
  FakeWebSocket.last.open();
  assert.deepEqual(FakeWebSocket.last.sent, [{ op: "subscribe", channel: "news", since: 1, epoch: "e1" }]);
});

test("a socket that never opens is abandoned after the connect timeout and retried", () => {
  const { client, timers } = setup({ connectTimeout: 3000 });
  client.connect();
  timers.advance(2999);
  assert.equal(FakeWebSocket.instances.length, 1);
  timers.advance(1);
  assert.ok(FakeWebSocket.instances[0].closed);
  timers.advance(250);
  assert.equal(FakeWebSocket.instances.length, 2);
});

test("a refused token (4001) is final: no reconnect loop", () => {
  const { client, timers } = setup();
  const events = [];
  client.on("disconnected", (d) => events.push(d));
  client.connect();
  FakeWebSocket.last.open();
  FakeWebSocket.last.drop(4001, "token expired");
  timers.advance(60000);
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.equal(client.state, "disconnected");
  assert.deepEqual(events, [{ code: 4001, reason: "token expired", willReconnect: false, delay: null }]);
});

test("error frames reach the client and the subscription they name; bad names are refused locally", () => {
  const { client } = setup();
  const { log } = record(client, "news");
  const errors = [];
  client.on("error", (e) => errors.push(e));
  client.connect();
  FakeWebSocket.last.open();
  FakeWebSocket.last.receive({ type: "error", code: "bad_channel", message: "no", op: "subscribe", channel: "news" });
  FakeWebSocket.last.receiveRaw("garbage");
  assert.equal(log.errors[0].code, "bad_channel");
  assert.deepEqual(errors.map((e) => e.code), ["bad_channel", "bad_frame"]);
  assert.throws(() => client.subscribe("bad name!"), TypeError);
  assert.throws(() => client.subscribe("x".repeat(129)), TypeError);
});

test("a throwing handler does not stop the feed", () => {
  const { client } = setup();
  const seen = [];
  const original = console.error;
  console.error = () => {};
  try {
    client.subscribe("news", { message: () => { throw new Error("app bug"); } });
    client.getSubscription("news").on("message", (m) => seen.push(m.seq));
    client.connect();
    FakeWebSocket.last.open();
    FakeWebSocket.last.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 2, replay: 2 }, msg("news", 1), msg("news", 2));
  } finally {
    console.error = original;
  }
  assert.deepEqual(seen, [1, 2]);
});

test("a token is sent first on every connection; a refreshed one is asked for each time", async () => {
  let n = 0;
  const { client, timers } = setup({ token: async () => `t${++n}` });
  record(client, "news");
  client.connect();
  FakeWebSocket.last.open();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(FakeWebSocket.last.sent, [{ op: "auth", token: "t1" }, { op: "subscribe", channel: "news" }]);
  FakeWebSocket.last.drop(1006);
  timers.advance(250);
  FakeWebSocket.last.open();
  await new Promise((r) => setImmediate(r));
  assert.equal(FakeWebSocket.last.sent[0].token, "t2");
});

test("a token that expires (4002) is replaced at once: reconnect with a fresh token and resume", async () => {
  let n = 0;
  const { client, timers } = setup({ token: async () => `t${++n}` });
  const { log } = record(client, "news");
  const events = [];
  client.on("disconnected", (d) => events.push(d));
  client.connect();
  FakeWebSocket.last.open();
  await new Promise((r) => setImmediate(r));
  FakeWebSocket.last.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 1, replay: 1 }, msg("news", 1));
  FakeWebSocket.last.drop(4002, "token expired");
  assert.deepEqual(events, [{ code: 4002, reason: "token expired", willReconnect: true, delay: 0 }]);
  timers.advance(0);
  assert.equal(FakeWebSocket.instances.length, 2);
  FakeWebSocket.last.open();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(FakeWebSocket.last.sent, [{ op: "auth", token: "t2" }, { op: "subscribe", channel: "news", since: 1, epoch: "e1" }]);
  assert.deepEqual(log.seqs, [1]);
});

test("a token function is asked again before expiry and the fresh token goes on the open connection", async () => {
  let n = 0;
  const start = 1_764_000_000_000;
  const { client, timers } = setup({ token: async () => `t${++n}`, now: () => start + timers.now });
  client.connect();
  FakeWebSocket.last.open();
  await new Promise((r) => setImmediate(r));
  FakeWebSocket.last.receive({ type: "authenticated", sub: "u", exp: start / 1000 + 100 });
  timers.advance(79_999);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(FakeWebSocket.last.sent, [{ op: "auth", token: "t1" }]);
  timers.advance(1);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(FakeWebSocket.last.sent, [{ op: "auth", token: "t1" }, { op: "auth", token: "t2" }]);
  assert.equal(FakeWebSocket.instances.length, 1);
  // A static token cannot be refreshed: nothing is scheduled for it.
  const other = setup({ token: "static" });
  other.client.connect();
  FakeWebSocket.last.open();
  await new Promise((r) => setImmediate(r));
  FakeWebSocket.last.receive({ type: "authenticated", sub: "u", exp: 100 });
  assert.deepEqual(other.timers.pending(), [5000]); // only the uptime timer
});

test("a channel a fresh token no longer covers ends; one the app unsubscribed and resubscribed stays", async () => {
  const { client, timers } = setup();
  const news = record(client, "news");
  const chat = record(client, "chat");
  client.connect();
  FakeWebSocket.last.open();
  FakeWebSocket.last.receive(
    { type: "subscribed", channel: "news", epoch: "e1", seq: 0, replay: 0 },
    { type: "subscribed", channel: "chat", epoch: "e2", seq: 0, replay: 0 });
  news.sub.unsubscribe();
  client.subscribe("news");
  FakeWebSocket.last.receive(
    { type: "authenticated", sub: "u", exp: 2_000_000_000 },
    { type: "error", code: "forbidden", message: "no longer covered", op: "auth", channel: "chat" },
    { type: "unsubscribed", channel: "chat" },
    { type: "unsubscribed", channel: "news" });
  assert.equal(chat.sub.state, "unsubscribed");
  assert.equal(chat.log.errors[0].code, "forbidden");
  assert.equal(client.getSubscription("chat"), null);
  assert.equal(client.getSubscription("news").state, "subscribing");
  FakeWebSocket.last.drop(1006);
  timers.advance(250);
  FakeWebSocket.last.open();
  assert.deepEqual(FakeWebSocket.last.sent, [{ op: "subscribe", channel: "news" }]);
});

const member = (client, user = null) => ({ client, user, node: "n1" });
const change = (type, seq, ...clients) =>
  ({ type, channel: "room", presence_epoch: "p1", presence_seq: seq, members: clients.map((c) => member(c)) });

test("presence: the list, then joins and leaves; a reconnect resumes the list from the changes missed", () => {
  const { client, timers } = setup();
  const events = [];
  const sub = client.subscribe("room", {
    presence: true,
    join: (ms, info) => events.push(["join", ms.map((m) => m.client), info.replayed]),
    leave: (ms, info) => events.push(["leave", ms.map((m) => m.client), info.replayed]),
  });
  client.connect();
  let ws = FakeWebSocket.last;
  ws.open();
  assert.deepEqual(ws.sent, [{ op: "subscribe", channel: "room", presence: true }]);
  ws.receive({ type: "subscribed", channel: "room", epoch: "e1", seq: 0, replay: 0 },
    { type: "presence", channel: "room", client: "a.1", presence_epoch: "p1", presence_seq: 4, replay: 0,
      members: [member("a.1"), member("b.1")] },
    change("join", 5, "b.2", "b.3"), change("leave", 6, "b.1"));
  assert.equal(sub.self, "a.1");
  assert.deepEqual([...sub.members.keys()].sort(), ["a.1", "b.2", "b.3"]);
  ws.receive(change("leave", 6, "b.1")); // a duplicate changes nothing
  assert.deepEqual([...sub.members.keys()].sort(), ["a.1", "b.2", "b.3"]);

  ws.drop(1006);
  timers.advance(250);
  ws = FakeWebSocket.last;
  ws.open();
  assert.deepEqual(ws.sent, [{ op: "subscribe", channel: "room", since: 0, epoch: "e1", presence: true, presence_since: 6, presence_epoch: "p1" }]);
  ws.receive({ type: "presence", channel: "room", client: "a.2", presence_epoch: "p1", presence_seq: 8, replay: 2, recovered: true, missed: 0 },
    change("leave", 7, "a.1", "b.2"), change("join", 8, "a.2"));
  assert.equal(sub.self, "a.2");
  assert.deepEqual([...sub.members.keys()].sort(), ["a.2", "b.3"]);
  assert.deepEqual(events, [["join", ["b.2", "b.3"], false], ["leave", ["b.1"], false],
    ["leave", ["a.1", "b.2"], true], ["join", ["a.2"], true]]);
});

test("presence: a hole in the changes asks again from the last one applied; a new list replaces the old", () => {
  const { client } = setup();
  const lists = [];
  const sub = client.subscribe("room", { presence: true });
  sub.on("members", (p) => lists.push({ clients: [...p.members.keys()], recovered: p.recovered, missed: p.missed }));
  client.connect();
  const ws = FakeWebSocket.last;
  ws.open();
  ws.receive({ type: "subscribed", channel: "room", epoch: "e1", seq: 0, replay: 0 },
    { type: "presence", channel: "room", client: "a.1", presence_epoch: "p1", presence_seq: 2, replay: 0, members: [member("a.1")] });
  ws.receive(change("join", 4, "b.9")); // 3 never came
  assert.deepEqual(ws.sent.at(-1), { op: "subscribe", channel: "room", since: 0, epoch: "e1", presence: true, presence_since: 2, presence_epoch: "p1" });
  assert.deepEqual([...sub.members.keys()], ["a.1"]);
  ws.receive({ type: "subscribed", channel: "room", epoch: "e1", seq: 0, replay: 0, recovered: true, missed: 0 },
    { type: "presence", channel: "room", client: "a.1", presence_epoch: "p1", presence_seq: 9, replay: 0, recovered: false, missed: 3,
      members: [member("a.1"), member("c.1")] });
  assert.deepEqual(lists.at(-1), { clients: ["a.1", "c.1"], recovered: false, missed: 3 });
  ws.receive(change("leave", 10, "c.1"));
  assert.deepEqual([...sub.members.keys()], ["a.1"]);
});

test("the server API's 4003 stops the client; 4005 reconnects after the backoff", () => {
  const { client, timers } = setup();
  const events = [];
  client.on("disconnected", (d) => events.push(d));
  client.connect();
  FakeWebSocket.last.open();
  FakeWebSocket.last.drop(4005, "maintenance");
  assert.deepEqual(events, [{ code: 4005, reason: "maintenance", willReconnect: true, delay: 250 }]);
  timers.advance(250);
  assert.equal(FakeWebSocket.instances.length, 2);
  FakeWebSocket.last.open();
  FakeWebSocket.last.drop(4003, "disconnected by the server");
  timers.advance(60000);
  assert.equal(FakeWebSocket.instances.length, 2);
  assert.equal(client.state, "disconnected");
  assert.deepEqual(events.at(-1), { code: 4003, reason: "disconnected by the server", willReconnect: false, delay: null });
});

test("a server-side subscription is announced, delivers to its handlers, and ends with the connection", () => {
  const { client, timers } = setup();
  const seen = [];
  const ended = [];
  client.on("serverSubscribed", ({ channel, subscription }) => {
    assert.equal(subscription.server, true);
    subscription.on("message", (m) => seen.push([channel, m.seq, m.data]));
  });
  client.on("serverUnsubscribed", (e) => ended.push(e));
  client.connect();
  FakeWebSocket.last.open();
  FakeWebSocket.last.receive({ type: "subscribed", channel: "vip:1", epoch: "e1", seq: 2, replay: 2 }, msg("vip:1", 1), msg("vip:1", 2));
  FakeWebSocket.last.receive(msg("vip:1", 3), msg("vip:1", 3));
  assert.deepEqual(seen.map((s) => s[1]), [1, 2, 3]);
  // The server ends it: announced, and nothing is resubscribed on the next connection.
  FakeWebSocket.last.receive({ type: "unsubscribed", channel: "vip:1", reason: "server" });
  assert.deepEqual(ended, [{ channel: "vip:1", reason: "server" }]);
  FakeWebSocket.last.receive({ type: "subscribed", channel: "vip:2", epoch: "e1", seq: 0, replay: 0 });
  FakeWebSocket.last.drop(1006);
  assert.deepEqual(ended.at(-1), { channel: "vip:2", reason: "disconnected" });
  timers.advance(250);
  FakeWebSocket.last.open();
  assert.deepEqual(FakeWebSocket.last.sent, []);
});

test("unsubscribed by the server API ends an app subscription for good", () => {
  const { client, timers } = setup();
  const { sub, log } = record(client, "news");
  client.connect();
  FakeWebSocket.last.open();
  FakeWebSocket.last.receive({ type: "subscribed", channel: "news", epoch: "e1", seq: 0, replay: 0 });
  FakeWebSocket.last.receive({ type: "unsubscribed", channel: "news", reason: "server" });
  assert.equal(sub.state, "unsubscribed");
  assert.equal(log.states.at(-1), "unsubscribed");
  FakeWebSocket.last.drop(1006);
  timers.advance(250);
  FakeWebSocket.last.open();
  assert.deepEqual(FakeWebSocket.last.sent, []);
});

function jwt(payload) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256" })}.${b64(payload)}.sig`;
}

test("subscription tokens: fetched for the subscribe, refreshed before expiry, replaced after token_expired", async () => {
  const start = 1_764_000_000_000;
  const asked = [];
  let n = 0;
  const { client, timers } = setup({ now: () => start + timers.now });
  const { log } = record(client, "private:1");
  client.subscribe("private:1", {
    getToken: async (channel) => { asked.push(channel); n += 1; return jwt({ sub: "u", exp: start / 1000 + 100, n }); },
  });
  client.connect();
  FakeWebSocket.last.open();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(FakeWebSocket.last.sent, [{ op: "subscribe", channel: "private:1", token: jwt({ sub: "u", exp: start / 1000 + 100, n: 1 }) }]);
  FakeWebSocket.last.receive({ type: "subscribed", channel: "private:1", epoch: "e1", seq: 1, replay: 1 }, msg("private:1", 1));
  // At 80 % of its life a fresh one goes out as a refresh op on the open connection.
  timers.advance(80_000);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(FakeWebSocket.last.sent.at(-1), { op: "refresh", channel: "private:1", token: jwt({ sub: "u", exp: start / 1000 + 100, n: 2 }) });
  // The server ended it anyway: subscribe again with a fresh token, from the position held.
  FakeWebSocket.last.receive({ type: "unsubscribed", channel: "private:1", reason: "token_expired" });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(FakeWebSocket.last.sent.at(-1),
                   { op: "subscribe", channel: "private:1", since: 1, epoch: "e1", token: jwt({ sub: "u", exp: start / 1000 + 100, n: 3 }) });
  assert.deepEqual(asked, ["private:1", "private:1", "private:1"]);
  assert.deepEqual(log.seqs, [1]);
});
