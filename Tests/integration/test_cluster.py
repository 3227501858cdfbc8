"""Several Herald nodes on one RabbitMQ and one Redis: the same seqs everywhere, sequencer failover
on SIGKILL, live-gap repair after a node's RabbitMQ link is cut, and a node joining under traffic.
Nodes are separate processes on 127.0.0.1. Measured recovery times go to test-output/cluster.json."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request

from conftest import ROOT, Client, Publisher, TripleFollower, assert_consecutive, free_port, wait_until
from tcpproxy import TCPProxy

REPORT = os.path.join(ROOT, "test-output", "cluster.json")


def report(key, value):
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    data = {}
    if os.path.exists(REPORT):
        with open(REPORT) as f:
            data = json.load(f)
    data[key] = value
    with open(REPORT, "w") as f:
        json.dump(data, f, indent=2)


def Follower(urls, channel, until):
    """A client on one channel that records every message and, like a browser behind a load
    balancer, resumes on the next node with its position when its connection drops; done at seq
    `until`. (conftest.TripleFollower, stopping at a seq.)"""
    return TripleFollower(urls, channel, until_seq=until, seconds=120)


def cluster(herald_factory, n, extra=()):
    nodes = []
    for i in range(n):
        h = herald_factory(extra=["--node-id", f"n{i + 1}", *extra]).start()
        if i == 0:  # the first node takes the sequencer role; wait so the order is known
            wait_until(lambda: h.health()[1].get("sequencer") is True, 15, what="n1 to sequence")
        nodes.append(h)
    return nodes


def stored(redis_server, channel):
    r = redis_server.client()
    return [json.loads(x) for x in r.lrange(f"herald:history:{channel}", 0, -1)][::-1]


def test_three_nodes_give_every_client_the_same_messages_and_store_each_once(herald_factory, exchange, redis_server):
    nodes = cluster(herald_factory, 3, extra=["--history-size", "5000"])
    healths = [h.health()[1] for h in nodes]
    assert [x["node"] for x in healths] == ["n1", "n2", "n3"]
    assert [x["sequencer"] for x in healths] == [True, False, False]
    assert [h.metrics()["herald_sequencer"] for h in nodes] == [1, 0, 0]

    total = 3000
    followers = [Follower([h.ws_url()], "multi", total) for h in nodes for _ in range(3)]
    for f in followers:
        f.start()
    for f in followers:
        assert f.connected.wait(10)
    pub = Publisher(exchange, "multi", total, rate=1500)
    pub.start()
    pub.join()
    assert pub.error is None
    for f in followers:
        f.join(60)
        assert f.error is None
        assert_consecutive(f.seqs, start=1, end=total)
    reference = followers[0].ids
    for f in followers[1:]:
        assert f.ids == reference, "every client sees the same message at the same seq"
    history = stored(redis_server, "multi")
    assert_consecutive([m["seq"] for m in history], start=1, end=total)
    assert sorted(m["id"] for m in history) == sorted(pub.ids), "each message stored exactly once"
    assert [m["id"] for m in history] == [reference[s] for s in range(1, total + 1)]


def test_sequencer_killed_under_2000_per_second_another_node_takes_over(herald_factory, exchange, redis_server):
    n1, n2, n3 = cluster(herald_factory, 3, extra=["--history-size", "30000"])
    total = 10000
    urls = [h.ws_url() for h in (n1, n2, n3)]
    # Clients of n1 fall back to n2 then n3 when n1 dies; the others stay where they are.
    on_n1 = [Follower(urls, "fo", total) for _ in range(3)]
    survivors = [Follower([n2.ws_url()], "fo", total) for _ in range(2)] + \
                [Follower([n3.ws_url()], "fo", total) for _ in range(2)]
    for f in on_n1 + survivors:
        f.start()
        assert f.connected.wait(10)
    assert [h.health()[1]["sequencer"] for h in (n1, n2, n3)] == [True, False, False]
    pub = Publisher(exchange, "fo", total, rate=2000)
    pub.start()
    wait_until(lambda: pub.confirmed >= 3000, 30, what="publishing to get going")
    killed_at = time.time()
    n1.kill()
    new_sequencer = wait_until(
        lambda: next((h for h in (n2, n3) if (h.health()[1] or {}).get("sequencer")), None), 30,
        interval=0.02, what="another node to take the sequencer role")
    takeover_health = time.time() - killed_at
    pub.join()
    assert pub.error is None and pub.confirmed == total
    for f in on_n1 + survivors:
        f.join(90)
        assert f.error is None, f.error
        assert_consecutive(f.seqs, start=1, end=total)
        assert len(f.ids) == total
    for f in survivors:
        assert f.closes == [], "clients of the surviving nodes are not disturbed"
    for f in on_n1:
        assert len(f.subscribed) == 2
        resumed = f.subscribed[1]
        assert resumed["recovered"] is True and resumed["missed"] == 0
    history = stored(redis_server, "fo")
    assert_consecutive([m["seq"] for m in history], start=1, end=total)
    ids = [m["id"] for m in history]
    assert len(set(ids)) == total and set(ids) == set(pub.ids), "every confirmed message stored exactly once"
    assert all(f.ids == survivors[0].ids for f in on_n1 + survivors), "one order everywhere"
    # Sequencing stalled for at most this long (from the times Herald stamped on the messages).
    times = [m["time"] for m in history]
    stall_ms = max(b - a for a, b in zip(times, times[1:]))
    report("sequencer_failover", {"healthz_reports_new_sequencer_s": round(takeover_health, 2),
                                  "longest_sequencing_pause_ms": stall_ms,
                                  "new_sequencer": new_sequencer.health()[1]["node"]})
    assert stall_ms < 15000


def test_a_node_cut_off_from_rabbitmq_keeps_its_clients_feed(herald_factory, exchange, redis_server):
    """Live messages come to a node over Redis PUB/SUB: a node cut off from RabbitMQ (here not
    the sequencer) goes on feeding its clients, with nothing to repair."""
    proxy = TCPProxy(5672)
    try:
        n1 = cluster(herald_factory, 1, extra=["--history-size", "20000"])[0]
        n2 = herald_factory(extra=["--node-id", "n2", "--history-size", "20000",
                                   "--amqp-url", f"amqp://guest:guest@127.0.0.1:{proxy.port}/"]).start()
        total = 6000
        followers = [Follower([n2.ws_url()], "cut", total) for _ in range(3)]
        for f in followers:
            f.start()
            assert f.connected.wait(10)
        pub = Publisher(exchange, "cut", total, rate=1000)
        pub.start()
        wait_until(lambda: pub.confirmed >= 2000, 30, what="publishing to get going")
        proxy.cut()
        wait_until(lambda: n2.health()[0] == 503, 10, what="n2 to notice")
        time.sleep(3)
        proxy.heal()
        wait_until(lambda: n2.health()[0] == 200, 30, what="n2 to reconnect")
        pub.join()
        assert pub.error is None
        for f in followers:
            f.join(60)
            assert f.error is None
            assert f.closes == [], "clients stay connected through the cut"
            assert_consecutive(f.seqs, start=1, end=total)
        m = n2.metrics()
        assert m["herald_amqp_reconnects_total"] >= 1
        assert m["herald_live_gaps_repaired_total"] == 0 and m["herald_redis_reconnects_total"] == 0, "the feed never broke"
        assert proxy.connections_cut >= 2
        assert n1.health()[1]["sequencer"] is True
    finally:
        proxy.close()


def test_a_node_started_under_traffic_catches_up_without_disturbing_the_others(herald_factory, exchange, redis_server):
    n1, n2 = cluster(herald_factory, 2, extra=["--history-size", "20000"])
    total = 6000
    old = [Follower([h.ws_url()], "join", total) for h in (n1, n2) for _ in range(2)]
    for f in old:
        f.start()
        assert f.connected.wait(10)
    pub = Publisher(exchange, "join", total, rate=1500)
    pub.start()
    wait_until(lambda: pub.confirmed >= 2000, 30, what="publishing to get going")
    n3 = herald_factory(extra=["--node-id", "n3", "--history-size", "20000"]).start()
    late = [Follower([n3.ws_url()], "join", total) for _ in range(2)]
    for f in late:
        f.start()
        assert f.connected.wait(10)
    pub.join()
    assert pub.error is None
    for f in old:
        f.join(60)
        assert f.error is None and f.closes == []
        assert_consecutive(f.seqs, start=1, end=total)
    for f in late:
        f.join(60)
        assert f.error is None and f.closes == []
        assert_consecutive(f.seqs, start=1, end=total)  # the whole history, then live
    assert [h.health()[1]["sequencer"] for h in (n1, n2, n3)] == [True, False, False]


def test_quorum_history_queue(herald_factory, exchange):
    nodes = cluster(herald_factory, 2, extra=["--queue-type", "quorum"])
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "type", "arguments"],
                         capture_output=True, text=True, timeout=60).stdout
    rows = {line.split("\t")[0]: line for line in out.splitlines() if line.startswith(exchange)}
    assert "quorum" in rows[f"{exchange}.history"] and "x-single-active-consumer" in rows[f"{exchange}.history"]
    assert "quorum" in rows[f"{exchange}.dead"]
    c = Client(nodes[1].ws_url("channel=q"))
    assert c.recv()["type"] == "subscribed"
    Publisher(exchange, "q", 10, rate=100).run()
    msgs, _ = c.recv_messages("q", 10)
    assert_consecutive([m["seq"] for m in msgs], start=1, end=10)
    c.close()


class Nginx:
    """nginx in front of the nodes, configured with deploy/nginx-herald.conf (ports rewritten)."""

    def __init__(self, node_ports, refuse_websocket=False):
        self.dir = tempfile.mkdtemp(prefix="herald-nginx-")
        self.port = free_port()
        with open(os.path.join(ROOT, "deploy", "nginx-herald.conf")) as f:
            site = f.read()
        if refuse_websocket:
            # A proxy that strips the upgrade, as some corporate ones do.
            site, n = re.subn(r"location = /ws \{.*?\n    \}", "location = /ws { return 403; }", site, flags=re.S)
            assert n == 1
        servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n" for p in node_ports)
        site = re.sub(r"(    server 127\.0\.0\.1:808\d[^\n]*\n)+", servers, site)
        site = site.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        with open(os.path.join(self.dir, "herald.conf"), "w") as f:
            f.write(site)
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(f"""daemon off; worker_processes 1; pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body; proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi; uwsgi_temp_path {self.dir}/uwsgi; scgi_temp_path {self.dir}/scgi;
    include {self.dir}/herald.conf;
}}
""")
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([binary, "-p", self.dir, "-c", f"{self.dir}/nginx.conf"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def test_nginx_example_spreads_clients_and_fails_over(herald_factory, exchange, redis_server):
    nodes = cluster(herald_factory, 3, extra=["--history-size", "20000"])
    lb = Nginx([h.port for h in nodes])
    try:
        wait_until(lambda: _get(lb.url("/healthz")) == 200, 10, what="nginx to proxy")
        ws = lb.url("/ws").replace("http", "ws")
        total = 4500
        followers = [Follower([ws], "lb", total) for _ in range(6)]
        for f in followers:
            f.start()
            assert f.connected.wait(10)
        per_node = [int(h.metrics()["herald_connections"]) for h in nodes]
        assert sum(per_node) == 6 and min(per_node) >= 1, f"least_conn spreads clients: {per_node}"
        pub = Publisher(exchange, "lb", total, rate=1500)
        pub.start()
        wait_until(lambda: pub.confirmed >= 2000, 30, what="publishing to get going")
        victim = max(nodes[1:], key=lambda h: h.metrics()["herald_connections"])
        victim.kill()
        pub.join()
        assert pub.error is None
        moved = 0
        for f in followers:
            f.join(60)
            assert f.error is None, f.error
            assert_consecutive(f.seqs, start=1, end=total)
            if len(f.subscribed) > 1:
                moved += 1
                assert f.subscribed[-1]["recovered"] is True
        assert moved >= 1, "the killed node's clients came back through nginx"
        with urllib.request.urlopen(lb.url("/herald.js"), timeout=5) as r:
            assert b"HeraldClient" in r.read()
    finally:
        lb.stop()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except Exception:
        return None
