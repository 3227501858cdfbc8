"""Client publish (PROTOCOL.md, "Client publish"): a WebSocket client's message goes through
RabbitMQ, is sequenced and stored like any other and reaches every subscriber on every node; a
retry with the same id is stored once; each namespace rule refuses what it must, with its code;
backend mode hands the message to the application's worker on <exchange>.inbound."""
import json
import threading
import time

import jwt as pyjwt
import pika
import pytest

from conftest import Client, wait_until

SECRET = "client-publish-secret-0123456789"

CONFIG = """
namespaces:
  - name: chat
    pattern: "chat:*"
    client-publish: subscribers
  - name: tok
    pattern: "tok:*"
    client-publish: token
  - name: inbound
    pattern: "in:*"
    client-publish: backend
  - name: quiet
    pattern: "quiet:*"
    client-publish: false
"""


def token(sub, **claims):
    return pyjwt.encode({"sub": sub, "exp": int(time.time()) + 600, **claims}, SECRET, algorithm="HS256")


@pytest.fixture
def nodes(herald_factory, tmp_path):
    path = tmp_path / "herald.yaml"
    path.write_text(CONFIG)
    extra = ["--config", str(path), "--token-secret", SECRET, "--anonymous-channels", "*",
             "--max-message-bytes", "300", "--client-publish-rate", "2"]
    return [herald_factory(extra=extra).start(), herald_factory(extra=extra).start()]


def subscribed(c, channel, since=None):
    c.send({"op": "subscribe", "channel": channel, **({"since": since} if since is not None else {})})
    while True:
        f = c.recv()
        if f.get("type") == "subscribed" and f["channel"] == channel:
            return f


def answer(c, id_):
    """The published or error frame answering the publish `id_` (other frames are kept)."""
    others = []
    while True:
        f = c.recv()
        if f.get("id") == id_ and f.get("type") in ("published", "error"):
            c.pending = others + c.pending
            return f
        others.append(f)


def next_error(c):
    """The next error frame (other frames are kept)."""
    others = []
    while True:
        f = c.recv()
        if f.get("type") == "error":
            c.pending = others + c.pending
            return f
        others.append(f)


def history(node, channel):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/api/history/{channel}", timeout=5) as r:
        body = json.loads(r.read())
        return body["messages"] if isinstance(body, dict) else body


def test_a_client_publish_reaches_every_subscriber_on_both_nodes_with_one_seq_and_a_retry_is_stored_once(nodes):
    a, b = nodes
    alice = Client(a.ws_url(f"token={token('alice')}"))
    assert alice.recv()["type"] == "authenticated"
    bob = Client(b.ws_url())
    subscribed(alice, "chat:1")
    subscribed(bob, "chat:1")
    alice.send({"op": "publish", "channel": "chat:1", "data": {"text": "hi"}, "id": "m1"})
    assert answer(alice, "m1") == {"type": "published", "id": "m1", "channel": "chat:1", "message_id": "client:alice:m1"}
    [mine], _ = alice.recv_messages("chat:1", 1)
    [theirs], _ = bob.recv_messages("chat:1", 1)
    assert mine == theirs
    assert mine["seq"] == 1 and mine["data"] == {"text": "hi"} and mine["id"] == "client:alice:m1"

    # A reconnect, and the same publish sent again (its answer was lost): stored once.
    alice.close()
    again = Client(a.ws_url(f"token={token('alice')}"))
    again.recv()
    subscribed(again, "chat:1", since=1)
    again.send({"op": "publish", "channel": "chat:1", "data": {"text": "hi"}, "id": "m1"})
    assert answer(again, "m1")["type"] == "published"
    again.send({"op": "publish", "channel": "chat:1", "data": {"text": "second"}, "id": "m2"})
    assert answer(again, "m2")["type"] == "published"
    [second], _ = again.recv_messages("chat:1", 1)
    assert second["seq"] == 2 and second["data"] == {"text": "second"}
    [second_b], _ = bob.recv_messages("chat:1", 1)
    assert second_b == second
    bob.assert_nothing_follows()
    assert [(m["seq"], m["id"]) for m in history(b, "chat:1")] == [(1, "client:alice:m1"), (2, "client:alice:m2")]


def test_each_rule_refuses_what_it_must_with_its_code_and_the_connection_stays_usable(nodes):
    a = nodes[0]
    c = Client(a.ws_url(f"token={token('carol', publish=['tok:a'])}"))
    assert c.recv()["type"] == "authenticated"

    def publish(channel, id_, data="x"):
        c.send({"op": "publish", "channel": channel, "data": data, "id": id_})
        return answer(c, id_)

    refused = publish("quiet:1", "q1")
    assert (refused["type"], refused["code"], refused["op"], refused["channel"]) == ("error", "forbidden", "publish", "quiet:1")
    assert "client-publish is false" in refused["message"]
    assert publish("chat:9", "s1")["code"] == "forbidden"          # subscribers: not subscribed yet
    subscribed(c, "chat:9")
    assert publish("chat:9", "s2")["type"] == "published"
    assert publish("tok:a", "t1")["type"] == "published"          # token: its publish claim names it
    assert publish("tok:b", "t2")["code"] == "forbidden"
    big = publish("chat:9", "big", data="y" * 400)
    assert (big["code"], big["id"]) == ("too_large", "big") and "--max-message-bytes" in big["message"]
    # Malformed publishes: an error frame each, with the id when it could be read.
    c.send({"op": "publish", "channel": "chat:9", "data": 1})
    assert next_error(c)["code"] == "bad_request"
    c.send({"op": "publish", "channel": "chat:9", "id": "nodata"})
    assert answer(c, "nodata")["code"] == "bad_request"
    c.send({"op": "publish", "channel": "bad channel", "data": 1, "id": "bc"})
    assert answer(c, "bc")["code"] == "bad_channel"
    # The connection still works: its next publish goes through and comes back to it.
    # (the third publish to pass its checks: within the burst of 4)
    assert publish("chat:9", "s3", data="after")["type"] == "published"
    delivered, _ = c.recv_messages("chat:9", 2)
    assert [m["data"] for m in delivered] == ["x", "after"]
    metrics = a.labeled("herald_client_publishes_total")
    assert metrics['outcome="forbidden"'] >= 3 and metrics['outcome="too_large"'] == 1


