"""Lifecycle events (--lifecycle-events) through real RabbitMQ and Redis: a consumer of
<exchange>.events rebuilds who is connected where and which channels are occupied, exactly,
with a node SIGKILLed mid-run; per-instance sequence numbers have no gap."""
import collections
import json
import threading
import time

import pika
import redis as redis_lib
from websockets.exceptions import ConnectionClosed

from conftest import Client, wait_until
from test_presence import PresenceView
from test_security import SECRET, jwt

LEASE_MS = 2000


def lifecycle(snapshot_ms=600_000, vacate_ms=300, presence=False):
    return ("--lifecycle-events", "--lifecycle-lease-ms", str(LEASE_MS), "--lifecycle-vacate-ms", str(vacate_ms),
            "--lifecycle-snapshot-ms", str(snapshot_ms), "--token-secret", SECRET, "--anonymous-channels", "lc:*",
            *(("--presence-channels", "lc:*", "--presence-lease-ms", str(LEASE_MS), "--presence-tick-ms", "50") if presence else ()))


class EventLog(threading.Thread):
    """A backend's consumer: a queue bound to every event of <exchange>.events, collected in
    arrival order. Declared before any node starts, so it sees every event."""

    def __init__(self, exchange):
        super().__init__(daemon=True)
        self.events, self.error, self.stopping = [], None, False
        self.lock = threading.Lock()
        self.conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", heartbeat=30))
        self.ch = self.conn.channel()
        self.ch.exchange_declare(f"{exchange}.events", "topic", durable=True)
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.queue, f"{exchange}.events", "#")
        self.ch.basic_consume(self.queue, self._on_message, auto_ack=True)
        self.start()

    def _on_message(self, ch, method, props, body):
        event = json.loads(body)
        assert method.routing_key == event["event"], (method.routing_key, event)
        assert props.delivery_mode == 2 and props.message_id == f"{event['instance']}-{event['seq']}"
        with self.lock:
            self.events.append(event)

    def run(self):
        try:
            while not self.stopping:
                self.conn.process_data_events(time_limit=0.1)
            self.conn.close()
        except Exception as e:  # surfaced by the test
            self.error = e

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def close(self):
        self.stopping = True
        self.join(5)


class Occupancy:
    """What a backend rebuilds from the events: every connection with its user and channels,
    and per channel the latest occupied/vacated by version. Checks that each instance's seqs
    run 1, 2, 3, … with no gap (a repeat, after a republish, is dropped)."""

    def __init__(self, events):
        self.clients, self.users, self.occupied, self.last = {}, {}, {}, {}
        self.by_instance = collections.defaultdict(list)
        for e in events:
            self.apply(e)

    def apply(self, e):
        instance, seq = e["instance"], e["seq"]
        last = self.last.get(instance, 0)
        if seq <= last:
            return
        assert seq == last + 1, f"instance {instance}: seq {last} then {seq}"
        self.last[instance] = seq
        self.by_instance[instance].append(e)
        kind = e["event"]
        if kind == "connect":
            self.clients[e["client"]] = set()
            self.users[e["client"]] = e["user"]
        elif kind == "auth":
            self.users[e["client"]] = e["user"]
        elif kind == "subscribe":
            self.clients[e["client"]].add(e["channel"])
        elif kind == "unsubscribe":
            self.clients[e["client"]].discard(e["channel"])
        elif kind == "disconnect":
            self.clients.pop(e["client"], None)
            self.users.pop(e["client"], None)
        elif kind == "snapshot":
            for c in [c for c in self.clients if c.startswith(instance + ".")]:
                del self.clients[c]
            for c in e["clients"]:
                self.clients[c["client"]] = set(c["channels"])
                self.users[c["client"]] = c["user"]
        elif kind in ("occupied", "vacated"):
            if e["version"] > self.occupied.get(e["channel"], (0, ""))[0]:
                self.occupied[e["channel"]] = (e["version"], kind)

    def subscriptions(self):
        """{user: sorted channels} of the connections alive."""
        return {self.users[c]: sorted(chs) for c, chs in self.clients.items()}

    def occupied_channels(self):
        return sorted(ch for ch, (_, kind) in self.occupied.items() if kind == "occupied")

    def of_kind(self, kind):
        return [e for es in self.by_instance.values() for e in es if e["event"] == kind]


