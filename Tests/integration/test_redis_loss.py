"""Redis that comes back behind: a crash with `appendfsync everysec`, an RDB snapshot restored, a
replica that lagged. Herald must never hand out a (channel, epoch, seq) again for a different
message: the channels affected start a new epoch and every client is told."""
import glob
import json
import os

import pytest

from websockets.exceptions import ConnectionClosed

from conftest import Client, publish, wait_until


def frames_until_closed(c, timeout=20):
    """Every frame up to the close, and the close code."""
    frames = list(c.pending)
    c.pending = []
    try:
        while True:
            raw = c.ws.recv(timeout=timeout)
            frames.extend(json.loads(line) for line in raw.split("\n"))
    except ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None


def stored(r, channel):
    """(seq, id) of every frame Redis holds for the channel, oldest first."""
    return [(f["seq"], f["id"]) for f in map(json.loads, reversed(r.lrange(f"herald:history:{channel}", 0, -1)))]


def test_redis_restored_three_writes_behind_starts_a_new_epoch(herald, exchange, redis_server):
    # The hazard of the HA issue, exactly: 10 messages, Redis set 3 writes behind, 5 more.
    r = redis_server.client()
    live = Client(herald.ws_url("channel=news"))
    sub = live.recv()
    epoch = sub["epoch"]
    ids = [f"m{i}" for i in range(1, 16)]
    publish(exchange, "news", [i.encode() for i in ids[:7]], ids=ids[:7])
    wait_until(lambda: r.hget("herald:meta:news", "seq") == b"7", what="7 stored")
    r.save()  # the snapshot Redis will come back from
    publish(exchange, "news", [i.encode() for i in ids[7:10]], ids=ids[7:10])
    got, _ = live.recv_messages("news", 10)
    assert [(m["seq"], m["id"]) for m in got] == [(n, f"m{n}") for n in range(1, 11)]

    redis_server.kill()
    redis_server.start()
    assert r.hget("herald:meta:news", "seq") == b"7" and r.hget("herald:meta:news", "epoch") == epoch.encode()

    publish(exchange, "news", [i.encode() for i in ids[10:]], ids=ids[10:])
    # The connected client is told to resume (4008): it never gets m11 under a seq it already has.
    frames, code = frames_until_closed(live)
    assert code == 4008, frames
    assert [f for f in frames if f.get("type") == "message"] == []

    # A client resuming from seq 10 of the old epoch is told it did not recover, and gets the
    # new epoch's messages from seq 1.
    resumed = Client(herald.ws_url(f"channel=news&since=10&epoch={epoch}"))
    sub = resumed.recv()
    assert sub["epoch"] != epoch
    assert (sub["recovered"], sub["missed"], sub["seq"], sub["replay"]) == (False, None, 5, 5)
    msgs, _ = resumed.recv_messages("news", 5)
    assert [(m["seq"], m["id"]) for m in msgs] == [(n, f"m{n + 10}") for n in range(1, 6)]
    resumed.assert_nothing_follows()

    # Redis holds the new epoch alone, consecutive from 1; nothing of the old one mixed in.
    assert r.hget("herald:meta:news", "epoch") == sub["epoch"].encode()
    assert stored(r, "news") == [(n, f"m{n + 10}") for n in range(1, 6)]
    assert herald.metrics().get("herald_redis_lost_writes_epoch_resets_total") == 1
    line = next(l for l in herald.log().splitlines() if "Redis lost writes" in l)
    assert "redis_seq=7" in line and "seen_seq=10" in line, line
    resumed.close()


def test_redis_back_in_an_epoch_herald_had_left_is_checked_against_that_epochs_seqs(herald, exchange, redis_server):
    # Redis goes back to an epoch Herald has already moved on from (a Sentinel failover turned
    # back, a snapshot restored twice): e1 handed out seqs 1..10, a snapshot at 7 brought e2,
    # and then the same snapshot (e1 at 7) comes back. Counting on in e1 would give 8, 9, 10
    # again to other messages; Herald must remember e1's seqs, not only e2's.
    r = redis_server.client()
    snapshot = os.path.join(redis_server.dir, "dump.rdb")
    publish(exchange, "news", [f"m{i}".encode() for i in range(1, 8)], ids=[f"m{i}" for i in range(1, 8)])
    wait_until(lambda: r.hget("herald:meta:news", "seq") == b"7", what="7 stored")
    e1 = r.hget("herald:meta:news", "epoch").decode()
    r.save()
    with open(snapshot, "rb") as f:
        e1_at_7 = f.read()
    publish(exchange, "news", [f"m{i}".encode() for i in range(8, 11)], ids=[f"m{i}" for i in range(8, 11)])
    wait_until(lambda: r.hget("herald:meta:news", "seq") == b"10", what="10 stored")

    redis_server.kill()
    redis_server.start()  # e1 at 7: behind, so e2 starts
    publish(exchange, "news", [b"n1", b"n2"], ids=["n1", "n2"])
    wait_until(lambda: len(stored(r, "news")) == 2, what="e2's messages")
    e2 = r.hget("herald:meta:news", "epoch").decode()
    assert e2 != e1 and stored(r, "news") == [(1, "n1"), (2, "n2")]

    redis_server.kill()
    with open(snapshot, "wb") as f:
        f.write(e1_at_7)
    redis_server.start()  # e1 at 7 once more
    assert r.hget("herald:meta:news", "epoch").decode() == e1 and r.hget("herald:meta:news", "seq") == b"7"
    publish(exchange, "news", [b"k1"], ids=["k1"])
    wait_until(lambda: stored(r, "news") == [(1, "k1")], what="k1 to start a third epoch")
    e3 = r.hget("herald:meta:news", "epoch").decode()
    assert e3 not in (e1, e2)
    assert herald.metrics().get("herald_redis_lost_writes_epoch_resets_total") == 2
    line = [l for l in herald.log().splitlines() if "Redis lost writes" in l][-1]
    assert f"old_epoch={e1}" in line and "redis_seq=7" in line and "seen_seq=10" in line, line


