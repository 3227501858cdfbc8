"""Publishing through RabbitMQ and receiving over WebSocket: frames, history, resume."""
import base64
import json
import subprocess
import time

import pytest
import urllib.request

import pika

from conftest import HERALD_BIN, Client, amqp_channel, assert_consecutive, publish, wait_until
from websockets.exceptions import ConnectionClosed


def test_json_text_and_binary_bodies_arrive_as_protocol_frames(herald, exchange):
    c = Client(herald.ws_url("channel=news"))
    sub = c.recv()
    assert sub["type"] == "subscribed" and sub["seq"] == 0 and sub["replay"] == 0
    before = int(time.time() * 1000)
    conn, ch = amqp_channel()
    ch.confirm_delivery()
    ch.basic_publish(exchange, "news", b'{ "price" : 12.5,\n "tags": ["a"] }',
                     pika.BasicProperties(content_type="application/json; charset=utf-8", message_id="j1"))
    ch.basic_publish(exchange, "news", "héllo\nworld".encode(), pika.BasicProperties(content_type="text/plain", message_id="t1"))
    ch.basic_publish(exchange, "news", b"\xff\x00\xfe", pika.BasicProperties(message_id="b1"))
    conn.close()
    msgs, _ = c.recv_messages("news", 3)
    after = int(time.time() * 1000)
    assert [m["seq"] for m in msgs] == [1, 2, 3]
    assert [m["id"] for m in msgs] == ["j1", "t1", "b1"]
    assert msgs[0]["data"] == {"price": 12.5, "tags": ["a"]} and "encoding" not in msgs[0]
    assert msgs[1]["data"] == "héllo\nworld"
    assert msgs[2]["data"] == base64.b64encode(b"\xff\x00\xfe").decode() and msgs[2]["encoding"] == "base64"
    for m in msgs:
        assert before - 1000 <= m["time"] <= after + 1000
        assert list(m)[:6] == ["type", "channel", "seq", "id", "time", "data"]
    c.close()


def test_history_replay_then_live_and_capped_list(herald, exchange, redis_server):
    publish(exchange, "news", [f"m{i}".encode() for i in range(1, 151)])
    wait_until(lambda: redis_server.client().hget("herald:meta:news", "seq") == b"150", what="150 stored")
    c = Client(herald.ws_url("channel=news"))
    sub = c.recv()
    assert (sub["type"], sub["seq"], sub["replay"]) == ("subscribed", 150, 100)
    assert "recovered" not in sub and "missed" not in sub
    replay, others = c.recv_messages("news", 100)
    assert others == []
    assert [m["seq"] for m in replay] == list(range(51, 151))
    assert [m["data"] for m in replay] == [f"m{i}" for i in range(51, 151)]
    publish(exchange, "news", [b"live1", b"live2"])
    live, _ = c.recv_messages("news", 2)
    assert [m["seq"] for m in live] == [151, 152]
    stored = redis_server.client().lrange("herald:history:news", 0, -1)
    assert len(stored) == 100
    assert [json.loads(s)["seq"] for s in stored] == list(range(152, 52, -1))  # newest first
    c.close()


