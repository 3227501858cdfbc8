"""Herald on a Redis Cluster (issue 35, PROTOCOL.md "Redis Cluster"): three masters with one
replica each (scripts/redis-cluster, created by `redis-cli --cluster create` here and always
stopped), reached with --redis-cluster. Every key of a channel carries the channel's hash tag, so
its store script runs on one shard; live messages go out with SPUBLISH on that shard and each node
SSUBSCRIBEs only to the channels its clients watch. The acceptance run adds the three-node
RabbitMQ cluster and --partitions 8: 200 channels published with confirms while clients read on
every node, kill -9 of the Herald node holding the most partitions, then of a Redis master."""
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
from redis.cluster import RedisCluster

from conftest import ROOT, Client, Publisher, TripleFollower, assert_consecutive, free_ports_at, publish, wait_until
from test_rabbitmq_cluster import rabbit_cluster  # noqa: F401  (the three-node RabbitMQ cluster fixture)

SCRIPT = os.path.join(ROOT, "scripts", "redis-cluster")


class RedisClusterNodes:
    """Six nodes on their own ports (and each port + 10000 for the cluster bus)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="herald-rc-")
        self.base = free_ports_at([*range(6), *range(10000, 10006)], high=32700)
        out = subprocess.run([SCRIPT, "start", self.dir, str(self.base)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        self.nodes = out.stdout.split()
        assert len(self.nodes) == 6, out.stdout

    def args(self):
        """Two seeds, as an operator would give a few."""
        return [a for n in self.nodes[:2] for a in ("--redis-cluster", n)]

    def masters(self):
        out = subprocess.run([SCRIPT, "masters", self.dir], capture_output=True, text=True, timeout=30)
        return out.stdout.split()

    def kill(self, node):
        subprocess.run([SCRIPT, "kill", self.dir, node.split(":")[1]], check=True, timeout=30)

    def restart(self, node):
        subprocess.run([SCRIPT, "restart", self.dir, node.split(":")[1]], check=True, timeout=30)

    def client(self):
        host, port = self.nodes[0].split(":")
        for node in self.nodes:  # the first live one
            host, port = node.split(":")
            try:
                return RedisCluster(host=host, port=int(port), decode_responses=True)
            except Exception:
                continue
        raise AssertionError("no Redis Cluster node answers")

    def master_of(self, key):
        c = self.client()
        node = c.get_node_from_key(key)
        return f"{node.host}:{node.port}"

    def stop(self):
        subprocess.run([SCRIPT, "stop", self.dir], timeout=60)


@pytest.fixture
def redis_cluster():
    c = RedisClusterNodes()
    try:
        yield c
    finally:
        c.stop()


def history(node, channel):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/api/history/{channel}?limit=1000", timeout=5) as r:
        body = json.loads(r.read())
        return body["messages"] if isinstance(body, dict) else body


class ManyPublisher(Publisher):
    """conftest.Publisher (confirms, fails over to the next of `urls`, republishes the
    unconfirmed message with its message_id) over many channels: `per_channel` messages to each,
    round robin."""

    def __init__(self, exchange, channels, per_channel, rate, urls=None):
        self.order = [(ch, f"{ch}#{i}") for i in range(per_channel) for ch in channels]
        super().__init__(exchange, channels[0], len(self.order), rate=rate, urls=urls)

    def _message(self, i):
        channel, mid = self.order[i]
        return channel, json.dumps({"id": mid}).encode(), mid

    def ids_of(self, channel):
        return sorted(mid for ch, mid in self.order[:self.confirmed] if ch == channel)


def test_keys_carry_the_channels_hash_tag_and_live_messages_go_to_the_shard_subscribers_only(
        redis_cluster, herald_factory, exchange):
    """One node on the cluster: a channel's history, meta and de-duplication keys share the
    channel's hash slot (so the store script runs on one shard), the shared keys carry the
    `{herald}` tag, channels spread over the three masters, and a WebSocket client gets history
    then live messages through SSUBSCRIBE on its channel's shard only."""
    from test_admin import admin_node, overview
    h = admin_node(herald_factory, "c1", *redis_cluster.args())
    channels = [f"room:{i}" for i in range(12)]
    for ch in channels:
        publish(exchange, ch, [b"first"], ids=[f"{ch}-1"])
    r = redis_cluster.client()
    wait_until(lambda: all(r.hget(f"herald:meta:{{{ch}}}", "seq") == "1" for ch in channels), 15, what="every channel stored")
    for ch in channels:
        slot = r.keyslot(ch)
        assert {r.keyslot(f"herald:history:{{{ch}}}"), r.keyslot(f"herald:meta:{{{ch}}}"),
                r.keyslot(f"herald:id:{{{ch}}}#{ch}-1")} == {slot}
        assert r.exists(f"herald:id:{{{ch}}}#{ch}-1") == 1
    assert r.keyslot("{herald}:partitions") == r.keyslot("{herald}:nodes") == r.keyslot("herald")
    assert r.get("{herald}:partitions") == "1"
    assert len({redis_cluster.master_of(ch) for ch in channels}) == 3, "twelve channels land on all three masters"
    o = wait_until(lambda: (x := overview(h.admin_port)) and x["redis"]["status"] == "up" and x, 10, what="the overview")
    assert sorted(o["redis"]["cluster_masters"]) == sorted(redis_cluster.masters())

    c = Client(h.ws_url(f"channel={channels[0]}&since=0"))
    sub = c.recv()
    assert sub["type"] == "subscribed" and sub["seq"] == 1, sub
    assert [m["data"] for m in c.recv_messages(channels[0], 1)[0]] == ["first"]
    shard = redis_cluster.master_of(channels[0])
    host, port = shard.split(":")
    wait_until(lambda: subprocess.run(["redis-cli", "-p", port, "pubsub", "shardchannels"], capture_output=True,
                                      text=True).stdout.split() == [f"herald:live:{{{channels[0]}}}"], 10,
               what="the node subscribed to the channel's shard channel on its master")
    for other in redis_cluster.masters():
        if other != shard:
            assert subprocess.run(["redis-cli", "-p", other.split(":")[1], "pubsub", "shardchannels"],
                                  capture_output=True, text=True).stdout.split() == []
    received = h.metrics().get("herald_live_messages_received_total", 0)
    publish(exchange, channels[0], [b"second", b"third"])
    for ch in channels[1:]:
        publish(exchange, ch, [b"unwatched"])
    got, _ = c.recv_messages(channels[0], 2)
    assert [(m["seq"], m["data"]) for m in got] == [(2, "second"), (3, "third")]
    wait_until(lambda: all(r.hget(f"herald:meta:{{{ch}}}", "seq") == "2" for ch in channels[1:]), 15, what="the others stored")
    assert h.metrics()["herald_live_messages_received_total"] - received == 2, "only the watched channel's messages arrive"
    assert h.labeled("herald_redis_cluster_redirects_total") == {'kind="moved"': 0, 'kind="ask"': 0, 'kind="tryagain"': 0}, \
        "a stable cluster read once: every command went straight to its master"
    assert h.metrics()["herald_redis_cluster_map_reads_total"] >= 1
    c.close()


