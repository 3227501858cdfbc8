"""Client RPC (PROTOCOL.md, "RPC"): a WebSocket client's call goes to <exchange>.rpc with direct
reply-to and is answered by an AMQP worker (here pika, as an application would run it): results,
worker errors, no_route at once, timeouts with their late answers dropped and counted,
unavailable at once while RabbitMQ is unreachable, and 200 concurrent calls each answered once,
to the caller that made it."""
import json
import threading
import time

import jwt as pyjwt
import pika
import pytest

from conftest import Client, wait_until
from tcpproxy import TCPProxy

SECRET = "client-rpc-secret-0123456789abcd"


def token(sub, **claims):
    return pyjwt.encode({"sub": sub, "exp": int(time.time()) + 600, **claims}, SECRET, algorithm="HS256")


class Worker(threading.Thread):
    """An RPC worker: answers cart.add and admin.* with what it was sent and who sent it, cart.fail
    with the herald-error header, and holds cart.slow until `release` is set (a late answer)."""

    def __init__(self, exchange, bindings=("cart.*", "admin.*")):
        super().__init__(daemon=True)
        self.conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        self.ch = self.conn.channel()
        self.ch.exchange_declare(f"{exchange}.rpc", "topic", durable=True)
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        for b in bindings:
            self.ch.queue_bind(self.queue, f"{exchange}.rpc", routing_key=b)
        self.ch.basic_qos(prefetch_count=500)
        self.release = threading.Event()
        self.held = []
        self.stopped = threading.Event()
        self.calls = []

    def reply(self, props, body, headers=None):
        self.ch.basic_publish("", props.reply_to, json.dumps(body),
                              pika.BasicProperties(correlation_id=props.correlation_id, content_type="application/json", headers=headers))

    def run(self):
        for method, props, body in self.ch.consume(self.queue, inactivity_timeout=0.05):
            if self.stopped.is_set():
                break
            if self.release.is_set():
                for p in self.held:
                    self.reply(p, {"late": True})
                self.held = []
            if method is None:
                continue
            self.calls.append((method.routing_key, props))
            data = json.loads(body)
            if method.routing_key == "cart.fail":
                self.reply(props, {}, headers={"herald-error": "out of stock"})
            elif method.routing_key == "cart.slow":
                self.held.append(props)
            else:
                self.reply(props, {"method": method.routing_key, "data": data, "user": (props.headers or {}).get("herald-user"),
                                   "claims": json.loads(props.headers["herald-claims"]), "expiration": props.expiration})
            self.ch.basic_ack(method.delivery_tag)
        self.conn.close()

    def stop(self):
        self.stopped.set()
        self.join(10)


def call(c, id_, method, data=None, **extra):
    c.send({"op": "rpc", "id": id_, "method": method, **({"data": data} if data is not None else {}), **extra})
    return answer(c, id_)


def answer(c, id_):
    while True:
        f = c.recv(timeout=5)
        if f.get("id") == id_:
            return f


@pytest.fixture
def worker(exchange):
    w = Worker(exchange)
    w.start()
    yield w
    w.stop()


def test_results_worker_errors_no_route_and_forbidden(herald_factory, worker):
    # --rpc-timeout 30: every answer below must come long before it (recv waits 5 s).
    h = herald_factory(extra=["--rpc-methods", "cart.*,nobody.*", "--rpc-timeout", "30", "--token-secret", SECRET,
                              "--anonymous-channels", "*"]).start()
    alice = Client(h.ws_url(f"token={token('alice', rpc=['admin.stats'])}"))
    assert alice.recv()["type"] == "authenticated"
    anon = Client(h.ws_url())

    got = call(alice, "r1", "cart.add", {"sku": "a-1", "qty": 2})
    assert got["type"] == "rpc_result" and got["id"] == "r1"
    assert got["data"]["method"] == "cart.add" and got["data"]["data"] == {"sku": "a-1", "qty": 2} and got["data"]["user"] == "alice"
    assert got["data"]["claims"]["sub"] == "alice" and got["data"]["claims"]["rpc"] == ["admin.stats"]
    assert got["data"]["expiration"] == "30000"

    assert call(alice, "r2", "cart.fail", {}) == {"type": "rpc_error", "id": "r2", "code": "worker_error", "message": "out of stock"}
    no_route = call(alice, "r3", "nobody.home", {})
    assert (no_route["type"], no_route["code"]) == ("rpc_error", "no_route") and "nobody.home" in no_route["message"]
    assert call(anon, "r4", "admin.stats", {})["code"] == "forbidden"       # neither --rpc-methods nor a token
    assert call(alice, "r5", "admin.stats", {})["type"] == "rpc_result"     # the token's rpc claim
    assert call(alice, "r6", "cart.add")["data"]["data"] is None            # no data: null

    # Bad input: an error frame each, and the connection stays usable.
    alice.send({"op": "rpc", "id": "b1", "data": {}})
    missing = answer(alice, "b1")
    assert (missing["type"], missing["code"], missing["op"]) == ("error", "bad_request", "rpc") and "method" in missing["message"]
    alice.send({"op": "rpc", "method": "cart.add"})
    f = alice.recv()
    assert (f["type"], f["code"], f["op"]) == ("error", "bad_request", "rpc") and "id" in f["message"]
    assert call(alice, "b2", "cart add", {})["code"] == "bad_request"
    assert call(alice, "b3", "cart.add", {}, timeout=0)["code"] == "bad_request"
    assert call(alice, "r7", "cart.add", 7)["data"]["data"] == 7

    m = h.labeled("herald_rpc_calls_total")
    assert (m['outcome="result"'], m['outcome="worker_error"'], m['outcome="no_route"'], m['outcome="forbidden"']) == (4, 1, 1, 1)


