"""Herald on Redis with Sentinel (scripts/redis-sentinel: a master, a replica and three sentinels on
their own ports, started and always stopped here): kill -9 of the master while publishing, three
times; the same with a lagging replica and no replica wait; and a master demoted under Herald.
Nothing confirmed is lost where Herald waits for a replica, and nowhere does one
(channel, epoch, seq) name two different messages."""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest
import redis as redislib
from websockets.exceptions import ConnectionClosed

from conftest import ROOT, Client, Publisher, TripleFollower, assert_consecutive, free_ports_at, publish, wait_until
from tcpproxy import TCPProxy
from test_cluster import Follower, report

SCRIPT = os.path.join(ROOT, "scripts", "redis-sentinel")
MASTER_NAME = "herald"


class SentinelSet:
    def __init__(self, upstream=None):
        self.dir = tempfile.mkdtemp(prefix="herald-sentinel-")
        self.base = free_ports_at([0, 1, 10, 11, 12])
        args = [SCRIPT, "start", self.dir, str(self.base)] + ([str(upstream(self.base))] if upstream else [])
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        self.sentinels = out.stdout.split()
        assert len(self.sentinels) == 3, out.stdout

    @property
    def flags(self):
        return [a for s in self.sentinels for a in ("--redis-sentinel", s)] + ["--redis-master", MASTER_NAME]

    def named_masters(self):
        """The master port each sentinel names (None where one does not answer)."""
        ports = []
        for s in self.sentinels:
            try:
                r = redislib.Redis(host="127.0.0.1", port=int(s.split(":")[1]), socket_timeout=2)
                ports.append(int(r.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)[1]))
            except Exception:
                ports.append(None)
        return ports

    def all_name_a_master_other_than(self, old):
        """Every sentinel names the new master: before the old one comes back, or a sentinel
        still on the old configuration could find it sane and turn the failover back."""
        ports = self.named_masters()
        return all(p is not None and p != old for p in ports)

    def events(self):
        """The failover events of every sentinel's log, for a failure message."""
        marks = ("switch-master", "convert-to-slave", "failover", "config-update", "odown", "sdown")
        lines = []
        for s in self.sentinels:
            path = os.path.join(self.dir, s.split(":")[1], "log")
            try:
                with open(path) as f:
                    lines += [f"{s} {l.rstrip()}" for l in f if any(m in l for m in marks)]
            except OSError:
                pass
        return "\n".join(lines)

    def master_port(self):
        for s in self.sentinels:
            try:
                r = redislib.Redis(host="127.0.0.1", port=int(s.split(":")[1]), socket_timeout=2)
                host, port = r.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
                return int(port)
            except Exception:
                continue
        raise AssertionError("no sentinel answers")

    def client(self, port=None):
        return redislib.Redis(host="127.0.0.1", port=port or self.master_port(), socket_timeout=5)

    def role(self, port):
        try:
            return self.client(port).execute_command("ROLE")[0].decode()
        except Exception:
            return None

    def kill(self, port):
        subprocess.run([SCRIPT, "kill", self.dir, str(port)], check=True, timeout=30)

    def restart(self, port):
        subprocess.run([SCRIPT, "restart", self.dir, str(port)], check=True, timeout=60)

    def settled(self):
        """The set is whole again, whichever node is master: every sentinel names the same
        master, it says it is one, and the other node replicates from it with its link up. (A
        failover can be turned back: a sentinel that misses the new master's replies for the
        down-after time fails over again, to the old master if it is back.)"""
        ports = self.named_masters()
        if None in ports or len(set(ports)) != 1:
            return None
        master = ports[0]
        other = self.base + 1 if master == self.base else self.base
        if self.role(master) != "master":
            return None
        try:
            info = self.client(other).info("replication")
        except Exception:
            return None
        if info.get("role") == "slave" and info.get("master_link_status") == "up" and info.get("master_port") == master:
            return master
        return None

    def stop(self):
        # The logs of every Redis and sentinel stay in test-output, for a failure to be read.
        keep = os.path.join(ROOT, "test-output", f"sentinel-set-{self.base}")
        for port in os.listdir(self.dir) if os.path.isdir(self.dir) else []:
            log = os.path.join(self.dir, port, "log")
            if os.path.isfile(log):
                os.makedirs(keep, exist_ok=True)
                shutil.copy(log, os.path.join(keep, f"{port}.log"))
        subprocess.run([SCRIPT, "stop", self.dir], timeout=60)


