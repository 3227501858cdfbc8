"""What subscribers can make Redis keep: a channel that never had a message costs nothing lasting."""
import json
import time
import urllib.request

from conftest import Client, publish, wait_until


def channel_keys(r):
    """Every key but the node registry's (one heartbeat per node and the set of nodes: bounded by
    the nodes, not by what clients do) and the cluster's partition count (one key)."""
    return [k for k in r.scan_iter(count=5000)
            if k not in (b"herald:nodes", b"herald:partitions") and not k.startswith(b"herald:node:")]


def test_10000_subscribes_to_fresh_names_leave_no_lasting_key(herald_factory, redis_server):
    h = herald_factory(extra=["--empty-channel-ttl", "5", "--max-subscriptions", "10000",
                              "--max-client-ops", "100000"]).start()
    r = redis_server.client()
    c = Client(h.ws_url())
    names = [f"fresh-{i}" for i in range(10000)]
    for start in range(0, len(names), 500):
        for name in names[start:start + 500]:
            c.send({"op": "subscribe", "channel": name})
        got = [c.recv(timeout=30) for _ in range(500)]
        assert {f["type"] for f in got} == {"subscribed"}, [f for f in got if f["type"] != "subscribed"][:3]
    keys = channel_keys(r)
    assert len(keys) == 10000 and all(k.startswith(b"herald:meta:fresh-") for k in keys)
    ttls = [t for t in (r.ttl(k) for k in keys)]
    assert all(0 < t <= 5 for t in ttls), f"a key outlives the bound: TTLs {sorted(set(ttls))[-3:]}"
    c.close()
    # Nobody subscribed: the keys are gone within the bound (and nodes stop extending them).
    wait_until(lambda: channel_keys(r) == [], 20, interval=0.5, what="every empty channel's key to expire")


def test_an_empty_channel_keeps_its_epoch_while_subscribed_and_the_first_message_continues_it(herald_factory, redis_server):
    h = herald_factory(extra=["--empty-channel-ttl", "3"]).start()
    r = redis_server.client()
    c = Client(h.ws_url("channel=quiet"))
    sub = c.recv()
    assert (sub["type"], sub["seq"], sub["replay"]) == ("subscribed", 0, 0)
    epoch = sub["epoch"]
    assert 0 < r.ttl("herald:meta:quiet") <= 3
    # Three TTLs pass while the client waits; the node keeps the key (and so the epoch) alive.
    deadline = time.time() + 9
    while time.time() < deadline:
        assert r.hget("herald:meta:quiet", "epoch") == epoch.encode(), "the empty channel's epoch lapsed"
        time.sleep(0.5)
    publish(h.exchange, "quiet", [b"first"])
    (m,), others = c.recv_messages("quiet", 1)
    assert (m["seq"], m["data"], others) == (1, "first", [])   # no 4008: the same life goes on
    assert r.ttl("herald:meta:quiet") > 86_400, "a channel with a message keeps the long meta TTL"
    again = Client(h.ws_url(f"channel=quiet&since=0&epoch={epoch}"))
    sub = again.recv()
    assert (sub["epoch"], sub["recovered"], sub["missed"], sub["replay"]) == (epoch, True, 0, 1)
    c.close(), again.close()


def test_reading_a_fresh_name_over_http_leaves_no_lasting_key(herald_factory, redis_server):
    h = herald_factory(extra=["--empty-channel-ttl", "4"]).start()
    with urllib.request.urlopen(f"http://127.0.0.1:{h.port}/api/history/never-used", timeout=5) as resp:
        assert json.loads(resp.read()) == []
    r = redis_server.client()
    assert 0 < r.ttl("herald:meta:never-used") <= 4
    wait_until(lambda: not r.exists("herald:meta:never-used"), 15, interval=0.5, what="the key to expire")
