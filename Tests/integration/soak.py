"""The soak run behind `scripts/soak MINUTES` (not part of CI): two Herald nodes on a three-node
RabbitMQ cluster (quorum queues) and on Redis with Sentinel, or with `--redis-cluster` on a
three-master Redis Cluster (`--redis-wait-replicas 1` either way), a
publisher with confirms that fails over, and WebSocket followers that resume on the other node.
Every two minutes, at a random moment of the window, one fault: kill -9 of a RabbitMQ node, of the
Redis master (on the cluster: the master of the soak channel's slot), or of a Herald node, each
started again afterwards. At the end every confirmed
message must be stored exactly once under consecutive seqs, no (epoch, seq) may name two
messages anywhere, and every follower must hold everything; the faults survived and the FD and
RSS drift of the Herald node that ran the whole time are printed and written to
test-output/soak.json."""
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from conftest import ROOT, Herald, Publisher, TripleFollower, wait_until  # noqa: E402
from test_rabbitmq_cluster import RabbitCluster  # noqa: E402
from test_redis_cluster import RedisClusterNodes  # noqa: E402
from test_redis_sentinel import SentinelSet  # noqa: E402

CHANNEL = "soak"


def proc_stats(pid):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return fds, rss


class ClusterRedis:
    """The Redis side on a Redis Cluster, with the Sentinel set's interface."""

    def __init__(self):
        self.nodes = RedisClusterNodes()
        self.flags = self.nodes.args()
        self.meta, self.history = f"herald:meta:{{{CHANNEL}}}", f"herald:history:{{{CHANNEL}}}"

    def kill_master(self):
        old = self.nodes.master_of(self.meta)
        self.nodes.kill(old)
        wait_until(lambda: old not in self.nodes.masters() and len(self.nodes.masters()) == 3, 60, what="a replica promoted")
        self.nodes.restart(old)
        wait_until(lambda: "master_link_status:up" in subprocess.run(
            ["redis-cli", "-p", old.split(":")[1], "info", "replication"], capture_output=True, text=True).stdout,
            120, what="the old master back as a replica, in sync")
        return old

    def client(self):
        return self.nodes.client()

    def stop(self):
        self.nodes.stop()


class SentinelRedis:
    def __init__(self):
        self.set = SentinelSet()
        self.flags = [*self.set.flags]
        self.meta, self.history = f"herald:meta:{CHANNEL}", f"herald:history:{CHANNEL}"

    def kill_master(self):
        old = self.set.master_port()
        self.set.kill(old)
        wait_until(lambda: self.set.all_name_a_master_other_than(old), 60, what="a new Redis master")
        self.set.restart(old)
        wait_until(self.set.settled, 120, what="the old master back, a master and a replica in sync")
        return old

    def client(self):
        return self.set.client()

    def stop(self):
        self.set.stop()


