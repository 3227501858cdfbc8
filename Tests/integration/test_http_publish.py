"""POST /api/publish stores directly in Redis from the node that receives it (issue 31): answered
with its seq once stored, several nodes at once never share a seq, one connection's publishes
keep their order, and a publish Redis could not take is answered 503 with the id to retry with,
so a retry stores it exactly once. Real Redis, real RabbitMQ, real nodes."""
import http.client
import json
import threading
import urllib.request

from conftest import Client, assert_consecutive, publish, wait_until


def poster(node):
    """A keep-alive HTTP/1.1 connection to a node; returns a function that publishes one body."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=20)

    def post(channel, body, key=None):
        headers = {"Content-Type": "text/plain"}
        if key:
            headers["Idempotency-Key"] = key
        conn.request("POST", f"/api/publish/{channel}", body=body, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    post.close = conn.close
    return post


def test_two_nodes_taking_publishes_to_one_channel_give_consecutive_seqs(herald_factory):
    a, b = herald_factory().start(), herald_factory().start()
    watcher = Client(b.ws_url("channel=shared"))
    assert watcher.recv()["type"] == "subscribed"
    per_connection, answers, errors = 300, {}, []

    def run(node, name):
        post = poster(node)
        try:
            got = []
            for i in range(per_connection):
                status, body = post("shared", f"{name}-{i}".encode())
                assert status == 202, body
                got.append((body["seq"], f"{name}-{i}", body["epoch"]))
            answers[name] = got
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            post.close()

    threads = [threading.Thread(target=run, args=(node, f"{tag}{k}")) for node, tag in ((a, "a"), (b, "b")) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    total = 4 * per_connection
    seqs = sorted(seq for got in answers.values() for seq, _, _ in got)
    assert seqs == list(range(1, total + 1)), "every publish its own seq, none twice, none skipped"
    assert len({epoch for got in answers.values() for _, _, epoch in got}) == 1
    for name, got in answers.items():
        assert [s for s, _, _ in got] == sorted(s for s, _, _ in got), f"{name}: one connection's publishes keep their order"
    # What subscribers get is what the answers said.
    msgs, _ = watcher.recv_messages("shared", total, timeout=60)
    assert_consecutive([m["seq"] for m in msgs], start=1, end=total)
    by_seq = {seq: data for got in answers.values() for seq, data, _ in got}
    assert all(m["data"] == by_seq[m["seq"]] for m in msgs)
    watcher.assert_nothing_follows(quiet=0.5)
    watcher.close()


def test_http_and_amqp_publishers_share_one_sequence(herald, exchange):
    watcher = Client(herald.ws_url("channel=mixed"))
    assert watcher.recv()["type"] == "subscribed"
    post = poster(herald)
    for i in range(50):
        publish(exchange, "mixed", [f"amqp-{i}".encode()])
        assert post("mixed", f"http-{i}".encode())[0] == 202
    post.close()
    msgs, _ = watcher.recv_messages("mixed", 100, timeout=30)
    assert_consecutive([m["seq"] for m in msgs], start=1, end=100)
    data = [m["data"] for m in msgs]
    assert sorted(data) == sorted([f"amqp-{i}" for i in range(50)] + [f"http-{i}" for i in range(50)])
    assert [d for d in data if d.startswith("http")] == [f"http-{i}" for i in range(50)], "one HTTP connection's order"
    assert [d for d in data if d.startswith("amqp")] == [f"amqp-{i}" for i in range(50)], "one AMQP publisher's order"
    watcher.assert_nothing_follows(quiet=0.5)
    watcher.close()


def test_a_publish_redis_could_not_take_is_retried_with_its_id_and_stored_once(herald, redis_server):
    post = poster(herald)
    status, first = post("retry", b"before")
    assert status == 202 and first["seq"] == 1
    redis_server.stop(save=True)
    status, failed = post("retry", b"during")
    assert status == 503 and failed["error"] == "redis_unavailable" and failed["id"]
    redis_server.start()
    # The publisher retries with the id it was given until Redis takes it; a retry that races a
    # store that did happen is answered as a duplicate, never stored twice.
    tries = []

    def retried():
        tries.append(post("retry", b"during", key=failed["id"]))
        assert tries[-1][0] == 202 or tries[-1][1]["error"] == "redis_unavailable", tries[-1]
        return tries[-1][0] == 202

    wait_until(retried, timeout=30, interval=0.1, what="Redis to take the retried publish")
    status, body = tries[-1]
    assert body["seq"] == 2 and body["id"] == failed["id"] and "duplicate" not in body
    status, again = post("retry", b"during", key=failed["id"])
    assert (status, again["seq"], again.get("duplicate")) == (202, 2, True)
    post.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{herald.port}/api/history/retry", timeout=10) as r:
        assert [(m["seq"], m["data"]) for m in json.loads(r.read())] == [(1, "before"), (2, "during")]


def test_a_publish_fewer_replicas_hold_is_answered_503_not_replicated_and_a_keyed_retry_stores_nothing(herald_factory, redis_server):
    """--redis-wait-replicas 1 with no replica: the master stores the publish, but it is answered
    503 not_replicated (after WAIT's 1 s); a retry with the same Idempotency-Key is no second copy."""
    h = herald_factory(extra=["--redis-wait-replicas", "1"]).start()
    post = poster(h)
    status, body = post("held", b"only on the master", key="k1")
    assert (status, body["error"], body["id"]) == (503, "not_replicated", "k1")
    assert "--redis-wait-replicas" in body["message"] and "Idempotency-Key: k1" in body["message"]
    status, again = post("held", b"only on the master", key="k1")
    assert (status, again["error"], again["id"]) == (503, "not_replicated", "k1")
    assert len(redis_server.client().lrange("herald:history:held", 0, -1)) == 1, "the retry stored nothing new"
    post.close()