def connect(h, user, channels=(), presence=False):
    token = jwt({"sub": user, "channels": ["lc:*"], "exp": int(time.time()) + 3600})
    c = Client(h.ws_url(f"token={token}"))
    for ch in channels:
        c.send({"op": "subscribe", "channel": ch, **({"presence": True} if presence else {})})
    for _ in channels:
        while c.recv()["type"] != "subscribed":
            pass
    return c


def occupancy_sets(redis_url, channels):
    r = redis_lib.Redis.from_url(redis_url)
    return {ch: sorted(m.decode() for m in r.smembers(f"herald:occupancy:{ch}")) for ch in channels}


def test_a_consumer_rebuilds_occupancy_exactly_with_a_node_killed(herald_factory, exchange, redis_server):
    log = EventLog(exchange)
    try:
        a, b, c = (herald_factory(extra=lifecycle(presence=True)).start() for _ in range(3))
        clients = {
            "a1": (a, ["lc:1", "lc:2"]), "a2": (a, ["lc:1"]), "a3": (a, []),
            "b1": (b, ["lc:2"]), "b2": (b, ["lc:1", "lc:2"]), "b3": (b, ["lc:4"]),
            "c1": (c, ["lc:1", "lc:3"]), "c2": (c, ["lc:3", "lc:5"]), "c3": (c, ["lc:3", "lc:2"]),
        }
        open_ = {user: connect(h, user, chs) for user, (h, chs) in clients.items()}
        watcher = PresenceView(connect(a, "watcher"), "lc:3")
        watcher.client.send({"op": "subscribe", "channel": "lc:3", "presence": True})
        expected = {user: sorted(chs) for user, (_, chs) in clients.items()} | {"watcher": ["lc:3"]}
        wait_until(lambda: Occupancy(log.snapshot()).subscriptions() == expected, 15, what="every connection in the events")

        # Changes while running: an unsubscribe, a client that closes with its own code, and
        # one that leaves lc:4 empty.
        open_["a1"].send({"op": "unsubscribe", "channel": "lc:2"})
        assert open_["a1"].recv()["type"] == "unsubscribed"
        open_["a2"].ws.close(code=4000, reason="bye")
        open_["b3"].close()
        expected["a1"] = ["lc:1"]
        del expected["a2"], expected["b3"]
        wait_until(lambda: Occupancy(log.snapshot()).subscriptions() == expected, 15, what="the unsubscribe and closes")
        wait_until(lambda: "lc:4" not in Occupancy(log.snapshot()).occupied_channels(), 15, what="lc:4 vacated")
        state = Occupancy(log.snapshot())
        assert {e["user"]: e["code"] for e in state.of_kind("disconnect")} == {"a2": 4000, "b3": 1000}
        assert state.occupied_channels() == ["lc:1", "lc:2", "lc:3", "lc:5"]

        watcher.until(lambda v: len(v.members) == 4, what="lc:3's four members")
        killed = time.time()
        c.kill()
        for user in ("c1", "c2", "c3"):
            del expected[user]
        wait_until(lambda: Occupancy(log.snapshot()).subscriptions() == expected, 30, what="the killed node's disconnects")
        took_events = time.time() - killed
        watcher.until(lambda v: set(v.members) == {v.me}, timeout=30, what="the killed node's members to leave")
        took_presence = time.time() - killed
        print(f"\nkilled node: disconnect events {took_events:.2f} s and presence leaves {took_presence:.2f} s after SIGKILL "
              f"(lease {LEASE_MS / 1000:g} s; bound: lease + one renewal period)")

        # lc:5 had only the killed node: vacated on its behalf; lc:1 to lc:3 are held elsewhere.
        wait_until(lambda: Occupancy(log.snapshot()).occupied_channels() == ["lc:1", "lc:2", "lc:3"], 15, what="lc:5 vacated")
        watcher.client.close()
        del expected["watcher"]
        wait_until(lambda: Occupancy(log.snapshot()).occupied_channels() == ["lc:1", "lc:2"], 15, what="lc:3 vacated")
        state = Occupancy(log.snapshot())
        assert state.subscriptions() == expected
        lost = state.of_kind("node_lost")
        assert len(lost) == 1 and lost[0]["clients"] == 3 and lost[0]["instance"] != lost[0]["lost"]
        reaped = [e for e in state.of_kind("disconnect") if e.get("lost")]
        assert sorted(e["user"] for e in reaped) == ["c1", "c2", "c3"]
        assert {e["code"] for e in reaped} == {1006} and {e["lost"] for e in reaped} == {lost[0]["lost"]}
        assert sorted(e["channels"] for e in reaped) == [["lc:1", "lc:3"], ["lc:2", "lc:3"], ["lc:3", "lc:5"]]
        assert [(e["channel"], e["lost"]) for e in state.of_kind("vacated") if e.get("lost")] == [("lc:5", lost[0]["lost"])]

        # The servers' own state: Redis's occupancy sets name exactly the instances with a
        # subscriber, and each instance's connection hash holds exactly its connections.
        instances = {user: cl.split(".")[0] for cl, user in state.users.items()}
        holders = collections.defaultdict(set)
        for user, chs in expected.items():
            for ch in chs:
                holders[ch].add(instances[user])
        assert occupancy_sets(redis_server.url, ["lc:1", "lc:2", "lc:3", "lc:4", "lc:5"]) == \
            {"lc:1": sorted(holders["lc:1"]), "lc:2": sorted(holders["lc:2"]), "lc:3": [], "lc:4": [], "lc:5": []}
        r = redis_lib.Redis.from_url(redis_server.url)
        for h_instance in set(instances.values()):
            stored = {k.decode(): json.loads(v) for k, v in r.hgetall(f"herald:lifecycle-clients:{h_instance}").items()}
            assert {state.users[k]: v["channels"] for k, v in stored.items()} == \
                {u: chs for u, chs in expected.items() if instances[u] == h_instance}
        # What the lost instance left goes once its events are confirmed.
        wait_until(lambda: r.exists(f"herald:lifecycle-clients:{lost[0]['lost']}", f"herald:lifecycle-vacated:{lost[0]['lost']}") == 0
                   and r.hlen("herald:lifecycle-reaping") == 0, 10, what="the reaped instance's keys to go")
        # Every event of a live instance was published once (the message ids are unique).
        seen = collections.Counter((e["instance"], e["seq"]) for e in log.snapshot())
        assert max(seen.values()) == 1
        assert log.error is None
        assert a.metrics()["herald_lifecycle_reaps_total"] + b.metrics()["herald_lifecycle_reaps_total"] == 1
        for cl in open_.values():
            cl.close()
    finally:
        log.close()


