"""Several RabbitMQ nodes (--amqp-url repeated, or HERALD_AMQP_URL comma-separated): every AMQP
connection uses the first node that answers. The cluster failover itself (kill -9 of a node of a
three-node cluster) is in test_rabbitmq_cluster.py; these need only the local broker and a port
where nothing listens."""
import os
import subprocess

from conftest import HERALD_BIN, Client, free_port, publish, wait_until

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
    # All three connections (sequencer, live consumer, HTTP publisher) name the node they use.
    log = h.log()
    for name in ("RabbitMQ (sequencer)", "RabbitMQ (live queue)", "RabbitMQ (HTTP publisher)"):
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
