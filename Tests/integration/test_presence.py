"""Presence across nodes, through real RabbitMQ and Redis: member lists that converge, exact
join/leave frames, a killed node's members reaped, resume through the sequenced changes."""
import json
import time
import urllib.error
import urllib.request

import pika

from conftest import Client, amqp_channel, wait_until

PRESENCE = ("--presence-channels", "room:*", "--presence-lease-ms", "2000", "--presence-tick-ms", "50")


class PresenceView:
    """A client's member list, kept from its presence/join/leave frames, checking that the
    presence stream has no gap and no duplicate."""

    def __init__(self, client, channel):
        self.client, self.channel = client, channel
        self.members, self.seq, self.epoch, self.me = {}, None, None, None
        self.frames = []

    def apply(self, f):
        if f.get("channel") != self.channel or f["type"] not in ("presence", "join", "leave"):
            return
        self.frames.append(f)
        if f["type"] == "presence":
            self.me, self.epoch = f["client"], f["presence_epoch"]
            if "members" in f:
                self.members = {m["client"]: m for m in f["members"]}
                self.seq = f["presence_seq"]
            return
        assert f["presence_epoch"] == self.epoch
        assert f["presence_seq"] == self.seq + 1, f"presence gap or duplicate: {self.seq} then {f['presence_seq']}"
        self.seq = f["presence_seq"]
        for m in f["members"]:
            if f["type"] == "join":
                assert m["client"] not in self.members, f"joined twice: {m}"
                self.members[m["client"]] = m
            else:
                assert m["client"] in self.members, f"left without being there: {m}"
                del self.members[m["client"]]

    def pump(self, timeout=0.2):
        try:
            while True:
                self.apply(self.client.recv(timeout=timeout))
        except TimeoutError:
            pass

    def until(self, predicate, timeout=15, what="the member list"):
        deadline = time.time() + timeout
        while not predicate(self):
            assert time.time() < deadline, f"timed out waiting for {what}: {sorted(self.members)}"
            self.pump(0.1)


def join(h, channel, **extra):
    c = Client(h.ws_url())
    c.send({"op": "subscribe", "channel": channel, "presence": True, **extra})
    view = PresenceView(c, channel)
    view.until(lambda v: v.me is not None, what="the presence frame")
    return view


def api_presence(h, channel):
    with urllib.request.urlopen(f"http://127.0.0.1:{h.port}/api/presence/{channel}", timeout=5) as r:
        return json.loads(r.read())


def test_members_on_two_nodes_converge_and_leave_exactly(herald_factory):
    a = herald_factory(extra=PRESENCE).start()
    b = herald_factory(extra=PRESENCE).start()
    views = [join(a, "room:1"), join(a, "room:1"), join(b, "room:1")]
    clients = {v.me for v in views}
    assert len(clients) == 3
    for v in views:
        v.until(lambda v: set(v.members) == clients)
    for h in (a, b):
        wait_until(lambda: {m["client"] for m in api_presence(h, "room:1")["members"]} == clients, 10, what="/api/presence")
    listed = api_presence(b, "room:1")
    assert listed["connections"] == 3 and listed["users"] == 0
    assert all(m["user"] is None and m["node"] for m in listed["members"])
    assert {m["client"]: m for m in listed["members"]} == views[0].members

    gone = views[1]
    gone.client.close()
    for v in (views[0], views[2]):
        v.until(lambda v: set(v.members) == clients - {gone.me})
        leaves = [f for f in v.frames if f["type"] == "leave"]
        assert [[m["client"] for m in f["members"]] for f in leaves] == [[gone.me]]
    assert {m["client"] for m in api_presence(a, "room:1")["members"]} == clients - {gone.me}
    for v in (views[0], views[2]):
        v.pump(1.0)
        assert set(v.members) == clients - {gone.me}


def test_a_killed_nodes_members_are_reaped_by_the_survivor(herald_factory):
    a = herald_factory(extra=PRESENCE).start()
    b = herald_factory(extra=PRESENCE).start()
    watcher = join(a, "room:2")
    victims = [join(b, "room:2") for _ in range(3)]
    everyone = {watcher.me} | {v.me for v in victims}
    watcher.until(lambda v: set(v.members) == everyone)
    killed = time.time()
    b.kill()
    watcher.until(lambda v: set(v.members) == {watcher.me}, timeout=30, what="the dead node's members to leave")
    took = time.time() - killed
    print(f"\nreaped 3 members of a SIGKILLed node {took:.2f} s after the kill (lease 2 s)")
    wait_until(lambda: [m["client"] for m in api_presence(a, "room:2")["members"]] == [watcher.me], 10, what="/api/presence")
    left = [m["client"] for f in watcher.frames if f["type"] == "leave" for m in f["members"]]
    assert sorted(left) == sorted(v.me for v in victims)
    assert not [f for f in watcher.frames if f["type"] == "join" and f["presence_seq"] > 0 and
                any(m["client"] not in everyone for m in f["members"])]
    assert a.metrics()["herald_presence_reaps_total"] >= 1


