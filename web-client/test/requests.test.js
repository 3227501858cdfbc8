import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";

import { HeraldClient, HeraldRequestError } from "../herald.js";
import { FakeWebSocket, FakeTimers, FakeStorage } from "./fakes.js";

function setup(options = {}) {
  const timers = new FakeTimers();
  const client = new HeraldClient("ws://herald.test/ws", { WebSocket: FakeWebSocket, timers, storage: new FakeStorage(), random: () => 0, ...options });
  return { client, timers };
}

/** Settles a promise into {value} or {error} so a test can look at it after the fact. */
function settle(promise) {
  const out = { done: false };
  promise.then((value) => Object.assign(out, { done: true, value }), (error) => Object.assign(out, { done: true, error }));
  return out;
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

beforeEach(() => FakeWebSocket.reset());

test("publish: sent once connected, resolved by its published frame", async () => {
  const { client } = setup();
  const p = settle(client.publish("chat:1", { text: "hi" }, { id: "m1" }));
  client.connect();
  const ws = FakeWebSocket.last;
  assert.deepEqual(ws.sent, [], "nothing before the socket opens");
  ws.open();
  await flush();
  assert.deepEqual(ws.sent, [{ op: "publish", channel: "chat:1", data: { text: "hi" }, id: "m1" }]);
  ws.receive({ type: "published", id: "m1", channel: "chat:1", message_id: "client:ann:m1" });
  await flush();
  assert.deepEqual(p.value, { id: "m1", channel: "chat:1", messageId: "client:ann:m1" });
});

test("publish: an error frame for its id rejects it with the server's code, and is not an error event", async () => {
  const { client } = setup();
  const errors = [];
  client.on("error", (e) => errors.push(e));
  client.connect();
  FakeWebSocket.last.open();
  const p = settle(client.publish("chat:1", 1, { id: "m2" }));
  FakeWebSocket.last.receive({ type: "error", code: "forbidden", message: "only subscribers", op: "publish", channel: "chat:1", id: "m2" });
  await flush();
  assert.ok(p.error instanceof HeraldRequestError);
  assert.equal(p.error.code, "forbidden");
  assert.equal(p.error.message, "only subscribers");
  assert.deepEqual(errors, []);
});

test("publish: sent again once with the same id after a drop, then rejected after a second drop", async () => {
  const { client, timers } = setup();
  client.connect();
  FakeWebSocket.last.open();
  const p = settle(client.publish("chat:1", "x"));
  const first = FakeWebSocket.last.sent[0];
  assert.match(first.id, /^[0-9a-f]{32}$/);
  FakeWebSocket.last.drop(1006);
  timers.advance(1000);
  FakeWebSocket.last.open();
  await flush();
  assert.deepEqual(FakeWebSocket.last.sent.filter((f) => f.op === "publish"), [first], "the same op, same id");
  FakeWebSocket.last.drop(1006);
  await flush();
  assert.equal(p.error?.code, "disconnected");
});

test("rpc: resolves with the worker's data, rejects with rpc_error's code, and is not retried unless asked", async () => {
  const { client, timers } = setup();
  client.connect();
  FakeWebSocket.last.open();
  const ok = settle(client.rpc("cart.add", { sku: "a" }, { id: "r1", timeout: 2000 }));
  const bad = settle(client.rpc("cart.add", {}, { id: "r2" }));
  const once = settle(client.rpc("cart.get", null, { id: "r3" }));
  const again = settle(client.rpc("cart.get", null, { id: "r4", retry: true }));
  assert.deepEqual(FakeWebSocket.last.sent[0], { op: "rpc", id: "r1", method: "cart.add", data: { sku: "a" }, timeout: 2000 });
  FakeWebSocket.last.receive({ type: "rpc_result", id: "r1", data: { total: 3 } },
    { type: "rpc_error", id: "r2", code: "no_route", message: "no worker serves cart.add" });
  await flush();
  assert.deepEqual(ok.value, { total: 3 });
  assert.equal(bad.error.code, "no_route");
  FakeWebSocket.last.drop(1006);
  timers.advance(1000);
  FakeWebSocket.last.open();
  await flush();
  assert.equal(once.error?.code, "disconnected");
  assert.deepEqual(FakeWebSocket.last.sent.filter((f) => f.op === "rpc").map((f) => f.id), ["r4"]);
  FakeWebSocket.last.receive({ type: "rpc_result", id: "r4", data: 1 });
  await flush();
  assert.equal(again.value, 1);
});

test("rpc: the client's own wait ends a call the server never answers; SSE and close() reject", async () => {
  const { client, timers } = setup();
  client.connect();
  FakeWebSocket.last.open();
  const lost = settle(client.rpc("cart.add", {}, { timeout: 1000 }));
  timers.advance(5999);
  await flush();
  assert.equal(lost.done, false);
  timers.advance(1);
  await flush();
  assert.equal(lost.error.code, "timeout");
  const pending = settle(client.publish("chat:1", 1));
  client.close();
  await flush();
  assert.equal(pending.error.code, "closed");

  const sse = new HeraldClient("ws://herald.test/ws", { transports: ["sse"], EventSource: class {}, timers: new FakeTimers(), storage: new FakeStorage() });
  const refused = settle(sse.rpc("cart.add", {}));
  await flush();
  assert.equal(refused.error.code, "unsupported");
});
