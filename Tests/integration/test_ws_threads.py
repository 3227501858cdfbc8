"""Several WebSocket service threads (--ws-threads): one acceptor hands connections out
round-robin, every thread gets every live message, answers go back to the thread that asked, and
the connection limits count across threads. The whole suite also runs with HERALD_WS_THREADS=1
and =2 (scripts/test); these tests pin the behaviour that only shows with more than one."""
import json
import subprocess
import urllib.request

from conftest import HERALD_BIN, Client, publish, wait_until


def thread_connections(h):
    return h.labeled("herald_ws_thread_connections")


def test_connections_are_spread_over_the_threads_and_each_gets_every_message_in_order(herald_factory, exchange):
    h = herald_factory(extra=["--ws-threads", "3"]).start()
    assert h.metrics()["herald_ws_threads"] == 3
    clients = [Client(h.ws_url("channel=spread")) for _ in range(9)]
    for c in clients:
        assert c.recv()["type"] == "subscribed"
    # Round-robin: three connections on each thread.
    assert thread_connections(h) == {'thread="0"': 3, 'thread="1"': 3, 'thread="2"': 3}
    publish(exchange, "spread", [json.dumps({"n": i}).encode() for i in range(300)], content_type="application/json")
    for c in clients:
        got, others = c.recv_messages("spread", 300)
        assert [f["seq"] for f in got] == list(range(1, 301)) and others == []
        assert [f["data"]["n"] for f in got] == list(range(300))
        c.assert_nothing_follows(0.5)

    # A resume lands on whichever thread is next and gets exactly what it missed.
    last = clients[0]
    last.close()
    publish(exchange, "spread", [json.dumps({"n": i}).encode() for i in range(300, 310)], content_type="application/json")
    for _ in range(2):  # the next two connections go to two different threads
        again = Client(h.ws_url("channel=spread&since=300"))
        sub = again.recv()
        assert sub["type"] == "subscribed" and sub["recovered"] is True
        got, others = again.recv_messages("spread", 10)
        assert [f["seq"] for f in got] == list(range(301, 311)) and others == []
        again.assert_nothing_follows(0.5)
        again.close()
    for c in clients[1:]:
        c.close()
    wait_until(lambda: h.metrics()["herald_connections"] == 0, 5, what="every client gone")
    assert set(thread_connections(h).values()) == {0}


def test_http_answers_come_back_to_the_thread_that_asked(herald_factory, exchange):
    h = herald_factory(extra=["--ws-threads", "2"]).start()
    base = f"http://127.0.0.1:{h.port}"
    # Each request is a new connection, so they alternate between the two threads; an answer
    # routed to the other thread would leave its request waiting until the timeout.
    for i in range(6):
        req = urllib.request.Request(f"{base}/api/publish/answers", data=json.dumps({"i": i}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 202
    wait_until(lambda: len(json.loads(urllib.request.urlopen(f"{base}/api/history/answers", timeout=5).read())) == 6, 10,
               what="six stored messages")
    for _ in range(6):
        with urllib.request.urlopen(f"{base}/api/history/answers", timeout=5) as r:
            assert [f["data"]["i"] for f in json.loads(r.read())] == list(range(6))


def test_the_connection_limits_count_every_thread(herald_factory):
    from test_security import upgrade_status
    h = herald_factory(extra=["--ws-threads", "2", "--max-connections", "3"]).start()
    held = [Client(h.ws_url()) for _ in range(3)]
    assert sorted(thread_connections(h).values()) == [1, 2]
    # Whichever thread the fourth lands on, the node is full.
    assert [upgrade_status(h.port, None) for _ in range(2)] == ["503", "503"]
    held.pop().close()
    wait_until(lambda: h.metrics()["herald_connections"] == 2, 5, what="a place freed")
    held.append(Client(h.ws_url()))
    assert upgrade_status(h.port, None) == "503"
    assert h.metrics()["herald_server_full_refused_total"] == 3
    for c in held:
        c.close()

    per_ip = herald_factory(extra=["--ws-threads", "2", "--max-connections-per-ip", "2"]).start()
    a, b = Client(per_ip.ws_url()), Client(per_ip.ws_url())
    assert sorted(thread_connections(per_ip).values()) == [1, 1]
    assert [upgrade_status(per_ip.port, None) for _ in range(2)] == ["429", "429"]
    a.close()
    b.close()


def test_ws_threads_must_be_a_sensible_count():
    for value in ["0", "65", "many"]:
        r = subprocess.run([HERALD_BIN, "serve", "--ws-threads", value], capture_output=True, text=True, timeout=20)
        assert r.returncode != 0 and "--ws-threads" in r.stderr, r.stderr
    assert "--ws-threads must be 1 to 64" in subprocess.run(
        [HERALD_BIN, "serve", "--ws-threads", "0"], capture_output=True, text=True, timeout=20).stderr