def test_a_broadcast_over_every_shard_is_split_per_slot_and_presence_works(redis_cluster, herald_factory, exchange):
    """A broadcast to channels of every shard is stored (one script call per slot), its id is
    de-duplicated on each channel's shard when it is sent again, and presence (whose keys share
    the `{herald}` tag with the leases its script also writes) lists both members."""
    h = herald_factory(extra=[*redis_cluster.args(), "--presence-channels", "lobby:*", "--api-key", "cluster-key-0123456789"]).start()
    channels = [f"b:{i}" for i in range(20)]
    req = urllib.request.Request(f"http://127.0.0.1:{h.port}/api/broadcast",
                                 data=json.dumps({"channels": channels, "data": {"n": 1}, "id": "bc-1"}).encode(),
                                 headers={"content-type": "application/json", "authorization": "Bearer cluster-key-0123456789"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.loads(resp.read())
    assert sorted((x["channel"], x["seq"], x.get("duplicate", False)) for x in body["results"]) == \
        sorted((ch, 1, False) for ch in channels), body
    with urllib.request.urlopen(req, timeout=10) as resp:
        again = json.loads(resp.read())
    assert sorted((x["channel"], x["seq"], x.get("duplicate", False)) for x in again["results"]) == \
        sorted((ch, 1, True) for ch in channels), again
    assert len({redis_cluster.master_of(ch) for ch in channels}) == 3

    a = Client(h.ws_url("channel=lobby:1&presence=true"))
    b = Client(h.ws_url("channel=lobby:1&presence=true"))

    def members():
        with urllib.request.urlopen(f"http://127.0.0.1:{h.port}/api/presence/lobby:1", timeout=5) as r:
            return json.loads(r.read())["connections"]
    wait_until(lambda: members() == 2, 15, what="both members listed")
    assert redis_cluster.client().hlen("{herald}:presence:lobby:1") == 2
    b.close()
    wait_until(lambda: members() == 1, 15, what="the leave applied")
    a.close()


@pytest.mark.xdist_group("rabbitmq_cluster")
def test_two_hundred_channels_over_three_shards_and_eight_partitions_keep_every_promise_through_kills(
        rabbit_cluster, redis_cluster, herald_factory, exchange):
    """The acceptance run: three Herald nodes with --partitions 8 on the three-node RabbitMQ
    cluster (quorum queues) and the three-master Redis Cluster (--redis-wait-replicas 1), 200
    channels published with confirms while clients read every channel, 198 of them on the first
    two nodes and 2 on the third. Before anything is killed, the third node has received at most
    10 % of the live messages (it hears only its two channels' shard channels). Then kill -9 of
    the Herald node holding the most partitions (they move; its clients resume on another node)
    and kill -9 of a Redis master (its replica is promoted; the old master comes back as a
    replica). Every confirmed message is stored exactly once under consecutive seqs, and every
    client's stream is consecutive from 1 to the end."""
    from test_partitions import held
    amqp = [a for url in rabbit_cluster.urls for a in ("--amqp-url", url)]
    extra = [*amqp, "--queue-type", "quorum", "--partitions", "8", "--history-size", "1000",
             *redis_cluster.args(), "--redis-wait-replicas", "1"]
    nodes = [herald_factory(extra=["--node-id", f"s{i}", *extra]).start() for i in range(3)]
    wait_until(lambda: sum(held(h) for h in nodes) == 8 and max(held(h) for h in nodes) <= 3, 90, interval=0.5,
               what="eight partitions settled at most three a node")
    channels = [f"doc:{i}" for i in range(200)]
    per_channel = 30
    home = [2 if i < 2 else i % 2 for i in range(len(channels))]
    followers = [TripleFollower([nodes[(k + j) % 3].ws_url() for j in range(3)], ch, until_seq=per_channel, seconds=240)
                 for ch, k in zip(channels, home)]
    for f in followers:
        f.start()
    for f in followers:
        assert f.connected.wait(20)
    publisher = ManyPublisher(exchange, channels, per_channel, rate=250, urls=rabbit_cluster.urls)
    publisher.start()
    total = len(publisher.order)

    wait_until(lambda: publisher.confirmed >= total // 4, 60, what="a quarter published")
    # The third node's clients watch 2 of the 200 channels: it hears their shard channels only.
    stored = sum(h.metrics()["herald_messages_in_total"] for h in nodes)
    heard = nodes[2].metrics()["herald_live_messages_received_total"]
    print(f"the node watching 2 of 200 channels received {heard:.0f} of {stored:.0f} live messages")
    assert stored >= 1000 and heard <= 0.10 * stored, (heard, stored)

    victim = max(nodes, key=held)
    survivors = [h for h in nodes if h is not victim]
    print(f"killing the Herald node holding {held(victim)} partitions")
    victim.kill()
    wait_until(lambda: sum(held(h) for h in survivors) == 8, 60, interval=0.5, what="its partitions taken over")

    wait_until(lambda: publisher.confirmed >= total * 6 // 10, 120, what="sixty per cent published")
    shard = redis_cluster.master_of(channels[0])
    redis_cluster.kill(shard)
    wait_until(lambda: len(redis_cluster.masters()) == 3 and shard not in redis_cluster.masters(), 30, interval=0.2,
               what="the dead master's replica promoted")
    redis_cluster.restart(shard)  # back as the new master's replica: --redis-wait-replicas 1 can be met again

    publisher.join(240)
    assert publisher.error is None and publisher.confirmed == total, publisher.error
    reader = survivors[0]
    for ch in channels:
        wait_until(lambda: len(history(reader, ch)) >= per_channel, 60, what=f"{ch} stored")
        messages = history(reader, ch)
        assert_consecutive([m["seq"] for m in messages], start=1, end=per_channel)
        assert sorted(m["id"] for m in messages) == publisher.ids_of(ch), f"{ch}: every confirmed message stored exactly once"
    for ch, f in zip(channels, followers):
        f.join(240)
        assert f.error is None, f"{ch}: {f.error}"
        assert_consecutive(f.seqs, start=1, end=per_channel)
        assert len({e for e, _, _ in f.triples}) == 1, f"{ch}: one epoch throughout"
    # The killed node's clients resumed on another node (a second subscribe, where they left off).
    for f, k in zip(followers, home):
        if nodes[k] is victim:
            assert len(f.subscribed) >= 2 and f.subscribed[-1].get("recovered") is True, f.subscribed
    assert sum(s.metrics().get("herald_redis_reconnects_total", 0) for s in survivors) > 0, "the Redis failover was noticed"
    # Each held batch waits up to a second for its replica: a WAIT that cannot succeed (sent to
    # the old master, back as a replica) must not be repeated in a tight loop.
    waits = [s.metrics().get("herald_redis_replica_waits_total", 0) for s in survivors]
    assert max(waits) < 1000, waits


def cli(node, *args):
    out = subprocess.run(["redis-cli", "-p", node.split(":")[1], *map(str, args)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def move_slot(cluster, slot, source, target):
    """Redis Cluster's resharding of one slot, step by step (what `redis-cli --cluster reshard`
    does): importing and migrating marks, MIGRATE of its keys in batches, then the new owner."""
    source_id, target_id = cli(source, "cluster", "myid"), cli(target, "cluster", "myid")
    assert cli(target, "cluster", "setslot", slot, "importing", source_id) == "OK"
    assert cli(source, "cluster", "setslot", slot, "migrating", target_id) == "OK"
    host, port = target.split(":")
    moved = 0
    while True:
        keys = cli(source, "cluster", "getkeysinslot", slot, 50).split()
        if not keys:
            break
        assert cli(source, "migrate", host, port, "", 0, 5000, "keys", *keys) == "OK"
        moved += len(keys)
        time.sleep(0.05)  # pace the move so that the node's writes meet the slot half-moved
    for node in cluster.masters():
        cli(node, "cluster", "setslot", slot, "node", target_id)
    return moved


def test_a_channels_slot_moved_to_another_master_under_traffic_loses_nothing(redis_cluster, herald_factory, exchange):
    """Resharding while a channel is published to and watched: its slot moves to another master
    key batch by key batch. The node's store scripts follow ASK and MOVED (a script whose keys
    are half-moved is retried), the live subscription follows the slot (Redis drops the shard
    channel on the old owner; the node subscribes again on the new map and repairs the gap),
    and the channel's history and the client's stream are consecutive, each message once."""
    h = herald_factory(extra=[*redis_cluster.args(), "--history-size", "2000"]).start()
    channel = "mv:1"
    follower = TripleFollower([h.ws_url()], channel, until_seq=600, seconds=120)
    follower.start()
    assert follower.connected.wait(10)
    publisher = Publisher(exchange, channel, 600, rate=60)
    publisher.start()
    wait_until(lambda: publisher.confirmed >= 150, 30, what="publishing under way")
    r = redis_cluster.client()
    slot = r.keyslot(f"herald:meta:{{{channel}}}")
    source = redis_cluster.master_of(f"herald:meta:{{{channel}}}")
    target = next(m for m in redis_cluster.masters() if m != source)
    moved = move_slot(redis_cluster, slot, source, target)
    assert moved > 100, "the channel's history, meta and de-duplication keys moved"
    assert redis_cluster.master_of(f"herald:meta:{{{channel}}}") == target
    publisher.join(60)
    assert publisher.error is None and publisher.confirmed == 600
    wait_until(lambda: len(history(h, channel)) >= 600, 30, what="every message stored")
    messages = history(h, channel)
    assert_consecutive([m["seq"] for m in messages], start=1, end=600)
    assert sorted(m["id"] for m in messages) == sorted(publisher.ids)
    follower.join(60)
    assert follower.error is None, follower.error
    assert_consecutive(follower.seqs, start=1, end=600)
    wait_until(lambda: cli(target, "pubsub", "shardchannels").split() == [f"herald:live:{{{channel}}}"], 10,
               what="the live subscription on the slot's new master")
    assert cli(source, "pubsub", "shardchannels") == ""
    redirects = h.labeled("herald_redis_cluster_redirects_total")
    assert sum(redirects.values()) >= 1, redirects
    assert h.metrics()["herald_redis_cluster_shard_channel_losses_total"] >= 1, "Redis dropped the shard channel on the old owner"


def replica_of(master):
    """The replica of `master` (HOST:PORT) as the cluster lists it."""
    master_id = cli(master, "cluster", "myid")
    for line in cli(master, "cluster", "nodes").splitlines():
        fields = line.split()
        if "slave" in fields[2] and fields[3] == master_id:
            return fields[1].split("@")[0]
    raise AssertionError(f"{master} has no replica")


def test_a_promoted_replica_that_missed_writes_starts_a_new_epoch_and_every_client_is_told(redis_cluster, herald_factory,
                                                                                          exchange):
    """The epoch rule on a shard: the channel's replica is cut off from its master (stopped
    until the master drops it), the master stores more, then dies; the replica is promoted
    without those writes. Herald finds the shard behind what it handed out and starts the channel
    over in a new epoch: no (epoch, seq) names two messages, in the clients or in Redis, and
    every client moves to the new epoch through a subscribe that says it did not recover."""
    h = herald_factory(extra=[*redis_cluster.args(), "--history-size", "1000"]).start()
    channel = "lag:1"
    key = f"herald:meta:{{{channel}}}"
    master = redis_cluster.master_of(key)
    replica = replica_of(master)
    followers = [TripleFollower([h.ws_url()], channel, until_seq=None, seconds=90) for _ in range(2)]
    stop = threading.Event()
    for f in followers:
        f.stop = stop
        f.start()
    for f in followers:
        assert f.connected.wait(10)
    epoch = followers[0].subscribed[0]["epoch"]

    def seq(node):  # READONLY first: a replica answers reads of its slots only then
        import redis
        host, port = node.split(":")
        c = redis.Redis(host=host, port=int(port), decode_responses=True)
        try:
            return int(c.pipeline(transaction=False).execute_command("READONLY").hget(key, "seq").execute()[1] or 0)
        finally:
            c.close()
    publish(exchange, channel, [f"a{i}".encode() for i in range(10)])
    wait_until(lambda: seq(master) == 10 and seq(replica) == 10, 15, what="the first ten stored and replicated")
    # Cut the replica off: stopped, it stops acknowledging, and the master drops it after
    # repl-timeout; what the master stores after that never reaches it.
    assert cli(master, "config", "set", "repl-timeout", "2") == "OK"
    replica_pid = int(open(os.path.join(redis_cluster.dir, replica.split(":")[1], "pid")).read())
    os.kill(replica_pid, 19)  # SIGSTOP
    try:
        wait_until(lambda: "connected_slaves:0" in cli(master, "info", "replication"), 20, interval=0.2,
                   what="the master to drop its stopped replica")
        publish(exchange, channel, [f"b{i}".encode() for i in range(10)])
        wait_until(lambda: seq(master) == 20, 15, what="ten more stored on the master only")
        redis_cluster.kill(master)
    finally:
        os.kill(replica_pid, 18)  # SIGCONT
    wait_until(lambda: master not in redis_cluster.masters() and replica in redis_cluster.masters(), 40, interval=0.2,
               what="the lagging replica promoted")
    assert seq(replica) == 10, "the promoted replica missed the last ten"
    publish(exchange, channel, [f"c{i}".encode() for i in range(5)])
    r = redis_cluster.client()
    wait_until(lambda: r.hget(key, "epoch") != epoch and int(r.hget(key, "seq") or 0) == 5, 40,
               what="the channel started over in a new epoch")
    final_epoch = r.hget(key, "epoch")
    wait_until(lambda: all(f.triples and f.triples[-1][:2] == (final_epoch, 5) for f in followers), 40,
               what="every client in the new epoch")
    stop.set()
    for f in followers:
        f.join(20)
        assert f.error is None, f.error
    seen = {}
    for f in followers:
        for e, s, mid in f.triples:
            assert seen.setdefault((e, s), mid) == mid, f"({e}, {s}) is both {seen[(e, s)]} and {mid}"
    stored = [json.loads(x) for x in r.lrange(f"herald:history:{{{channel}}}", 0, -1)][::-1]
    assert [m["seq"] for m in stored] == [1, 2, 3, 4, 5] and [m["data"] for m in stored] == [f"c{i}" for i in range(5)]
    for m in stored:
        assert seen.setdefault((final_epoch, m["seq"]), m["id"]) == m["id"]
    assert h.metrics()["herald_redis_lost_writes_epoch_resets_total"] == 1
    for f in followers:
        assert [s for e, s, _ in f.triples if e == epoch] == list(range(1, 21))
        told = [sub for sub in f.subscribed[1:] if sub["epoch"] == final_epoch]
        assert told and told[0].get("recovered") is False, f.subscribed


@pytest.mark.parametrize("args,message", [
    (["--redis-cluster", "127.0.0.1"], "--redis-cluster 127.0.0.1: expected HOST:PORT"),
    (["--redis-cluster", "127.0.0.1:7000", "--redis-sentinel", "127.0.0.1:26379"],
     "--redis-cluster and --redis-sentinel exclude each other"),
    (["--redis-cluster", "127.0.0.1:7000", "--redis-prefix", "{h}"], "--redis-prefix must not contain { or } with --redis-cluster"),
])
def test_bad_cluster_options_are_refused_with_the_reason(args, message):
    from conftest import HERALD_BIN
    out = subprocess.run([HERALD_BIN, "serve", *args], capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_a_node_that_reaches_no_cluster_node_says_so_and_starts_when_one_answers(herald_factory, exchange):
    """Seeds that do not answer (yet): the node logs which ones failed and why, reports Redis
    down, and is serving once the cluster is up."""
    base = free_ports_at([*range(6), *range(10000, 10006)], high=32700)
    h = herald_factory(extra=["--redis-cluster", f"127.0.0.1:{base}", "--redis-cluster", f"127.0.0.1:{base + 1}"]).start(wait_healthy=False)
    wait_until(lambda: "no Redis Cluster node gave a slot map" in h.log(), 20, what="the reason in the log")
    assert f"127.0.0.1:{base}" in h.log() and f"127.0.0.1:{base + 1}" in h.log()
    d = tempfile.mkdtemp(prefix="herald-rc-")
    out = subprocess.run([SCRIPT, "start", d, str(base)], capture_output=True, text=True, timeout=120)
    try:
        assert out.returncode == 0, out.stderr
        wait_until(lambda: h.health()[0] == 200, 30, what="the node healthy once the cluster answers")
        publish(exchange, "late:1", [b"hello"])

        def stored():
            try:
                return [m["data"] for m in history(h, "late:1")] == ["hello"]
            except urllib.error.HTTPError:  # 503 while this reader's connection is still on its way
                return False
        wait_until(stored, 15, what="stored on the cluster")
    finally:
        subprocess.run([SCRIPT, "stop", d], timeout=60)