def main(minutes, cluster=False):
    rabbit = RabbitCluster()
    redis = ClusterRedis() if cluster else SentinelRedis()
    exchange = "soak" + uuid.uuid4().hex[:8]
    amqp = [a for url in rabbit.urls for a in ("--amqp-url", url)]
    extra = [*amqp, *redis.flags, "--queue-type", "quorum", "--redis-wait-replicas", "1",
             "--history-size", "500000"]
    nodes = [Herald(exchange, "redis://127.0.0.1:6379/0", extra=["--node-id", f"s{i}", *extra]) for i in (1, 2)]
    stop = threading.Event()
    faults = []
    try:
        for h in nodes:
            h.start()
        urls = [h.ws_url() for h in nodes]
        followers = [TripleFollower(urls, CHANNEL, stop=stop, seconds=minutes * 60 + 900, first=i % 2) for i in range(4)]
        for f in followers:
            f.start()
        rate = 100
        pub = Publisher(exchange, CHANNEL, int(rate * 60 * (minutes + 1)), rate=rate, urls=rabbit.urls)
        pub.start()
        time.sleep(10)  # warm-up before the baseline (a duration of the run, not a wait for an event)
        steady = nodes[0]  # never killed: its FD and RSS drift is the one reported
        start_stats = proc_stats(steady.proc.pid)
        deadline = time.time() + minutes * 60
        window = 0
        while time.time() + 120 <= deadline + 1:
            window_start = time.time()
            time.sleep(random.uniform(10, 90))
            kind = random.choice(["rabbitmq", "redis", "herald"])
            at = pub.confirmed
            if kind == "rabbitmq":
                n = random.choice([1, 2, 3])
                rabbit.kill(n)
                time.sleep(15)
                rabbit.restart(n)
                what = f"kill -9 RabbitMQ node {n}"
            elif kind == "redis":
                what = f"kill -9 Redis master {redis.kill_master()}"
            else:
                victim = nodes[1]
                victim.kill()
                time.sleep(5)
                victim.start()
                what = f"kill -9 Herald {victim.port}"
            faults.append({"fault": what, "confirmed_at": at, "t": round(time.time() - (deadline - minutes * 60))})
            print(f"[{faults[-1]['t']:>5} s] {what} at {at} confirmed", flush=True)
            window += 1
            rest = 120 - (time.time() - window_start)
            if rest > 0:
                time.sleep(rest)
        end_stats = proc_stats(steady.proc.pid)
        total = pub.confirmed
        pub.count = total  # stop publishing where it is
        pub.join(60)
        r = redis.client()
        wait_until(lambda: int(r.hget(redis.meta, "seq") or 0) >= total, 300, what="every confirmed message stored")
        stored = [json.loads(x) for x in r.lrange(redis.history, 0, -1)][::-1]
        epoch = r.hget(redis.meta, "epoch")
        epoch = epoch.decode() if isinstance(epoch, bytes) else epoch
        last_id = stored[-1]["id"]
        wait_until(lambda: all(f.triples and f.triples[-1][2] == last_id for f in followers), 120,
                   what="every follower to hold the last message")
        stop.set()
        problems = []
        if pub.error is not None:
            problems.append(f"the publisher gave up: {pub.error!r}")
        if [m["seq"] for m in stored] != list(range(1, len(stored) + 1)):
            problems.append("stored seqs are not consecutive from 1")
        ids = [m["id"] for m in stored]
        if len(set(ids)) != len(ids):
            problems.append(f"{len(ids) - len(set(ids))} messages stored twice")
        missing = set(pub.ids[:total]) - set(ids)
        if missing:
            problems.append(f"{len(missing)} confirmed messages missing")
        seen = {(epoch, m["seq"]): m["id"] for m in stored}
        for f in followers:
            for e, seq, mid in f.triples:
                if seen.setdefault((e, seq), mid) != mid:
                    problems.append(f"({e}, {seq}) names {seen[(e, seq)]} and {mid}")
                    break
        result = {
            "minutes": minutes, "redis": "cluster" if cluster else "sentinel", "faults": faults, "confirmed": total, "stored": len(stored),
            "follower_closes": [f.closes for f in followers],
            "steady_node": {"fds": [start_stats[0], end_stats[0]], "rss_kb": [start_stats[1], end_stats[1]]},
            "problems": problems,
        }
        os.makedirs(os.path.join(ROOT, "test-output"), exist_ok=True)
        with open(os.path.join(ROOT, "test-output", "soak.json"), "w") as out:
            json.dump(result, out, indent=2)
        print(json.dumps({k: v for k, v in result.items() if k != "follower_closes"}, indent=2))
        return 0 if not problems else 1
    finally:
        stop.set()
        for h in nodes:
            h.kill()
        redis.stop()
        rabbit.stop()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--redis-cluster"]
    sys.exit(main(float(args[0]) if args else 30, cluster="--redis-cluster" in sys.argv[1:]))
