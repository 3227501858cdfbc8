"""Herald on a three-node RabbitMQ cluster with quorum queues (scripts/rabbitmq-cluster, on its
own ports, started and always stopped by this module): kill -9 of the node that leads the
history queue, then of the node the sequencer is connected to, while a publisher that itself
fails over sends with confirms. Nothing confirmed is lost, each message is stored once under
consecutive seqs, and every WebSocket client sees consecutive seqs (or a 4008 and a clean resume).
The longest sequencing pause is printed and written to test-output/cluster.json."""
import json
import os
import re
import subprocess
import tempfile

import pytest

from conftest import ROOT, Publisher, assert_consecutive, free_ports_at, wait_until
from test_cluster import Follower, report, stored

SCRIPT = os.path.join(ROOT, "scripts", "rabbitmq-cluster")
# One cluster for the module: its tests run on one pytest-xdist worker (scripts/test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("rabbitmq_cluster")


class RabbitCluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="herald-rmq-")
        self.base = free_ports_at([0, 1, 2, 101, 102, 103])
        out = subprocess.run([SCRIPT, "start", self.dir, str(self.base)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        self.urls = out.stdout.split()
        assert len(self.urls) == 3, out.stdout
        self.down = set()

    def node(self, n):
        return subprocess.run([SCRIPT, "node", self.dir, str(n)], capture_output=True, text=True, check=True).stdout.strip()

    def number_of_port(self, port):
        return port - self.base + 1

    def kill(self, n):
        subprocess.run([SCRIPT, "kill", self.dir, str(n)], check=True, timeout=30)
        self.down.add(n)

    def restart(self, n):
        subprocess.run([SCRIPT, "restart", self.dir, str(n)], check=True, timeout=180)
        self.down.discard(n)

    def ctl(self, *args):
        """rabbitmqctl on a node that is up."""
        n = next(i for i in (1, 2, 3) if i not in self.down)
        return subprocess.run(["rabbitmqctl", "-q", "-n", self.node(n), *args], capture_output=True, text=True, timeout=60)

    def leader_of(self, queue):
        out = self.ctl("list_queues", "name", "leader", "--formatter", "json")
        assert out.returncode == 0, out.stderr
        rows = {q["name"]: q["leader"] for q in json.loads(out.stdout)}
        return next(n for n in (1, 2, 3) if self.node(n) == rows[queue])

    def stop(self):
        subprocess.run([SCRIPT, "stop", self.dir], timeout=180)


@pytest.fixture(scope="module")
def rabbit_cluster():
    c = RabbitCluster()
    try:
        yield c
    finally:
        c.stop()


def sequencer_node(herald, cluster):
    """The RabbitMQ node (1..3) the sequencer's connection is on, from the last line that says so."""
    lines = [l for l in herald.log().splitlines() if "RabbitMQ (sequencer)" in l and "node=127.0.0.1:" in l]
    assert lines, "the sequencer names its RabbitMQ node"
    return cluster.number_of_port(int(re.search(r"node=127\.0\.0\.1:(\d+)", lines[-1]).group(1)))


def longest_pause_ms(history):
    """The longest wait between two consecutive stored messages (their `time` is set when sequenced)."""
    times = [m["time"] for m in history]
    return max(b - a for a, b in zip(times, times[1:]))


def test_kill_9_of_the_queue_leader_then_of_the_sequencers_node_loses_nothing(rabbit_cluster, herald_factory,
                                                                              exchange, redis_server):
    c = rabbit_cluster
    amqp = [a for url in c.urls for a in ("--amqp-url", url)]
    extra = [*amqp, "--queue-type", "quorum", "--history-size", "20000"]
    n1 = herald_factory(extra=["--node-id", "n1", *extra]).start()
    wait_until(lambda: n1.health()[1].get("sequencer") is True, 30, what="n1 to sequence")
    n2 = herald_factory(extra=["--node-id", "n2", *extra]).start()
    total = 12000
    followers = [Follower([h.ws_url()], "ha", total) for h in (n1, n2) for _ in range(2)]
    for f in followers:
        f.start()
    for f in followers:
        assert f.connected.wait(10)
    # The publisher starts on the node that leads the history queue, so the first kill makes it
    # fail over too.
    leader = c.leader_of(f"{exchange}.history")
    urls = c.urls[leader - 1:] + c.urls[:leader - 1]
    pub = Publisher(exchange, "ha", total, rate=1000, urls=urls)
    pub.start()

    wait_until(lambda: pub.confirmed > 3000, 60, what="publishing to get going")
    c.kill(leader)
    print(f"killed RabbitMQ node {leader} (history queue leader) at {pub.confirmed} confirmed")
    wait_until(lambda: pub.confirmed > 6000, 90, what="publishing after the leader's death")
    c.restart(leader)  # a majority of three must stay up for the second kill
    wait_until(lambda: pub.confirmed > 7000, 90, what="publishing after the restart")
    sequencing = n1 if n1.health()[1].get("sequencer") else n2
    target = sequencer_node(sequencing, c)
    c.kill(target)
    print(f"killed RabbitMQ node {target} (the sequencer's) at {pub.confirmed} confirmed")
    pub.join(180)
    assert pub.error is None and pub.confirmed == total, pub.error
    assert pub.failovers >= 1, "the publisher lost its node and moved to another"

    r = redis_server.client()
    wait_until(lambda: r.hget("herald:meta:ha", "seq") and int(r.hget("herald:meta:ha", "seq")) >= total, 90,
               what="every confirmed message stored")
    history = stored(redis_server, "ha")
    assert_consecutive([m["seq"] for m in history], start=1, end=total)
    assert sorted(m["id"] for m in history) == sorted(pub.ids), "every confirmed message stored exactly once"
    for f in followers:
        f.join(120)
        assert f.error is None, f.error
        assert_consecutive(f.seqs, start=1, end=total)
        assert all(code == 4008 for code in f.closes), f.closes
        assert all(f.ids[m["seq"]] == m["id"] for m in history), "a client's message at a seq is the stored one"
    pause = longest_pause_ms(history)
    print(f"longest sequencing pause: {pause} ms; publisher failovers: {pub.failovers}")
    report("rabbitmq_node_loss_longest_pause_ms", pause)
    c.restart(target)


def test_eight_partitions_over_three_nodes_settle_and_a_killed_nodes_move_with_nothing_lost(rabbit_cluster, herald_factory,
                                                                                             exchange, redis_server):
    """Issue 35's partitions on the three-node RabbitMQ cluster: --partitions 8, quorum queues,
    three Herald nodes. The partitions settle at no more than three a node; the node holding the
    most is killed with -9 under confirmed publishing on 8 channels, its partitions move to the
    others, and every confirmed message is stored once under consecutive seqs, seen by clients
    on every node (a client of the killed node resumes on another)."""
    from test_partitions import held
    c = rabbit_cluster
    amqp = [a for url in c.urls for a in ("--amqp-url", url)]
    extra = [*amqp, "--queue-type", "quorum", "--partitions", "8", "--history-size", "5000"]
    nodes = [herald_factory(extra=["--node-id", f"p{i}", *extra]).start() for i in range(3)]
    wait_until(lambda: sum(held(h) for h in nodes) == 8 and max(held(h) for h in nodes) <= 3, 90, interval=0.5,
               what="eight partitions settled at most three a node")
    channels = [f"part:{i}" for i in range(8)]
    total = 1500
    followers = [Follower([nodes[i % 3].ws_url(), nodes[(i + 1) % 3].ws_url()], ch, total) for i, ch in enumerate(channels)]
    for f in followers:
        f.start()
    for f in followers:
        assert f.connected.wait(10)
    publishers = [Publisher(exchange, ch, total, rate=150, urls=c.urls) for ch in channels]
    for p in publishers:
        p.start()
    wait_until(lambda: min(p.confirmed for p in publishers) > 300, 60, what="publishing to get going")
    victim = max(nodes, key=held)
    survivors = [h for h in nodes if h is not victim]
    before = held(victim)
    victim.kill()
    print(f"killed the Herald node holding {before} partitions")
    wait_until(lambda: sum(held(h) for h in survivors) == 8, 30, interval=0.5, what="its partitions taken over")
    for p in publishers:
        p.join(120)
        assert p.error is None and p.confirmed == total, p.error
    for ch, p in zip(channels, publishers):
        r = redis_server.client()
        wait_until(lambda: r.hget(f"herald:meta:{ch}", "seq") and int(r.hget(f"herald:meta:{ch}", "seq")) >= total, 60,
                   what=f"{ch} stored")
        history = stored(redis_server, ch)
        assert_consecutive([m["seq"] for m in history], start=1, end=total)
        assert sorted(m["id"] for m in history) == sorted(p.ids), f"{ch}: every confirmed message stored exactly once"
    for f in followers:
        f.join(120)
        assert f.error is None, f.error
        assert_consecutive(f.seqs, start=1, end=total)
    # Settling is eventual: the registry counts the killed node live for up to 5 s, and a node
    # gives up at most one partition per 5 s, so a survivor may hold 5 for a while.
    wait_until(lambda: sum(held(h) for h in survivors) == 8 and max(held(h) for h in survivors) <= 4, 60, interval=0.5,
               what="the survivors settled at four partitions each")
