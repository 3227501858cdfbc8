"""Live messages over Redis PUB/SUB: a node subscribes to the live topic of each channel its
clients watch, reads a subscribe's history only after Redis confirmed the topic, and repairs from
Redis whatever a lost PUB/SUB connection missed, at once, on channels that get no further message
too. Real RabbitMQ, real Redis, real nodes."""
import time

import pika

from conftest import Client, Publisher, amqp_channel, assert_consecutive, publish, wait_until


def test_a_lost_pubsub_connection_is_repaired_at_once_even_on_a_quiet_channel(herald, redis_server, exchange):
    """Redis drops a subscriber whose output buffer passes its limit (here: every 40 KB message),
    so no message below reaches the node over PUB/SUB: each arrives only through the catch-up
    that follows every new connection, the last one on each channel with nothing after it."""
    busy, quiet = Client(herald.ws_url("channel=busy")), Client(herald.ws_url("channel=quiet"))
    assert busy.recv()["type"] == "subscribed" and quiet.recv()["type"] == "subscribed"
    r = redis_server.client()
    r.config_set("client-output-buffer-limit", "pubsub 4096 4096 0")
    body = b"x" * 40_000
    publish(exchange, "busy", [body] * 20)
    publish(exchange, "quiet", [body])
    got, _ = busy.recv_messages("busy", 20, timeout=30)
    assert [m["seq"] for m in got] == list(range(1, 21))
    last, _ = quiet.recv_messages("quiet", 1, timeout=30)
    assert last[0]["seq"] == 1 and last[0]["data"] == body.decode()
    r.config_set("client-output-buffer-limit", "pubsub 33554432 8388608 60")
    busy.assert_nothing_follows(quiet=1.0)
    quiet.assert_nothing_follows(quiet=0.1)
    m = herald.metrics()
    assert m["herald_redis_reconnects_total"] >= 1, "Redis dropped the PUB/SUB connection"
    assert "caught up from Redis after the PUB/SUB connection came back" in herald.log()
    # The connection is healthy again: the next message comes live.
    publish(exchange, "quiet", [b"live again"])
    again, _ = quiet.recv_messages("quiet", 1)
    assert again[0]["seq"] == 2 and again[0]["data"] == "live again"
    busy.close(), quiet.close()


def test_subscribing_while_a_channel_publishes_at_1000_per_second_gets_history_then_live(herald, exchange):
    """Clients join one after another while the channel takes 1,000 msg/s: each sees its replay
    then live messages, seqs consecutive to the last, none missing, none twice."""
    pub = Publisher(exchange, "hot", 4000, rate=1000)
    pub.start()
    wait_until(lambda: pub.confirmed >= 300, timeout=20, what="the publisher under way")
    clients = []
    for _ in range(6):
        clients.append(Client(herald.ws_url("channel=hot")))
        target = pub.confirmed + 300
        wait_until(lambda: pub.confirmed >= target or not pub.is_alive(), timeout=20, what="300 more messages")
    pub.join(timeout=30)
    assert pub.error is None and pub.confirmed == 4000
    for c in clients:
        sub = c.recv()
        assert sub["type"] == "subscribed" and sub["seq"] >= 300
        got, others = c.recv_messages("hot", 4000 - sub["seq"] + sub["replay"], timeout=30)
        assert others == []
        seqs = [m["seq"] for m in got]
        assert_consecutive(seqs, start=sub["seq"] - sub["replay"] + 1, end=4000)
        c.assert_nothing_follows(quiet=0.5)
        c.close()


def test_a_node_receives_only_the_live_messages_of_channels_its_clients_watch(herald_factory, exchange):
    """Clients of node A watch 2 of 200 channels; node B has no client. Of the 1,000 messages
    published, A receives (`herald_live_messages_received_total`) only those 10, B none."""
    a, b = herald_factory().start(), herald_factory().start()
    clients = [Client(a.ws_url("channel=ch7")), Client(a.ws_url("channel=ch123"))]
    for c in clients:
        assert c.recv()["type"] == "subscribed"
    assert a.metrics()["herald_live_channels"] == 2 and b.metrics()["herald_live_channels"] == 0
    conn, ch = amqp_channel()
    ch.confirm_delivery()
    for n in range(5):
        for i in range(200):
            ch.basic_publish(exchange, f"ch{i}", f"m{n}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()
    for c, name in zip(clients, ["ch7", "ch123"]):
        got, _ = c.recv_messages(name, 5)
        assert_consecutive([m["seq"] for m in got], start=1, end=5)
    wait_until(lambda: a.metrics()["herald_messages_in_total"] + b.metrics()["herald_messages_in_total"] >= 1000,
               what="every message sequenced")
    received_a, received_b = a.metrics()["herald_live_messages_received_total"], b.metrics()["herald_live_messages_received_total"]
    assert received_a == 10, "only ch7's and ch123's messages, each once"
    assert received_b == 0
    assert received_a <= 0.1 * 1000
    for c in clients:
        c.close()