def test_a_resume_gets_the_changes_it_missed_not_a_new_list(herald_factory):
    a = herald_factory(extra=PRESENCE).start()
    b = herald_factory(extra=PRESENCE).start()
    first = join(a, "room:3")
    seq, epoch = first.seq, first.epoch
    known = dict(first.members)
    first.client.close()
    # 20 members come and go while it is away: ten stay, ten leave again.
    stay = [join(b, "room:3") for _ in range(10)]
    passing = [join(a, "room:3") for _ in range(10)]
    for p in passing:
        p.client.close()
    server = lambda: {m["client"] for m in api_presence(a, "room:3")["members"]}
    wait_until(lambda: server() == {s.me for s in stay}, 15, what="the server's list")
    back = Client(a.ws_url())
    back.send({"op": "subscribe", "channel": "room:3", "presence": True, "presence_since": seq, "presence_epoch": epoch})
    view = PresenceView(back, "room:3")
    view.members, view.seq = known, seq
    view.until(lambda v: v.me is not None, what="the presence frame")
    head = view.frames[0]
    assert head["recovered"] is True and head["missed"] == 0 and "members" not in head
    assert head["replay"] >= 1      # the changes, merged per tick, not a list
    view.until(lambda v: set(v.members) == server() | {v.me})
    assert set(view.members) == {s.me for s in stay} | {view.me}
    assert first.me not in view.members


def test_bad_presence_requests_get_clear_answers_and_a_forged_change_is_dead_lettered(herald_factory, exchange):
    a = herald_factory(extra=PRESENCE).start()
    c = Client(a.ws_url())
    c.send({"op": "subscribe", "channel": "lobby", "presence": True})
    # The error is immediate; the subscription still goes ahead (its answer waits for Redis).
    frames = sorted([c.recv(), c.recv()], key=lambda f: f["type"] != "subscribed")
    assert frames[0]["type"] == "subscribed" and frames[0]["channel"] == "lobby"
    assert frames[1] == {"type": "error", "code": "presence_unavailable", "message": "this channel has no presence (--presence-channels)",
                         "op": "subscribe", "channel": "lobby"}
    c.send({"op": "presence", "channel": "room:9"})
    assert c.recv()["code"] == "presence_unavailable"
    c.send({"op": "subscribe", "channel": "room:9", "presence": "yes"})
    assert c.recv()["message"] == '"presence" must be true or false'
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{a.port}/api/presence/lobby", timeout=5)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404 and json.loads(e.read())["error"] == "presence_unavailable"

    conn, ch = amqp_channel()
    ch.basic_publish(exchange, "~p:room:9", b"+nodot\t{}\n", pika.BasicProperties(headers={"x-herald-presence": "abc"}))
    deadline = time.time() + 15
    while True:
        method, props, body = ch.basic_get(f"{exchange}.dead", auto_ack=True)
        if method:
            break
        assert time.time() < deadline, "the forged change was not dead-lettered"
        time.sleep(0.1)
    conn.close()
    assert props.headers["x-herald-error"] == "bad_presence: line 1: a join is +client TAB member"
    assert api_presence(a, "room:9")["members"] == []


def test_300_clients_on_three_nodes_converge_to_the_same_list(herald_factory):
    import asyncio
    import websockets

    nodes = [herald_factory(extra=PRESENCE).start() for _ in range(3)]

    async def member(h, state, done):
        async with websockets.connect(h.ws_url(), max_size=None) as ws:
            await ws.send(json.dumps({"op": "subscribe", "channel": "room:big", "presence": True}))
            view = PresenceView(None, "room:big")
            state.append(view)
            while not done.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.2)
                except asyncio.TimeoutError:
                    continue
                for line in raw.split("\n"):
                    view.apply(json.loads(line))

    async def main():
        done = asyncio.Event()
        state = []
        started = time.time()
        tasks = [asyncio.create_task(member(nodes[i % 3], state, done)) for i in range(300)]
        while len(state) < 300 or any(v.me is None for v in state):
            await asyncio.sleep(0.05)
            assert time.time() - started < 60, "not every client got its presence frame"
        everyone = {v.me for v in state}
        assert len(everyone) == 300
        joined = time.time()
        while not all(set(v.members) == everyone for v in state):
            await asyncio.sleep(0.05)
            assert time.time() - joined < 60, "the lists did not converge"
        converged = time.time() - joined
        for h in nodes:
            listed = api_presence(h, "room:big")
            assert {m["client"] for m in listed["members"]} == everyone and listed["connections"] == 300
        frames = [len([f for f in v.frames if f["type"] in ("join", "leave")]) for v in state]
        print(f"\n300 clients on 3 nodes: every list equal {converged:.2f} s after the last client had its own list; "
              f"change frames per client: max {max(frames)}, mean {sum(frames) / len(frames):.1f} (joins merged per tick)")
        done.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_presence_changes_are_held_for_the_replicas_like_messages(herald_factory, redis_server):
    """--redis-wait-replicas 1: a join is announced only once a replica holds it, so a Sentinel
    failover cannot forget a join clients were told of. With no replica it waits; one comes up
    and the join follows."""
    from conftest import RedisServer
    h = herald_factory(extra=[*PRESENCE, "--redis-wait-replicas", "1"]).start()
    watcher = join(h, "room:held")
    other = join(h, "room:held")
    wait_until(lambda: h.metrics().get("herald_redis_replica_waits_total", 0) >= 2, 15, what="the sequencer to hold a batch")
    watcher.pump(0.3)
    assert other.me not in watcher.members, "a join was announced before any replica held it"
    replica = RedisServer(persistence=("--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", str(redis_server.port)))
    replica.start()
    try:
        watcher.until(lambda v: other.me in v.members, 20, what="the held join after a replica came up")
    finally:
        replica.kill()