def test_a_message_redelivered_after_the_loss_is_stored_again_in_the_new_epoch(herald, exchange, redis_server):
    # m3's id key survives in the snapshot (it points at seq 3 of the old epoch); when m3 is
    # published again after the loss it must not come back as "seq 3" of the new epoch.
    r = redis_server.client()
    publish(exchange, "news", [b"m1", b"m2", b"m3"], ids=["m1", "m2", "m3"])
    wait_until(lambda: r.hget("herald:meta:news", "seq") == b"3", what="3 stored")
    r.save()
    publish(exchange, "news", [b"m4"], ids=["m4"])
    wait_until(lambda: r.hget("herald:meta:news", "seq") == b"4", what="4 stored")
    redis_server.kill()
    redis_server.start()
    publish(exchange, "news", [b"m5", b"m3"], ids=["m5", "m3"])
    wait_until(lambda: len(stored(r, "news")) == 2, what="the new epoch's messages")
    assert stored(r, "news") == [(1, "m5"), (2, "m3")]
    c = Client(herald.ws_url("channel=news"))
    sub = c.recv()
    msgs, _ = c.recv_messages("news", sub["replay"])
    assert [(m["seq"], m["id"]) for m in msgs] == [(1, "m5"), (2, "m3")]
    c.close()


@pytest.mark.parametrize("crash", ["process", "machine"])
def test_redis_killed_mid_drain_with_appendfsync_everysec_never_reuses_a_seq(exchange, crash):
    # 30,000 messages wait in the history queue; Herald drains them as fast as it can (tens of
    # thousands a second) and Redis, with its AOF fsynced once a second, is killed with -9 in the
    # middle. A killed process loses nothing its kernel already has, so "process" must come back
    # whole and in the same epoch (no false alarm). "machine" also cuts the AOF's tail, as a
    # crash of the machine before the next fsync would (Redis loads a truncated AOF up to its
    # last whole command): writes are gone, and Herald must start a new epoch, not reuse seqs.
    from conftest import Herald, RedisServer, TripleFollower
    rs = RedisServer(persistence=("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""))
    rs.start()
    h = Herald(exchange, rs.url, extra=["--history-size", "40000"])
    try:
        h.start()
        assert h.stop() == 0  # the queues now exist; what is published next waits in them
        total = 30000
        ids = [f"m{i}" for i in range(total)]
        publish(exchange, "aof", [i.encode() for i in ids], ids=ids, confirm=False)
        publish(exchange, "aof", [b"end"], ids=["end"])  # confirmed after every message before it
        h.start(wait_healthy=False)
        followers = [TripleFollower(h.ws_url(), "aof", "end") for _ in range(2)]
        for f in followers:
            f.start()
        r = rs.client()
        last_seen = wait_until(lambda: int(r.hget("herald:meta:aof", "seq") or 0) >= 10000 and
                               int(r.hget("herald:meta:aof", "seq")), 60, interval=0.01, what="the drain to be under way")
        rs.kill()
        if crash == "machine":
            incr = glob.glob(os.path.join(rs.dir, "appendonlydir", "*.incr.aof"))
            assert len(incr) == 1, incr
            size = os.path.getsize(incr[0])
            os.truncate(incr[0], size * 3 // 4)
        rs.start()
        after_restart = int(r.hget("herald:meta:aof", "seq") or 0)
        for f in followers:
            f.join(150)
            assert f.error is None, f.error
            assert f.triples and f.triples[-1][2] == "end", "each follower got to the last message"
        final_epoch = r.hget("herald:meta:aof", "epoch").decode()
        seen = {}
        for f in followers:
            for e, seq, mid in f.triples:
                assert seen.setdefault((e, seq), mid) == mid, f"({e}, {seq}) is both {seen[(e, seq)]} and {mid}"
        stored_now = stored(r, "aof")
        for seq, mid in stored_now:
            assert seen.setdefault((final_epoch, seq), mid) == mid
        assert [s for s, _ in stored_now] == list(range(1, len(stored_now) + 1)), "the last epoch is consecutive"
        resets = h.metrics()["herald_redis_lost_writes_epoch_resets_total"]
        print(f"{crash} crash: Redis held seq {last_seen} or more before the kill and {after_restart} after; "
              f"epoch resets {resets:.0f}; final epoch has {len(stored_now)} messages")
        if crash == "process":
            assert resets == 0 and after_restart >= last_seen
            assert [mid for _, mid in stored_now] == ids + ["end"], "every message once, in order, one epoch"
        else:
            assert after_restart < last_seen, "the cut AOF lost writes"
            assert resets == 1
            for f in followers:
                later = [sub for sub in f.subscribed if sub["epoch"] == final_epoch]
                assert later, f.subscribed
                assert all(sub["recovered"] is False for sub in later if sub is not f.subscribed[0]), f.subscribed
    finally:
        h.kill()
        rs.stop(save=False)