def test_a_flood_past_the_publish_rate_is_refused_per_message_and_the_rest_get_through(nodes):
    a = nodes[0]
    c = Client(a.ws_url())
    subscribed(c, "chat:flood")
    ids = [f"f{i}" for i in range(10)]
    for i in ids:
        c.send({"op": "publish", "channel": "chat:flood", "data": i, "id": i})
    answers = {i: answer(c, i) for i in ids}
    published = [i for i in ids if answers[i]["type"] == "published"]
    limited = [i for i in ids if answers[i].get("code") == "rate_limited"]
    # --client-publish-rate 2: a burst of 4, then about 2 a second.
    assert 4 <= len(published) <= 5 and len(published) + len(limited) == 10, answers
    delivered, _ = c.recv_messages("chat:flood", len(published))
    assert [m["data"] for m in delivered] == published and [m["seq"] for m in delivered] == list(range(1, len(published) + 1))
    c.assert_nothing_follows()
    subscribed(c, "chat:other")  # still usable


def test_backend_mode_lands_on_the_inbound_exchange_and_what_the_worker_publishes_is_delivered(nodes, exchange):
    a, b = nodes
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    ch = conn.channel()
    ch.exchange_declare(f"{exchange}.inbound", "topic", durable=True)
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, f"{exchange}.inbound", routing_key="#")
    seen = []

    def worker():
        # The application's worker: checks who sent it, enriches it and publishes it to the channel.
        for method, props, body in ch.consume(queue, inactivity_timeout=0.2):
            if method is None:
                if len(seen) >= 1:
                    break
                continue
            seen.append((method.routing_key, props.headers, props.message_id, json.loads(body)))
            enriched = {"text": json.loads(body)["text"], "by": props.headers["herald-user"], "checked": True}
            ch.basic_publish(exchange, method.routing_key, json.dumps(enriched),
                             pika.BasicProperties(content_type="application/json", message_id=props.message_id))
            ch.basic_ack(method.delivery_tag)

    dave = Client(a.ws_url(f"token={token('dave')}"))
    dave.recv()
    reader = Client(b.ws_url())
    subscribed(dave, "in:room")
    subscribed(reader, "in:room")
    t = threading.Thread(target=worker)
    t.start()
    dave.send({"op": "publish", "channel": "in:room", "data": {"text": "hello"}, "id": "b1"})
    assert answer(dave, "b1")["type"] == "published"
    t.join(20)
    conn.close()
    [(key, headers, message_id, body)] = seen
    assert key == "in:room" and body == {"text": "hello"} and message_id == "client:dave:b1"
    assert headers["herald-user"] == "dave" and headers["herald-client"] and headers["herald-node"]
    [m], _ = reader.recv_messages("in:room", 1)
    assert m["data"] == {"text": "hello", "by": "dave", "checked": True} and m["seq"] == 1
    [m2], _ = dave.recv_messages("in:room", 1)
    assert m2 == m


def test_backend_mode_with_no_worker_bound_answers_unavailable(nodes):
    c = Client(nodes[0].ws_url())
    c.send({"op": "publish", "channel": "in:nobody", "data": 1, "id": "n1"})
    got = answer(c, "n1")
    assert (got["type"], got["code"]) == ("error", "unavailable") and ".inbound" in got["message"]


def test_herald_token_mints_the_publish_claim(nodes):
    import subprocess
    from conftest import HERALD_BIN
    out = subprocess.run([HERALD_BIN, "token", "--sub", "erin", "--publish", "tok:x,tok:y*", "--rpc", "cart.*"],
                         capture_output=True, text=True, timeout=30, env={"HERALD_TOKEN_SECRET": SECRET})
    assert out.returncode == 0, out.stderr
    claims = pyjwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (claims["publish"], claims["rpc"]) == (["tok:x", "tok:y*"], ["cart.*"])
    c = Client(nodes[0].ws_url(f"token={out.stdout.strip()}"))
    assert c.recv()["type"] == "authenticated"
    c.send({"op": "publish", "channel": "tok:y1", "data": 1, "id": "e1"})
    assert answer(c, "e1")["type"] == "published"
    c.send({"op": "publish", "channel": "tok:z", "data": 1, "id": "e2"})
    assert answer(c, "e2")["code"] == "forbidden"
    bad = subprocess.run([HERALD_BIN, "token", "--sub", "erin", "--rpc", "a b"], capture_output=True, text=True, timeout=30,
                         env={"HERALD_TOKEN_SECRET": SECRET})
    assert bad.returncode != 0 and "--rpc a b" in bad.stderr