def test_resume_since_and_epoch(herald, exchange, redis_server):
    publish(exchange, "news", [f"m{i}".encode() for i in range(1, 151)])
    wait_until(lambda: redis_server.client().hget("herald:meta:news", "seq") == b"150", what="150 stored")
    epoch = redis_server.client().hget("herald:meta:news", "epoch").decode()

    c = Client(herald.ws_url(f"channel=news&since=120&epoch={epoch}"))
    sub = c.recv()
    assert sub == {"type": "subscribed", "channel": "news", "epoch": epoch, "seq": 150, "replay": 30,
                   "recovered": True, "missed": 0}
    msgs, _ = c.recv_messages("news", 30)
    assert [m["seq"] for m in msgs] == list(range(121, 151))

    c.send({"op": "unsubscribe", "channel": "news"})
    assert c.recv() == {"type": "unsubscribed", "channel": "news"}
    c.send({"op": "subscribe", "channel": "news", "since": 10, "epoch": epoch})
    sub = c.recv()
    assert (sub["recovered"], sub["missed"], sub["replay"], sub["seq"]) == (False, 40, 100, 150)
    msgs, _ = c.recv_messages("news", 100)
    assert [m["seq"] for m in msgs] == list(range(51, 151))
    c.close()

    c = Client(herald.ws_url("channel=news"))
    c.recv(); c.recv_messages("news", 100)
    c.send({"op": "unsubscribe", "channel": "news"}); c.recv()
    c.send({"op": "subscribe", "channel": "news", "since": 140, "epoch": "not-the-epoch"})
    sub = c.recv()
    assert (sub["recovered"], sub["missed"], sub["replay"]) == (False, None, 100)
    msgs, _ = c.recv_messages("news", 100)
    assert [m["seq"] for m in msgs] == list(range(51, 151))
    # A since above the channel's seq means the sequence went back: treated as another epoch.
    c.send({"op": "subscribe", "channel": "other", "since": 5})
    sub = c.recv()
    assert (sub["channel"], sub["seq"], sub["recovered"], sub["missed"]) == ("other", 0, False, None)
    c.close()


def test_resubscribe_never_repeats_a_seq(herald, exchange):
    publish(exchange, "news", [b"a", b"b", b"c"])
    c = Client(herald.ws_url("channel=news"))
    c.recv(); c.recv_messages("news", 3)
    c.send({"op": "subscribe", "channel": "news"})
    sub = c.recv()
    assert (sub["seq"], sub["replay"]) == (3, 0)
    publish(exchange, "news", [b"d"])
    msgs, _ = c.recv_messages("news", 1)
    assert msgs[0]["seq"] == 4
    c.close()


def test_duplicate_message_id_is_stored_and_sent_once(herald, exchange, redis_server):
    c = Client(herald.ws_url("channel=news"))
    c.recv()
    publish(exchange, "news", [b"one", b"one-again", b"two"], ids=["same", "same", "other"])
    # A repeat in a later batch, then a known last message: every frame up to it is checked, and
    # nothing may follow it (a duplicate in a later WebSocket message would).
    publish(exchange, "news", [b"one-later", b"end"], ids=["same", "marker"])
    msgs, others = c.recv_messages("news", 3)
    assert others == []
    assert [(m["seq"], m["id"], m["data"]) for m in msgs] == [(1, "same", "one"), (2, "other", "two"), (3, "marker", "end")]
    c.assert_nothing_follows()
    assert redis_server.client().llen("herald:history:news") == 3
    c.close()


def test_ids_with_colons_on_channels_with_colons_never_collide(herald, exchange, redis_server):
    # "orders" + "eu:1" and "orders:eu" + "1" once shared the key herald:id:orders:eu:1, so the
    # second was confirmed and acked but never stored or delivered.
    a = Client(herald.ws_url("channel=orders"))
    b = Client(herald.ws_url("channel=orders:eu"))
    a.recv(), b.recv()
    publish(exchange, "orders", [b"first"], ids=["eu:1"])
    publish(exchange, "orders:eu", [b"second"], ids=["1"])
    (ma,), _ = a.recv_messages("orders", 1)
    (mb,), _ = b.recv_messages("orders:eu", 1)
    assert (ma["seq"], ma["id"], ma["data"]) == (1, "eu:1", "first")
    assert (mb["seq"], mb["id"], mb["data"]) == (1, "1", "second")
    r = redis_server.client()
    assert r.llen("herald:history:orders") == 1 and r.llen("herald:history:orders:eu") == 1
    assert r.exists("herald:id:orders#eu:1") and r.exists("herald:id:orders:eu#1")
    a.close(), b.close()