@pytest.fixture
def sentinels():
    s = SentinelSet()
    try:
        yield s
    finally:
        s.stop()


def history(client, channel):
    return [json.loads(x) for x in client.lrange(f"herald:history:{channel}", 0, -1)][::-1]


def longest_pause_ms(frames):
    times = [m["time"] for m in frames]
    return max(b - a for a, b in zip(times, times[1:]))


def kill_master_and_wait_for_the_new_one(s):
    old = s.master_port()
    s.kill(old)
    started = time.time()
    wait_until(lambda: s.all_name_a_master_other_than(old), 30, what="the sentinels to promote the replica")
    promoted = time.time() - started
    s.restart(old)
    try:
        wait_until(s.settled, 60, what="the old master to rejoin, a master and a replica in sync")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{s.events()}") from None
    return old, promoted


def test_kill_9_of_the_master_three_times_with_a_replica_wait_loses_nothing(sentinels, herald_factory, exchange):
    s = sentinels
    h = herald_factory(extra=[*s.flags, "--redis-wait-replicas", "1", "--history-size", "20000"]).start()
    total = 6000
    followers = [Follower([h.ws_url()], "sent", total) for _ in range(3)]
    for f in followers:
        f.start()
    for f in followers:
        assert f.connected.wait(10)
    epoch = followers[0].epoch
    pub = Publisher(exchange, "sent", total, rate=300)
    pub.start()
    promotions = []
    for round_ in range(3):
        wait_until(lambda: int(s.client().hget("herald:meta:sent", "seq") or 0) >= 1000 * (round_ + 1), 90,
                   what=f"sequencing to progress before kill {round_ + 1}")
        old, promoted = kill_master_and_wait_for_the_new_one(s)
        promotions.append(round(promoted, 2))
        print(f"kill {round_ + 1}: master {old} killed, replica promoted after {promoted:.1f} s")
    pub.join(180)
    assert pub.error is None and pub.confirmed == total
    wait_until(lambda: int(s.client().hget("herald:meta:sent", "seq") or 0) >= total, 120,
               what="every confirmed message stored on the last master")
    stored = history(s.client(), "sent")
    assert s.client().hget("herald:meta:sent", "epoch").decode() == epoch, "nothing was lost, so no new epoch"
    assert_consecutive([m["seq"] for m in stored], start=1, end=total)
    assert sorted(m["id"] for m in stored) == sorted(pub.ids), "every confirmed message stored exactly once"
    for f in followers:
        f.join(120)
        assert f.error is None, f.error
        assert_consecutive(f.seqs, start=1, end=total)
        assert all(f.ids[m["seq"]] == m["id"] for m in stored), "one message per (channel, epoch, seq)"
    pause = longest_pause_ms(stored)
    print(f"longest sequencing pause: {pause} ms (promotions after {promotions} s)")
    report("redis_master_loss_longest_pause_ms", pause)
    assert h.metrics()["herald_redis_master_switches_total"] >= 3


