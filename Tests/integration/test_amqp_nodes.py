"""Several RabbitMQ nodes (--amqp-url repeated, or HERALD_AMQP_URL comma-separated): every AMQP
connection uses the first node that answers. The cluster failover itself (kill -9 of a node of a
three-node cluster) is in test_rabbitmq_cluster.py; these need only the local broker and a port
where nothing listens."""
import os
import subprocess
import time

from conftest import HERALD_BIN, Client, Publisher, free_port, publish, wait_until

GOOD = "amqp://guest:guest@127.0.0.1:5672/"


def dead_url():
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/"


def test_a_node_that_does_not_answer_is_passed_over_by_every_connection(herald_factory, exchange):
    dead = dead_url()
    h = herald_factory(extra=["--amqp-url", dead, "--amqp-url", GOOD]).start()
    c = Client(h.ws_url("channel=news"))
    c.recv()
    publish(exchange, "news", [b"a", b"b"])
    msgs, _ = c.recv_messages("news", 2)
    assert [m["seq"] for m in msgs] == [1, 2]
    # The sequencer's connection (a node's only one without presence or lifecycle events) names
    # the node it uses.
    log = h.log()
    for name in ("RabbitMQ (sequencer)",):
        lines = [l for l in log.splitlines() if name in l and " connected" in l]
        assert lines and all("node=127.0.0.1:5672" in l for l in lines), (name, lines)
    c.close()


def test_the_nodes_may_come_from_HERALD_AMQP_URL_comma_separated(herald_factory, exchange):
    h = herald_factory(env={"HERALD_AMQP_URL": f"{dead_url()},{GOOD}"}).start()
    publish(exchange, "envnodes", [b"x"])
    wait_until(lambda: h.metrics()["herald_messages_in_total"] == 1, 10, what="the message stored")


def test_herald_publish_goes_to_the_next_node_and_says_why_when_none_answers(herald, exchange):
    env = {**os.environ, "HERALD_EXCHANGE": exchange}
    ok = subprocess.run([HERALD_BIN, "publish", "multi", "hello", "--amqp-url", dead_url(), "--amqp-url", GOOD],
                        capture_output=True, text=True, timeout=30, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("published to multi (id cli-")
    wait_until(lambda: herald.metrics()["herald_messages_in_total"] == 1, 10, what="the message stored")
    a, b = dead_url(), dead_url()
    none = subprocess.run([HERALD_BIN, "publish", "multi", "hello", "--amqp-url", a, "--amqp-url", b],
                          capture_output=True, text=True, timeout=60, env=env)
    assert none.returncode != 0
    assert "not published" in none.stderr and a.split("@")[1].rstrip("/") in none.stderr and b.split("@")[1].rstrip("/") in none.stderr, none.stderr


def test_an_amqp_link_black_holed_for_30_s_is_noticed_by_heartbeat_and_nothing_confirmed_is_lost(herald_factory, exchange,
                                                                                                  redis_server):
    # A proxy between Herald and RabbitMQ stops forwarding without closing anything (a dead
    # router, a frozen NAT): no FIN, no RST. Only the AMQP heartbeat can tell.
    from tcpproxy import TCPProxy
    proxy = TCPProxy(5672)
    try:
        # The sequencer's link is the one black-holed: messages wait in the history queue and
        # are sequenced, in order, once it is back.
        h = herald_factory(extra=["--amqp-url", f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
                                  "--history-size", "1000"]).start()
        c = Client(h.ws_url("channel=hole"))
        c.recv()
        publish(exchange, "hole", [f"a{i}".encode() for i in range(20)])
        before, _ = c.recv_messages("hole", 20)
        proxy.pause()
        paused_at = time.time()
        # Publishers reach RabbitMQ directly all along; their messages wait in the history queue.
        pub = Publisher(exchange, "hole", 300, rate=10)
        pub.start()
        wait_until(lambda: h.health()[0] == 503, 30, what="Herald to notice the dead link")
        noticed = time.time() - paused_at
        assert noticed <= 25, f"noticed after {noticed:.1f} s"
        assert "lost RabbitMQ" in h.log()
        pub.join(120)  # 300 messages at 10/s: the link stays dead about 30 s, past the heartbeat's notice
        assert pub.error is None and pub.confirmed == 300
        held = time.time() - paused_at
        proxy.heal()
        wait_until(lambda: h.health()[0] == 200, 60, what="Herald to reconnect through the healed proxy")
        frames = []
        while len([f for f in frames if f.get("type") == "message"]) < 300:
            frames.append(c.recv(timeout=60))
        msgs = [f for f in frames if f.get("type") == "message"]
        assert [m["seq"] for m in before + msgs] == list(range(1, 321))
        assert [m["id"] for m in msgs] == pub.ids, "every confirmed message, once, in order"
        c.assert_nothing_follows()
        print(f"black hole of {held:.0f} s noticed after {noticed:.1f} s")
        c.close()
    finally:
        proxy.close()