def test_dedupe_seconds_bounds_how_long_an_id_is_remembered(herald_factory, exchange, redis_server):
    h = herald_factory(extra=["--dedupe-seconds", "2"]).start()
    c = Client(h.ws_url("channel=dd"))
    c.recv()
    publish(exchange, "dd", [b"a", b"a-again"], ids=["x", "x"])
    (m,), _ = c.recv_messages("dd", 1)
    assert (m["seq"], m["data"]) == (1, "a")
    r = redis_server.client()
    ttl = r.ttl("herald:id:dd#x")
    assert 0 < ttl <= 2, f"the id key lives {ttl} s, not --dedupe-seconds"
    wait_until(lambda: not r.exists("herald:id:dd#x"), 10, what="the id key to expire")
    publish(exchange, "dd", [b"a-after"], ids=["x"])  # forgotten: a new message
    (m,), _ = c.recv_messages("dd", 1)
    assert (m["seq"], m["id"], m["data"]) == (2, "x", "a-after")
    c.close()


@pytest.mark.parametrize("loop", ["epoll", "poll"])
def test_both_event_loops_deliver_history_then_live(herald_factory, exchange, loop):
    h = herald_factory(extra=["--event-loop", loop]).start()
    publish(exchange, "loop", [b"h1", b"h2"])
    wait_until(lambda: h.metrics()["herald_messages_in_total"] == 2, 10, what="sequencing")
    clients = [Client(h.ws_url("channel=loop")) for _ in range(3)]
    for c in clients:
        sub = c.recv()
        assert (sub["seq"], sub["replay"]) == (2, 2)
    publish(exchange, "loop", [f"l{i}".encode() for i in range(3, 51)])
    for c in clients:
        msgs, others = c.recv_messages("loop", 50)
        assert others == []
        assert [m["seq"] for m in msgs] == list(range(1, 51))
        c.assert_nothing_follows(0.5)
        c.close()
    assert f"event_loop={loop}" in h.log(), "the node did not say which loop it runs"


def test_empty_routing_key_goes_to_default_channel(herald, exchange):
    c = Client(herald.ws_url("channel=default"))
    c.recv()
    publish(exchange, "", [b"x"])
    msgs, _ = c.recv_messages("default", 1)
    assert msgs[0]["data"] == "x"
    c.close()