def test_a_call_nobody_answers_times_out_and_its_late_answer_is_dropped_and_counted(herald_factory, worker):
    h = herald_factory(extra=["--rpc-methods", "cart.*", "--rpc-timeout", "1"]).start()
    c = Client(h.ws_url())
    assert call(c, "s1", "cart.slow", {}) == {"type": "rpc_error", "id": "s1", "code": "timeout", "message": "no answer within the call's timeout"}
    # A call may ask for less than --rpc-timeout (and never more).
    c.send({"op": "rpc", "id": "s2", "method": "cart.slow", "data": {}, "timeout": 200})
    assert answer(c, "s2")["code"] == "timeout"
    assert [p.expiration for _, p in worker.calls] == ["1000", "200"]
    worker.release.set()
    wait_until(lambda: h.metrics()["herald_rpc_late_replies_total"] == 2, 10, what="both late answers counted")
    c.assert_nothing_follows(0.5)
    assert call(c, "s3", "cart.add", {})["type"] == "rpc_result"  # still usable


def test_calls_get_unavailable_at_once_while_rabbitmq_is_unreachable(herald_factory, worker):
    proxy = TCPProxy(5672)
    h = herald_factory(extra=["--rpc-methods", "cart.*", "--rpc-timeout", "30", "--client-publish", "subscribers",
                              "--amqp-url", f"amqp://guest:guest@127.0.0.1:{proxy.port}/"]).start()
    c = Client(h.ws_url())
    assert call(c, "u1", "cart.add", {})["type"] == "rpc_result"
    proxy.cut()
    got = call(c, "u2", "cart.add", {})
    assert (got["type"], got["code"]) == ("rpc_error", "unavailable")
    c.send({"op": "subscribe", "channel": "room"})
    c.send({"op": "publish", "channel": "room", "data": 1, "id": "p1"})
    p = answer(c, "p1")
    assert (p["type"], p["code"]) == ("error", "unavailable")
    proxy.heal()
    n = [0]

    def answered():
        n[0] += 1
        return call(c, f"back{n[0]}", "cart.add", {})["type"] == "rpc_result"
    wait_until(answered, 30, interval=0.5, what="calls answered once RabbitMQ is back")


def test_200_concurrent_calls_from_50_clients_are_each_answered_once_to_their_caller(herald_factory, worker):
    nodes = [herald_factory(extra=["--rpc-methods", "cart.*"]).start() for _ in range(2)]
    clients = [Client(nodes[i % 2].ws_url()) for i in range(50)]
    for i, c in enumerate(clients):
        for k in range(4):
            c.send({"op": "rpc", "id": f"c{i}-{k}", "method": "cart.add", "data": {"client": i, "k": k}})
    for i, c in enumerate(clients):
        got = {}
        while len(got) < 4:
            f = c.recv(timeout=20)
            assert f["type"] == "rpc_result", f
            assert f["id"] not in got, f"answered twice: {f}"
            got[f["id"]] = f["data"]["data"]
        assert got == {f"c{i}-{k}": {"client": i, "k": k} for k in range(4)}
    for c in clients[:5]:
        c.assert_nothing_follows(0.3)
    results = sum(n.labeled("herald_rpc_calls_total")['outcome="result"'] for n in nodes)
    assert results == 200


class MemoryAlarm:
    """RabbitMQ's memory alarm, raised by a watermark below what it uses (it then blocks every
    publishing connection) and cleared by the default watermark, 0.4."""

    @staticmethod
    def watermark(*value):
        import subprocess
        subprocess.run(["rabbitmqctl", "set_vm_memory_high_watermark", *value], check=True, capture_output=True, timeout=60)

    def raise_(self):
        self.watermark("absolute", "1")

    def clear(self):
        self.watermark("0.4")


@pytest.fixture
def memory_alarm():
    alarm = MemoryAlarm()
    yield alarm
    alarm.clear()


@pytest.mark.shared_broker
def test_a_blocked_rabbitmq_gets_unavailable_and_nothing_is_buffered(herald_factory, worker, memory_alarm):
    h = herald_factory(extra=["--rpc-methods", "cart.*", "--client-publish", "subscribers"]).start()
    c = Client(h.ws_url("channel=room"))
    assert c.recv()["type"] == "subscribed"
    assert call(c, "before", "cart.add", {})["type"] == "rpc_result"
    memory_alarm.raise_()
    # RabbitMQ blocks a connection (and tells it) when it next publishes: that call waits in
    # Herald's socket until its own timeout; nothing after it is sent at all.
    assert call(c, "first", "cart.add", {}, timeout=500)["code"] == "timeout"
    wait_until(lambda: "RabbitMQ blocked client publishes and RPCs" in h.log(), 30, what="Herald to be told it is blocked")
    got = call(c, "while", "cart.add", {})
    assert (got["type"], got["code"]) == ("rpc_error", "unavailable") and "blocked" in got["message"]
    c.send({"op": "publish", "channel": "room", "data": 1, "id": "p1"})
    p = answer(c, "p1")
    assert (p["code"], p["op"]) == ("unavailable", "publish") and "blocked" in p["message"]
    assert h.metrics()["herald_rpc_in_flight"] == 0
    memory_alarm.clear()
    wait_until(lambda: "RabbitMQ unblocked client publishes and RPCs" in h.log(), 30, what="Herald to be told it is unblocked")
    assert call(c, "after", "cart.add", {})["type"] == "rpc_result"
    c.send({"op": "publish", "channel": "room", "data": 2, "id": "p2"})
    assert answer(c, "p2")["type"] == "published"