def test_snapshots_auth_and_a_clean_stop(herald_factory, exchange):
    log = EventLog(exchange)
    try:
        a = herald_factory(extra=lifecycle(snapshot_ms=500)).start()
        alice = connect(a, "alice", ["lc:s1", "lc:s2"])
        anon = Client(a.ws_url())
        anon.send({"op": "subscribe", "channel": "lc:s1"})
        assert anon.recv()["type"] == "subscribed"
        anon.send({"op": "auth", "token": jwt({"sub": "bob", "channels": ["lc:*"], "exp": int(time.time()) + 3600})})
        assert anon.recv()["type"] == "authenticated"
        expected = {"alice": ["lc:s1", "lc:s2"], "bob": ["lc:s1"]}
        wait_until(lambda: Occupancy(log.snapshot()).subscriptions() == expected, 10, what="alice and bob")
        state = Occupancy(log.snapshot())
        assert [e["user"] for e in state.of_kind("auth")] == ["bob"]
        assert [e["user"] for e in state.of_kind("connect")].count(None) == 1

        # A snapshot taken after these describes them exactly, and a consumer that starts
        # from it alone rebuilds the same state.
        def later_snapshot():
            snaps = Occupancy(log.snapshot()).of_kind("snapshot")
            return snaps and {c["client"] for c in snaps[-1]["clients"]} == set(state.clients) and snaps[-1]
        snap = wait_until(later_snapshot, 10, what="a snapshot with both") or later_snapshot()
        assert {c["user"]: c["channels"] for c in snap["clients"]} == expected
        assert snap["occupied"] == ["lc:s1", "lc:s2"]
        fresh = Occupancy([])
        fresh.last[snap["instance"]] = snap["seq"] - 1
        fresh.apply(snap)
        assert fresh.subscriptions() == expected

        # A quick unsubscribe and subscribe again (within the vacate delay) vacates nothing:
        # a vacated would come before the snapshot taken a delay after the unsubscribe.
        alice.send({"op": "unsubscribe", "channel": "lc:s2"})
        assert alice.recv()["type"] == "unsubscribed"
        alice.send({"op": "subscribe", "channel": "lc:s2"})
        while alice.recv()["type"] != "subscribed":
            pass
        wait_until(lambda: Occupancy(log.snapshot()).of_kind("unsubscribe"), 10, what="the unsubscribe event")
        at = Occupancy(log.snapshot()).of_kind("unsubscribe")[0]["time"]
        wait_until(lambda: [e for e in Occupancy(log.snapshot()).of_kind("snapshot") if e["time"] > at + 400], 10,
                   what="a snapshot after the vacate delay")
        state = Occupancy(log.snapshot())
        assert state.of_kind("vacated") == []
        assert [e["channel"] for e in state.of_kind("subscribe")][-1] == "lc:s2"

        # SIGTERM: every connection disconnects with 1001 and both channels are vacated now.
        assert a.stop() == 0
        state = Occupancy(log.snapshot())
        assert state.subscriptions() == {}
        assert sorted((e["user"], e["code"]) for e in state.of_kind("disconnect")) == [("alice", 1001), ("bob", 1001)]
        assert state.occupied_channels() == []
        assert sorted(e["channel"] for e in state.of_kind("vacated")) == ["lc:s1", "lc:s2"]
        for cl in (alice, anon):
            try:
                cl.recv(timeout=5)
            except (ConnectionClosed, TimeoutError):
                pass
    finally:
        log.close()