def test_http_publish_and_history(herald_factory, exchange):
    h = herald_factory(extra=["--api-key", "k1,k2"]).start()
    base = f"http://127.0.0.1:{h.port}"

    def post(path, body, headers):
        req = urllib.request.Request(base + path, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    assert post("/api/publish/news", b"x", {})[0] == 401
    assert post("/api/publish/news", b"x", {"X-API-Key": "nope"})[0] == 401
    status, body = post("/api/publish/bad%20name", b"x", {"X-API-Key": "k1"})
    assert status == 400 and body["error"] == "bad_channel"
    status, body = post("/api/publish/news", b"{nope", {"X-API-Key": "k1", "Content-Type": "application/json"})
    assert status == 400 and body["error"] == "bad_json"
    status, body = post("/api/publish/news", b"x" * 70000, {"X-API-Key": "k1"})
    assert status == 413 and body["error"] == "too_large"
    status, body = post("/api/publish/news", b'{"n": 1}', {"Authorization": "Bearer k2", "Content-Type": "application/json",
                                                          "Idempotency-Key": "idem-1"})
    epoch = body.get("epoch")
    assert (status, body) == (202, {"id": "idem-1", "channel": "news", "epoch": epoch, "seq": 1}) and epoch
    status, body = post("/api/publish/news", b'{"n": 1}', {"X-API-Key": "k2", "Content-Type": "application/json",
                                                          "Idempotency-Key": "idem-1"})
    assert (status, body) == (202, {"id": "idem-1", "channel": "news", "epoch": epoch, "seq": 1, "duplicate": True})
    for i in range(2, 6):
        status, body = post("/api/publish/news", f"t{i}".encode(), {"X-API-Key": "k1"})
        assert status == 202 and body["seq"] == i and body["epoch"] == epoch and "duplicate" not in body

    def history(q=""):
        with urllib.request.urlopen(f"{base}/api/history/news{q}", timeout=5) as r:
            return json.loads(r.read())

    all_msgs = history()  # answered 202 once stored: in history already
    assert [m["seq"] for m in all_msgs] == [1, 2, 3, 4, 5]
    assert all_msgs[0]["data"] == {"n": 1} and all_msgs[0]["id"] == "idem-1"
    assert [m["seq"] for m in history("?since=2&limit=2")] == [3, 4]
    try:
        urllib.request.urlopen(f"{base}/api/history/bad%20name", timeout=5)
        assert False
    except urllib.error.HTTPError as e:
        assert e.code == 400 and json.loads(e.read())["error"] == "bad_channel"


def test_healthz_metrics_and_demo_page(herald):
    status, body = herald.health()
    assert status == 200
    assert body["status"] == "ok" and body["amqp"] == "up" and body["redis"] == "up" and isinstance(body["node"], str)
    assert "partitions_held" not in body, "one partition: /healthz is as it always was"
    wait_until(lambda: herald.health()[1]["sequencer"] is True, 10, what="sequencer role")
    m = herald.metrics()
    for name in ["herald_connections", "herald_subscriptions", "herald_messages_in_total", "herald_deliveries_total",
                 "herald_replays_total", "herald_dead_lettered_total", "herald_slow_consumer_closes_total",
                 "herald_amqp_reconnects_total", "herald_redis_reconnects_total", "herald_delivery_latency_seconds_count"]:
        assert name in m, name
    # A thread with CPU to spare keeps the coalescing window at its floor (--coalesce-ms 10),
    # on each WebSocket thread.
    threads = int(m["herald_ws_threads"])
    assert threads >= 1
    assert herald.labeled("herald_ws_coalesce_window_seconds") == {f'thread="{i}"': 0.01 for i in range(threads)}
    busy = herald.labeled("herald_ws_thread_busy_ratio")
    assert sorted(busy) == sorted(f'thread="{i}"' for i in range(threads)) and all(0 <= v < 0.45 for v in busy.values())
    with urllib.request.urlopen(f"http://127.0.0.1:{herald.port}/", timeout=5) as r:
        assert r.status == 200 and b"Herald" in r.read()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{herald.port}/nope.txt", timeout=5)
        assert False
    except urllib.error.HTTPError as e:
        assert e.code == 404


def test_a_message_held_for_coalescing_goes_out_when_the_window_ends(herald_factory, exchange):
    """On a busy channel a message that comes within --coalesce-ms of the last write waits for a
    timer, not for the next event: each message below arrives while nothing else happens."""
    herald = herald_factory(extra=("--coalesce-ms", "300")).start()
    c = Client(herald.ws_url("channel=burst"))
    assert c.recv()["type"] == "subscribed"
    for i in range(1, 6):
        publish(exchange, "burst", [f"m{i}".encode()])
        msgs, _ = c.recv_messages("burst", 1, timeout=5)
        assert (msgs[0]["seq"], msgs[0]["data"]) == (i, f"m{i}")
    c.close()


def test_history_and_then_the_epoch_expire_after_their_ttls(herald_factory, exchange, redis_server):
    h = herald_factory(extra=["--history-ttl", "2", "--history-meta-ttl", "6"]).start()  # 4 s apart: room on a slow machine
    r = redis_server.client()
    publish(exchange, "news", [b"a", b"b", b"c"])
    wait_until(lambda: r.hget("herald:meta:news", "seq") == b"3", what="3 stored")
    epoch = r.hget("herald:meta:news", "epoch").decode()
    assert 0 < r.ttl("herald:history:news") <= 2 and 2 < r.ttl("herald:meta:news") <= 6
    # A channel that is only subscribed to gets a meta hash with the shorter of the empty-channel
    # TTL (300 s) and the meta TTL.
    quiet = Client(h.ws_url("channel=quiet"))
    assert quiet.recv()["seq"] == 0
    assert 0 < r.ttl("herald:meta:quiet") <= 6
    quiet.close()

    wait_until(lambda: not r.exists("herald:history:news"), 10, what="history to expire")
    assert r.exists("herald:meta:news")
    c = Client(h.ws_url(f"channel=news&since=1&epoch={epoch}"))
    sub = c.recv()  # the history is gone, but the client is told exactly how many it missed
    assert (sub["epoch"], sub["seq"], sub["replay"], sub["recovered"], sub["missed"]) == (epoch, 3, 0, False, 2)
    c.close()

    wait_until(lambda: not r.exists("herald:meta:news"), 15, what="meta to expire")
    c = Client(h.ws_url(f"channel=news&since=3&epoch={epoch}"))
    sub = c.recv()  # a new life of the channel: another epoch, nothing known about what was missed
    assert sub["epoch"] != epoch and (sub["seq"], sub["replay"], sub["recovered"], sub["missed"]) == (0, 0, False, None)
    publish(exchange, "news", [b"d"])
    msgs, _ = c.recv_messages("news", 1)
    assert (msgs[0]["seq"], msgs[0]["data"]) == (1, "d")
    c.close()


def test_a_meta_ttl_shorter_than_the_history_ttl_is_refused():
    for args in (["--history-ttl", "60", "--history-meta-ttl", "30"], ["--history-ttl", "0", "--history-meta-ttl", "30"]):
        out = subprocess.run([HERALD_BIN, "serve", *args], capture_output=True, text=True, timeout=10)
        assert out.returncode != 0 and "a history must not outlive its epoch" in out.stderr, args


def test_a_replay_over_the_control_budget_goes_out_whole_and_each_resume_makes_progress(herald_factory, exchange, redis_server):
    """A replay larger than a connection's 4 MiB control budget is history the operator chose to
    keep: it goes out whole, in batches, then live. Two such replays at once: the first goes out
    whole, then 4008, and the resume from the positions reached gets the other. (Before, a replay
    over the budget was a 4008 before anything went out, and every resume met it again.)"""
    h = herald_factory(extra=("--history-size", "3000")).start()
    n, pad, names = 2200, "x" * 2000, ("big:a", "big:b")  # 2,200 of 2 KB: 4.4 MB a channel
    for name in names:
        publish(exchange, name, [json.dumps({"n": i, "pad": pad}).encode() for i in range(1, n + 1)],
                content_type="application/json")
    r = redis_server.client()
    wait_until(lambda: all(r.hget(f"herald:meta:{name}", "seq") == str(n).encode() for name in names), 30,
               what="both channels stored")

    c = Client(h.ws_url("channel=big:a"))
    sub = c.recv()
    assert (sub["type"], sub["seq"], sub["replay"]) == ("subscribed", n, n)
    msgs, others = c.recv_messages("big:a", n, timeout=60)
    assert [m["seq"] for m in msgs] == list(range(1, n + 1)) and others == []
    publish(exchange, "big:a", [b'{"n":"live"}'], content_type="application/json")
    msgs, others = c.recv_messages("big:a", 1)
    assert (msgs[0]["seq"], msgs[0]["data"], others) == (n + 1, {"n": "live"}, [])
    c.close()

    # Both on one connection, resuming from what arrived as a client library does.
    got, epochs, closes = {name: [] for name in names}, {}, []
    want = {"big:a": list(range(1, n + 2)), "big:b": list(range(1, n + 1))}
    for _ in range(3):
        c = Client(h.ws_url())
        for name in names:
            op = {"op": "subscribe", "channel": name}
            if got[name]:
                op.update(since=got[name][-1], epoch=epochs[name])
            c.send(op)
        try:
            while got != want:
                f = c.recv(timeout=30)
                if f["type"] == "subscribed":
                    assert f.get("recovered", True) is True and f.get("missed", 0) == 0, f
                    epochs[f["channel"]] = f["epoch"]
                elif f["type"] == "message":
                    got[f["channel"]].append(f["seq"])
        except ConnectionClosed as closed:
            closes.append((closed.rcvd.code, closed.rcvd.reason))
            continue
        finally:
            c.close()
        break
    assert got == want  # every seq once, in order, across the resume
    assert closes in ([], [(4008, "too far behind: replays over 4194304 bytes, resume to continue")]), closes
