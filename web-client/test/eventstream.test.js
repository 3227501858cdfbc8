import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";

import { HeraldClient, parseEventID } from "../herald.js";
import { eventStreamURL } from "../lib/eventstream.js";
import { FakeWebSocket, FakeEventSource, FakeTimers, FakeStorage, msg } from "./fakes.js";

function setup(options = {}) {
  const timers = new FakeTimers();
  const client = new HeraldClient("ws://herald.test/ws", {
    WebSocket: FakeWebSocket, EventSource: FakeEventSource, timers, storage: new FakeStorage(), random: () => 0,
    transports: ["websocket", "sse"], ...options,
  });
  return { client, timers };
}

const subscribed = (channel, epoch, seq, extra = {}) => ({ type: "subscribed", channel, epoch, seq, replay: 0, ...extra });

beforeEach(() => { FakeWebSocket.reset(); FakeEventSource.reset(); });

test("sse: ids and stream URLs", () => {
  assert.deepEqual([...parseEventID("room:1:44@e1,a@b:7@f2,bad,x:y@z,c:3@")],
                   [["room:1", { seq: 44, epoch: "e1" }], ["a@b", { seq: 7, epoch: "f2" }]]);
  assert.equal(eventStreamURL("wss://h.example/ws"), "https://h.example/sse");
  assert.equal(eventStreamURL("ws://h:8080/herald/ws?x=1"), "http://h:8080/herald/sse");
  assert.throws(() => new HeraldClient("ws://h/ws", { transports: ["carrier-pigeon"], WebSocket: FakeWebSocket }), /transports/);
});

test("sse: a WebSocket that cannot open falls back to a stream, which then carries the same API", () => {
  const { client, timers } = setup();
  const seqs = [];
  const sub = client.subscribe("a", { message: (m) => seqs.push(m.seq) });
  client.connect();
  FakeWebSocket.last.drop(1006);                       // the proxy refused the upgrade
  assert.equal(FakeEventSource.instances.length, 0);
  timers.advance(0);                                   // backoff (random 0), then the stream
  timers.advance(0);
  const es = FakeEventSource.last;
  assert.ok(es, "no stream opened");
  assert.equal(client.transport, "sse");
  assert.equal(client.state, "connected");
  assert.equal(es.url, "http://herald.test/sse?channel=a");
  es.event(subscribed("a", "e1", 2, { replay: 2 }));
  es.event(msg("a", 1), "a:1@e1");
  es.event(msg("a", 2), "a:2@e1");
  assert.deepEqual(seqs, [1, 2]);
  assert.deepEqual(sub.position, { seq: 2, epoch: "e1" });
});

test("sse: a new subscription reopens the stream with every channel at its newest position", () => {
  const { client, timers } = setup({ transports: ["sse"] });
  client.subscribe("a");
  client.connect();
  timers.advance(0); timers.advance(0);
  const first = FakeEventSource.last;
  first.event(subscribed("a", "e1", 0));
  first.event(msg("a", 1), "a:1@e1");
  client.subscribe("b");
  timers.advance(0);
  assert.ok(first.closed, "the old stream is closed");
  const second = FakeEventSource.last;
  assert.notEqual(second, first);
  assert.deepEqual(second.params.getAll("channel"), ["a", "b"]);
  assert.equal(second.params.get("last_event_id"), "a:1@e1");
  second.event(subscribed("a", "e1", 1, { recovered: true, missed: 0 }));
  second.event(subscribed("b", "e2", 0));
  second.event(msg("b", 1), "a:1@e1,b:1@e2");
  client.getSubscription("a").unsubscribe();
  timers.advance(0);
  assert.deepEqual(FakeEventSource.last.params.getAll("channel"), ["b"]);
  assert.equal(FakeEventSource.last.params.get("last_event_id"), "b:1@e2");
});

test("sse: a stream the server ends (4002) reconnects at once with a fresh token and every position", async () => {
  let n = 0;
  const { client, timers } = setup({ transports: ["sse"], token: () => `tok${++n}` });
  client.subscribe("a");
  client.connect();
  timers.advance(0);
  await Promise.resolve(); await Promise.resolve();
  timers.advance(0);
  const first = FakeEventSource.last;
  assert.equal(first.params.get("token"), "tok1");
  first.event(subscribed("a", "e1", 0));
  first.event(msg("a", 1), "a:1@e1");
  first.end(4002, "token expired");
  assert.ok(first.closed);
  timers.advance(0);                                    // immediate reconnect
  await Promise.resolve(); await Promise.resolve();
  timers.advance(0);
  const second = FakeEventSource.last;
  assert.notEqual(second, first);
  assert.equal(second.params.get("token"), "tok2");
  assert.equal(second.params.get("last_event_id"), "a:1@e1");
});

test("sse: a lost stream is a close the client backs off from, not the browser's own retry", () => {
  const { client, timers } = setup({ transports: ["sse"] });
  const events = [];
  client.on("disconnected", (d) => events.push(d.code));
  client.subscribe("a");
  client.connect();
  timers.advance(0); timers.advance(0);
  const es = FakeEventSource.last;
  es.event(subscribed("a", "e1", 0));
  es.event({ type: "error", code: "forbidden", channel: "a", message: "m" });
  es.lose();
  assert.ok(es.closed);
  assert.deepEqual(events, [1006]);
  assert.equal(client.state, "connecting");
});