def test_a_survivor_that_dies_before_publishing_a_reap_leaves_it_to_the_next(herald_factory, exchange, redis_server):
    """At-least-once reaping: B reaps A but cannot publish (its RabbitMQ link is frozen) and is
    killed; C, started later, takes B's claim over and emits A's node_lost, disconnects and
    vacated, which would otherwise be lost with B."""
    from tcpproxy import TCPProxy
    log = EventLog(exchange)
    proxy = TCPProxy(5672)
    try:
        a = herald_factory(extra=lifecycle()).start()
        b = herald_factory(extra=[*lifecycle(), "--amqp-url", f"amqp://guest:guest@127.0.0.1:{proxy.port}/"]).start()
        clients = [connect(a, "x1", ["lc:only-a"]), connect(a, "x2", ["lc:only-a", "lc:6"])]
        wait_until(lambda: len(Occupancy(log.snapshot()).subscriptions()) == 2, 15, what="a's connections in the events")
        # A subscribe event goes out before the channel's occupancy is written, the occupied event
        # after it: only what a's occupancy holds is vacated when a is reaped.
        wait_until(lambda: Occupancy(log.snapshot()).occupied_channels() == ["lc:6", "lc:only-a"], 15, what="a's channels occupied")
        a_instance = Occupancy(log.snapshot()).of_kind("connect")[0]["instance"]
        proxy.pause()  # b stays up, but nothing it publishes reaches RabbitMQ
        a.kill()
        wait_until(lambda: b.metrics()["herald_lifecycle_reaps_total"] == 1, 15, what="b to reap a")
        b.kill()
        assert Occupancy(log.snapshot()).of_kind("node_lost") == [], "b published its reap after all"
        proxy.close()
        c = herald_factory(extra=lifecycle()).start()
        wait_until(lambda: any(e["lost"] == a_instance for e in Occupancy(log.snapshot()).of_kind("node_lost")), 20,
                   what="a's node_lost from c")
        wait_until(lambda: len([e for e in Occupancy(log.snapshot()).of_kind("disconnect") if e.get("lost") == a_instance]) == 2,
                   10, what="a's two disconnects")
        state = Occupancy(log.snapshot())
        reaped = [e for e in state.of_kind("disconnect") if e.get("lost") == a_instance]
        assert sorted(e["user"] for e in reaped) == ["x1", "x2"] and {e["code"] for e in reaped} == {1006}
        wait_until(lambda: sorted(e["channel"] for e in Occupancy(log.snapshot()).of_kind("vacated") if e.get("lost") == a_instance)
                   == ["lc:6", "lc:only-a"], 10, what="a's channels vacated")
        # Emitted once, by c (b's events never left it), and b's own death is reaped by c too.
        lost = Occupancy(log.snapshot()).of_kind("node_lost")
        assert len([e for e in lost if e["lost"] == a_instance]) == 1
        assert len({e["instance"] for e in lost}) == 1
        r = redis_lib.Redis.from_url(redis_server.url)
        wait_until(lambda: r.hlen("herald:lifecycle-reaping") == 0 and r.exists(f"herald:lifecycle-clients:{a_instance}") == 0,
                   10, what="the claims released after c's confirms")
        for cl in clients:
            try:
                cl.close()
            except Exception:
                pass
    finally:
        proxy.close()
        log.close()