@pytest.mark.parametrize("replica", ["lagging", "empty"])
def test_a_lagging_replica_promoted_without_a_wait_loses_writes_and_every_client_is_told(herald_factory, exchange, replica):
    """A replica behind the master (lagging), or one that has nothing (empty: cut off since it
    synced an empty master), is promoted: the channel starts a new epoch and every client is told
    (`recovered: false`), never a seq handed out twice."""
    proxy_box = {}

    def upstream(base):  # the replica replicates through a proxy the test can pause
        proxy_box["p"] = TCPProxy(base)
        return proxy_box["p"].port

    s = SentinelSet(upstream=upstream)
    proxy = proxy_box["p"]
    try:
        h = herald_factory(extra=[*s.flags, "--history-size", "20000"]).start()
        total = 3000
        pub = Publisher(exchange, "lag", total, rate=300)
        followers = [TripleFollower(h.ws_url(), "lag", pub.ids[-1]) for _ in range(3)]
        for f in followers:
            f.start()
        for f in followers:
            assert f.connected.wait(10)
        epoch = followers[0].subscribed[0]["epoch"]
        old = s.master_port()
        if replica == "empty":
            proxy.pause()  # the replica keeps what it synced: nothing
        pub.start()
        wait_until(lambda: int(s.client().hget("herald:meta:lag", "seq") or 0) >= 600, 60, what="sequencing to progress")
        if replica == "lagging":
            proxy.pause()  # from here the master's writes stop reaching the replica
        before = int(s.client(old).hget("herald:meta:lag", "seq"))
        wait_until(lambda: int(s.client(old).hget("herald:meta:lag", "seq")) >= before + 300, 30,
                   what="writes the replica does not get")
        s.kill(old)
        wait_until(lambda: s.all_name_a_master_other_than(old), 30, what="the sentinels to promote the lagging replica")
        proxy.close()
        s.restart(old)
        pub.join(180)
        assert pub.error is None and pub.confirmed == total
        for f in followers:
            f.join(150)
            assert f.error is None, f.error
        new = s.client()
        # No (epoch, seq) names two messages anywhere: in any client, or between a client and Redis.
        seen = {}
        for f in followers:
            for e, seq, mid in f.triples:
                assert seen.setdefault((e, seq), mid) == mid, f"({e}, {seq}) is both {seen[(e, seq)]} and {mid}"
        final_epoch = new.hget("herald:meta:lag", "epoch").decode()
        for m in history(new, "lag"):
            assert seen.setdefault((final_epoch, m["seq"]), m["id"]) == m["id"]
        assert h.metrics()["herald_redis_lost_writes_epoch_resets_total"] >= 1, "the promoted replica was behind"
        # The promoted replica's epoch is a new one; only if the sentinels turned the failover
        # back to the old master (which lost nothing: kill -9 keeps what its kernel had) may
        # the first epoch go on there.
        assert final_epoch != epoch or wait_until(s.settled, 60, what="a settled set") == old, s.events()
        # Every client was told: its feed moved to the new epoch through a subscribe that said
        # it did not recover (never a silent jump within one epoch).
        for f in followers:
            epochs = [sub["epoch"] for sub in f.subscribed]
            assert epochs[0] == epoch and epochs[-1] == final_epoch, epochs
            told = [sub for sub in f.subscribed[1:] if sub["epoch"] != epoch]
            assert told and told[0]["recovered"] is False, f.subscribed
            seqs_by_epoch = {}
            for e, seq, _ in f.triples:
                seqs_by_epoch.setdefault(e, []).append(seq)
            for e, seqs in seqs_by_epoch.items():
                assert seqs == sorted(set(seqs)), f"seqs of epoch {e} repeat or go back"
    finally:
        proxy.close()
        s.stop()


def test_a_master_demoted_under_herald_is_left_for_the_new_one_without_a_restart(sentinels, herald_factory, exchange):
    s = sentinels
    h = herald_factory(extra=s.flags).start()
    pid = h.proc.pid
    publish(exchange, "demote", [f"a{i}".encode() for i in range(50)])
    wait_until(lambda: s.client().hget("herald:meta:demote", "seq") == b"50", 20, what="50 stored")
    old = s.master_port()
    wait_until(lambda: s.client(s.base + 1).hget("herald:meta:demote", "seq") == b"50", 20, what="the replica to hold the 50")
    s.client(s.base + 10).execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
    wait_until(lambda: s.master_port() != old and s.role(old) == "slave", 30, what="the master demoted to a replica")
    publish(exchange, "demote", [f"b{i}".encode() for i in range(50)])
    wait_until(lambda: s.client().hget("herald:meta:demote", "seq") == b"100", 30, what="the next 50 on the new master")
    stored = history(s.client(), "demote")
    assert [m["seq"] for m in stored] == list(range(1, 101))
    assert [m["data"] for m in stored] == [f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)]
    assert h.proc.pid == pid and h.proc.poll() is None
    assert h.health()[0] == 200
