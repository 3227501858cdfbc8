"""The admin listener (--admin-listen): probes, metrics and the admin page off the public port,
behind an admin token, with every node of the deployment from the heartbeat registry in Redis."""
import json
import os
import socket
import subprocess
import threading
import urllib.error
import urllib.request

import pika
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from conftest import HERALD_BIN, ROOT, Client, amqp_channel, free_port, publish, wait_until
from test_web_client import browser  # noqa: F401  (the Chromium fixture)

TOKEN = "admin-token-for-tests-0123456789"


def get(port, path, token=None, method="GET"):
    """(status, headers, body) of one request to 127.0.0.1:port."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def overview(port):
    status, _, body = get(port, "/api/overview", TOKEN)
    return json.loads(body) if status == 200 else None


def labeled(port, name, token=TOKEN):
    status, _, body = get(port, "/metrics", token)
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if line.startswith(name + "{"):
            key, value = line.rsplit(" ", 1)
            out[key[len(name) + 1:-1]] = float(value)
    return out


def admin_node(herald_factory, name, *more):
    port = free_port()
    h = herald_factory(extra=["--node-id", name, "--admin-listen", f"127.0.0.1:{port}", "--admin-token", TOKEN, *more])
    h.admin_port = port
    return h.start()


def test_admin_listener_answers_401_without_its_token_and_keeps_probes_open(herald_factory):
    h = admin_node(herald_factory, "a")
    for path in ("/api/overview", "/metrics"):
        status, headers, body = get(h.admin_port, path)
        assert status == 401, path
        assert headers["www-authenticate"] == 'Bearer realm="herald-admin"'
        assert json.loads(body) == {"error": "unauthorized", "message": "the admin listener needs Authorization: Bearer <admin token>"}
        status, _, body = get(h.admin_port, path, token="not-the-admin-token-at-all")
        assert (status, json.loads(body)["message"]) == (401, "wrong admin token"), path
    assert h.metrics()["herald_http_auth_refused_total"] == 4

    # Probes stay open, so a kubelet or a load balancer needs no secret.
    assert get(h.admin_port, "/livez")[0] == 200
    status, _, body = get(h.admin_port, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, headers, body = get(h.admin_port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"Herald admin" in body
    assert headers["cache-control"] == "no-store"

    status, _, body = get(h.admin_port, "/metrics", TOKEN)
    assert status == 200 and b"herald_build_info{" in body
    assert wait_until(lambda: overview(h.admin_port), what="the first heartbeat")["served_by"] == "a"

    assert get(h.admin_port, "/api/overview", TOKEN, method="POST")[0] == 405
    assert get(h.admin_port, "/api/publish/news", TOKEN)[0] == 404, "the public API is not on the admin port"
    # Nor is the WebSocket endpoint: an upgrade is refused.
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{h.admin_port}/ws", open_timeout=5)
    assert refused.value.response.status_code == 404

    # The public port keeps what it serves today, and no admin data.
    assert get(h.port, "/metrics")[0] == 200
    assert get(h.port, "/api/overview", TOKEN)[0] == 404
    assert get(h.port, "/healthz")[0] == 200


def test_admin_only_metrics_moves_metrics_off_the_public_port(herald_factory):
    h = admin_node(herald_factory, "a", "--admin-only-metrics")
    status, _, body = get(h.port, "/metrics")
    assert status == 404 and json.loads(body)["message"] == "/metrics is served on the admin listener only (--admin-only-metrics)"
    assert get(h.admin_port, "/metrics", TOKEN)[0] == 200


@pytest.mark.parametrize("args,message", [
    (["--admin-token", TOKEN], "--admin-token and --admin-only-metrics need --admin-listen"),
    (["--admin-listen", "127.0.0.1"], "--admin-listen 127.0.0.1: expected HOST:PORT (e.g. 127.0.0.1:9090)"),
    (["--admin-listen", "127.0.0.1:9", "--admin-token", "short"], "--admin-token must be at least 16 bytes"),
])
def test_bad_admin_options_are_refused_with_the_reason(args, message):
    out = subprocess.run([HERALD_BIN, "serve", *args], capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_overview_lists_every_node_the_sequencer_and_dead_letters_and_loses_a_killed_node(herald_factory, exchange):
    a = admin_node(herald_factory, "a")
    b = admin_node(herald_factory, "b")
    o = wait_until(lambda: (x := overview(a.admin_port)) and x["totals"]["nodes_up"] == 2 and x["sequencer"] and x,
                   what="both nodes in the registry")
    assert [n["id"] for n in o["nodes"]] == ["a", "b"]
    assert [n["state"] for n in o["nodes"]] == ["up", "up"]
    assert o["sequencer"] in ("a", "b")
    assert [n["id"] for n in o["nodes"] if n["sequencer"]] == [o["sequencer"]]
    assert {n["listen"] for n in o["nodes"]} == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
    assert (o["redis"]["status"], o["redis"]["role"], o["redis"]["sentinel"], o["redis"]["cluster_masters"]) == ("up", "master", False, None)
    assert o["rabbitmq"]["status"] == "up"
    assert o["rabbitmq"]["dead_queue"] == {"name": f"{exchange}.dead", "messages": 0}
    assert o["rabbitmq"]["history_queue"]["name"] == f"{exchange}.history"

    # Two subscribers on b: b's counts and the totals say so.
    clients = [Client(b.ws_url()) for _ in range(2)]
    for c in clients:
        c.send({"op": "subscribe", "channel": "news"})
        assert c.recv()["type"] == "subscribed"
    wait_until(lambda: (x := overview(a.admin_port)) and x["totals"]["subscriptions"] == 2
               and next(n for n in x["nodes"] if n["id"] == "b")["connections"] == 2, what="b's subscribers in the overview")

    # A poison message: the overview names its reason and channel, the metric counts it by reason.
    conn, ch = amqp_channel()
    ch.basic_publish(exchange, "news", b"{not json", pika.BasicProperties(content_type="application/json", message_id="poison-1"))
    ch.basic_publish(exchange, "bad channel!", b"x", pika.BasicProperties(message_id="poison-2"))
    conn.close()
    o = wait_until(lambda: (x := overview(a.admin_port)) and len(x["dead_letters"]) == 2 and x["rabbitmq"]["dead_queue"]["messages"] == 2 and x,
                   what="the dead letters in the overview")
    assert [(d["reason"], d["channel"], d["message_id"]) for d in o["dead_letters"]] == [
        ("bad_channel", "bad channel!", "poison-2"), ("bad_json", "news", "poison-1")]
    assert all(d["node"] == o["sequencer"] for d in o["dead_letters"])
    sequencer = a if o["sequencer"] == "a" else b
    dead = labeled(sequencer.admin_port, "herald_dead_letters_by_reason_total")
    assert (dead['reason="bad_json"'], dead['reason="bad_channel"'], dead['reason="too_large"']) == (1, 1, 0)

    # A killed node stops beating: the others list it as lost (not silently dropped).
    b.kill()
    o = wait_until(lambda: (x := overview(a.admin_port)) and x["totals"]["nodes_lost"] == 1 and x, timeout=15,
                   what="b listed as lost")
    assert [(n["id"], n["state"]) for n in o["nodes"]] == [("a", "up"), ("b", "lost")]
    assert o["totals"]["subscriptions"] == 0, "a lost node's counts leave the totals"
    wait_until(lambda: overview(a.admin_port)["sequencer"] == "a", timeout=20, what="a to take over sequencing")
    # A node that stops cleanly leaves the registry at once.
    a.stop()
    import redis as redislib
    r = redislib.Redis.from_url(a.redis_url)
    assert r.zrange("herald:nodes", 0, -1) == [b"b"]


def test_close_codes_are_counted_by_code(herald_factory):
    h = admin_node(herald_factory, "a")
    c = Client(h.ws_url())
    c.ws.send("x" * 8192)  # over the 4096-byte client frame limit
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            c.ws.recv(timeout=5)
    assert closed.value.rcvd.code == 1009
    ok = Client(h.ws_url())
    ok.ws.close(1000)
    closes = wait_until(lambda: (x := labeled(h.admin_port, "herald_connection_closes_total")) and x['code="1000"'] == 1 and x,
                        what="the close codes counted")
    assert closes['code="1009"'] == 1
    assert closes['code="4001"'] == 0 and closes['code="other"'] == 0
    assert set(closes) == {f'code="{c}"' for c in ("1000", "1001", "1006", "1009", "4001", "4002", "4003", "4004", "4005", "4008", "other")}
    status, _, body = get(h.admin_port, "/metrics", TOKEN)
    text = body.decode()
    assert "# TYPE herald_delivery_latency_seconds histogram" in text
    assert 'herald_delivery_latency_seconds_bucket{le="0.001"}' in text
    assert "_ms" not in "".join(line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#"))


def test_admin_page_in_chromium_shows_both_nodes_under_bench_load(herald_factory, exchange, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    a = admin_node(herald_factory, "node-a")
    b = admin_node(herald_factory, "node-b")
    wait_until(lambda: (x := overview(a.admin_port)) and x["totals"]["nodes_up"] == 2 and x["sequencer"], what="both nodes")
    publish(exchange, "orders", [b"{oops"], content_type="application/json", ids=["poison-page"])

    browser.get(f"http://127.0.0.1:{a.admin_port}/")
    wait_until(lambda: browser.find_element(By.ID, "status").text.startswith("unauthorized"), what="the page to ask for the token")
    assert browser.find_elements(By.CSS_SELECTOR, "#nodes tr[data-node]") == []

    load = subprocess.Popen([str(x) for x in [HERALD_BIN, "bench", "latency", "--url", a.ws_url(), "--url", b.ws_url(),
                                              "--exchange", exchange, "--channel-prefix", "load", "--clients", 100, "--channels", 2, "--rate", 100,
                                              "--duration", 20, "--json", "--quiet"]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#auth button").click()

        def rows():
            return {r.get_attribute("data-node"): (r.get_attribute("data-state"), r.get_attribute("data-sequencer"))
                    for r in browser.find_elements(By.CSS_SELECTOR, "#nodes tr[data-node]")}

        def rate(element_id):
            try:
                return float(browser.find_element(By.ID, element_id).text.split()[0])
            except ValueError:
                return 0.0

        wait_until(lambda: browser.find_element(By.ID, "status").text == "live", what="the page to go live")
        # Each node beats once a second: wait for both beats since the load connected.
        wait_until(lambda: rate("rate-in") > 0 and rate("rate-out") > 0 and browser.find_element(By.ID, "connections").text == "100",
                   timeout=30, what="the load's 100 clients and non-zero rates on the page")
        got = rows()
        assert set(got) == {"node-a", "node-b"} and all(state == "up" for state, _ in got.values())
        sequencer = browser.find_element(By.ID, "sequencer").text
        assert sequencer in ("node-a", "node-b")
        assert [n for n, (_, s) in got.items() if s == "true"] == [sequencer]
        assert browser.find_element(By.ID, "nodes-up").text == "2"
        channels = [r.get_attribute("data-channel") for r in browser.find_elements(By.CSS_SELECTOR, "#channels tr[data-channel]")]
        assert len(channels) == 2 and all(c.startswith("load-") for c in channels), channels
        dead = browser.find_elements(By.CSS_SELECTOR, "#dead-letters tr[data-reason]")
        assert [(r.get_attribute("data-reason"), r.get_attribute("data-channel")) for r in dead] == [("bad_json", "orders")]
        assert "expected" in dead[0].text or "JSON" in dead[0].text, dead[0].text
        assert browser.find_element(By.ID, "dead-depth").text == "1"
        assert browser.find_element(By.CSS_SELECTOR, '#redis dd[data-field="role"]').text == "master"
        assert browser.find_element(By.CSS_SELECTOR, '#redis dd[data-field="cluster masters"]').text == "not a cluster"
        browser.save_screenshot(os.path.join(ROOT, "test-output", "admin.png"))
    finally:
        out, err = load.communicate(timeout=120)
    assert load.returncode == 0, err
    result = json.loads(out)
    assert (result["lost"], result["duplicated"], result["out_of_order"]) == (0, 0, 0)


def test_a_second_node_with_the_same_node_id_refuses_to_start_and_a_restart_does_not(herald_factory, redis_server):
    first = herald_factory(extra=["--node-id", "twin"]).start()
    wait_until(lambda: redis_server.client().get("herald:node:twin"), what="the first node's heartbeat")
    second = herald_factory(extra=["--node-id", "twin"]).start(wait_healthy=False)
    assert second.proc.wait(20) != 0
    assert "another node is running with --node-id twin" in second.log()
    assert first.health()[0] == 200
    # A node that died leaves a heartbeat nobody renews: the same id starts again at once.
    first.kill()
    again = herald_factory(extra=["--node-id", "twin"], port=first.port).start()
    assert again.health()[0] == 200
