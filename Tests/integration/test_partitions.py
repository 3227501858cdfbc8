"""Partitioned sequencing (`--partitions N`, PROTOCOL.md "Partitions"): the fanout exchange feeds
a consistent-hash exchange that spreads channels over N single-active-consumer history queues,
each sequenced by its own thread. Every confirmed message is stored once with consecutive seqs per
channel; nodes that disagree on N refuse to start; a drained cluster can change N."""
import json
import urllib.request
import uuid

import pika
import pytest

from conftest import Client, amqp_channel, assert_consecutive, publish, wait_until


def history(node, channel):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/api/history/{channel}?limit=1000", timeout=5) as r:
        body = json.loads(r.read())
        return body["messages"] if isinstance(body, dict) else body


def queue_depths(exchange, count):
    conn, ch = amqp_channel()
    depths = [ch.queue_declare(f"{exchange}.history.{p}", passive=True).method.message_count for p in range(count)]
    conn.close()
    return depths


def queue_exists(name):
    conn, ch = amqp_channel()
    try:
        ch.queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if conn.is_open:
            conn.close()


def refused(node):
    """Starts `node` expecting it to refuse: its exit status and log."""
    node.start(wait_healthy=False)
    code = node.proc.wait(30)
    return code, node.log()


def test_channels_spread_over_partitions_and_every_message_is_stored_once_in_order(herald_factory, exchange):
    args = ["--partitions", "4"]
    a = herald_factory(extra=args).start()
    b = herald_factory(extra=args).start()
    channels = [f"orders:{i}" for i in range(40)]
    readers = [Client((a if i % 2 else b).ws_url(f"channel={c}")) for i, c in enumerate(channels[:6])]
    for r in readers:
        assert r.recv()["type"] == "subscribed"
    ids = {c: [f"{c}-{n}" for n in range(25)] for c in channels}
    for c in channels:
        publish(exchange, c, [json.dumps({"n": n}).encode() for n in range(25)], content_type="application/json", ids=ids[c])
    # A publisher's retry of the first five of every channel: the same ids, stored once.
    for c in channels:
        publish(exchange, c, [json.dumps({"n": n}).encode() for n in range(5)], content_type="application/json", ids=ids[c][:5])
    for c in channels:
        wait_until(lambda: len(history(a, c)) == 25, 20, what=f"{c}'s 25 messages")
        stored = history(b, c)
        assert_consecutive([m["seq"] for m in stored], 1, 25)
        assert [m["id"] for m in stored] == ids[c]
    for r, c in zip(readers, channels):
        got, _ = r.recv_messages(c, 25)
        assert [m["seq"] for m in got] == list(range(1, 26)) and [m["data"]["n"] for m in got] == list(range(25))
        r.assert_nothing_follows(0.3)

    # With the nodes stopped, the hash exchange still spreads what is published over all four
    # queues, and a node that comes back sequences every one of them.
    a.stop()
    b.stop()
    for c in channels:
        publish(exchange, c, [b'"late"'], content_type="application/json")
    depths = queue_depths(exchange, 4)
    assert sum(depths) == 40 and all(d > 0 for d in depths), depths
    c2 = herald_factory(extra=args).start()
    for c in channels:
        wait_until(lambda: len(history(c2, c)) == 26, 20, what=f"{c}'s late message")
        assert history(c2, c)[-1]["seq"] == 26
    wait_until(lambda: queue_depths(exchange, 4) == [0, 0, 0, 0], 10, what="every partition drained")


def test_nodes_that_disagree_on_the_partition_count_refuse_to_start(herald_factory):
    herald_factory(extra=["--partitions", "4"]).start()
    code, log = refused(herald_factory(extra=["--partitions", "2"]))
    assert code != 0 and "sequences" in log and "in 4 partition(s)" in log and "--partitions 4" in log
    code, log = refused(herald_factory())
    assert code != 0 and "in 4 partition(s)" in log and "this node was started with --partitions 1" in log


def test_a_drained_cluster_changes_its_partition_count_and_seqs_continue(herald_factory, exchange, redis_server):
    one = herald_factory().start()
    publish(exchange, "feed", [json.dumps(n).encode() for n in range(10)], content_type="application/json")
    wait_until(lambda: len(history(one, "feed")) == 10, 15, what="ten messages stored")
    one.stop()
    publish(exchange, "feed", [b"11"], content_type="application/json")   # waits in <exchange>.history
    code, log = refused(herald_factory(extra=["--partitions", "4"]))
    assert code != 0 and "--repartition" in log
    # A deployment from before the count was recorded: its <exchange>.history says it was 1.
    redis_server.client().delete("herald:partitions")
    code, log = refused(herald_factory(extra=["--partitions", "4"]))
    assert code != 0 and "in 1 partition(s)" in log
    code, log = refused(herald_factory(extra=["--partitions", "4", "--repartition"]))
    assert code != 0 and "still holds 1 message(s)" in log
    drain = herald_factory().start()
    wait_until(lambda: len(history(drain, "feed")) == 11, 15, what="the waiting message sequenced")
    drain.stop()
    four = herald_factory(extra=["--partitions", "4", "--repartition"]).start()
    assert not queue_exists(f"{exchange}.history")
    publish(exchange, "feed", [b"12", b"13"], content_type="application/json")
    wait_until(lambda: len(history(four, "feed")) == 13, 15, what="the next messages after repartitioning")
    assert [m["seq"] for m in history(four, "feed")] == list(range(1, 14))
    # Back to one partition the same way: the hash exchange and its queues are removed.
    four.stop()
    back = herald_factory(extra=["--repartition"]).start()
    assert not queue_exists(f"{exchange}.history.0")
    publish(exchange, "feed", [b"14"], content_type="application/json")
    wait_until(lambda: len(history(back, "feed")) == 14, 15, what="a message after going back to one partition")


def held(node):
    return node.metrics().get("herald_partitions_held", 0)


def test_nodes_share_the_partitions_and_a_killed_nodes_move_with_nothing_lost_or_doubled(herald_factory, exchange):
    from conftest import Publisher
    args = ["--partitions", "4", "--history-size", "5000"]
    a = herald_factory(extra=args).start()
    wait_until(lambda: held(a) == 4, 20, what="the only node to hold every partition")
    channels = [f"ticks:{i}" for i in range(4)]
    readers = [Client(a.ws_url(f"channel={c}")) for c in channels]
    for r in readers:
        assert r.recv()["type"] == "subscribed"
    publishers = [Publisher(exchange, c, 4000, rate=200) for c in channels]
    for p in publishers:
        p.start()
    # A second node: the first gives up partitions until each holds its share, 2.
    b = herald_factory(extra=args).start()
    wait_until(lambda: held(a) == 2 and held(b) == 2, 45, interval=0.5, what="two partitions each")
    assert a.metrics()["herald_partition_handoffs_total"] == 2
    for node in (a, b):
        status, body = node.health()
        assert status == 200 and body["partitions_held"] == 2 and body["sequencer"] is True, body
    # kill -9: its partitions move back to the survivor.
    b.kill()
    wait_until(lambda: held(a) == 4, 30, interval=0.5, what="the survivor to take every partition back")
    for p in publishers:
        p.join(60)
        assert p.error is None and p.confirmed == 4000
    for r, c, p in zip(readers, channels, publishers):
        got, _ = r.recv_messages(c, 4000, timeout=60)
        assert [m["seq"] for m in got] == list(range(1, 4001)), f"{c}: not consecutive"
        assert [m["id"] for m in got] == p.ids, f"{c}: a message lost, doubled or reordered"
        r.assert_nothing_follows(0.5)
