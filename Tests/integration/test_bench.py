"""`herald bench` against a real Herald (and a deliberately broken server): the tool's presets run,
its JSON has the figures, its HTML report renders in Chromium, and it counts every message a
server loses, duplicates or reorders."""
import json
import os
import subprocess
import sys

import pytest

from conftest import HERALD_BIN, ROOT, free_port, wait_until
from test_web_client import browser  # noqa: F401  (the Chromium fixture)

HERE = os.path.dirname(__file__)
LATENCY_KEYS = {"p50", "p90", "p99", "p999", "max"}
REQUIRED = {"clients", "connect_failures", "published", "deliveries", "deliveries_per_sec", "lost",
            "duplicated", "out_of_order", "latency_ms"}


def bench(*args, timeout=180):
    out = subprocess.run([HERALD_BIN, "bench", *map(str, args), "--json", "--quiet"],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert REQUIRED <= result.keys()
    assert LATENCY_KEYS <= result["latency_ms"].keys()
    return result


def test_latency_preset_against_herald_is_exact(herald, exchange):
    r = bench("latency", "--url", herald.ws_url(), "--exchange", exchange, "--clients", 200, "--channels", 2,
              "--rate", 100, "--duration", 3, "--server-pid", herald.proc.pid,
              "--metrics-url", f"http://127.0.0.1:{herald.port}/metrics")
    assert r["connected"] == 200 and r["connect_failures"] == 0
    assert r["published"] >= 250
    assert r["deliveries"] == r["published"] * 100, "each message reaches the 100 clients of its channel"
    assert (r["lost"], r["duplicated"], r["out_of_order"]) == (0, 0, 0)
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
    assert r["server_cpu_percent"] is not None
    # The server's own count of what it wrote meanwhile: the same deliveries, in fewer writes.
    w = r["server_writes"]
    assert w["deliveries"] == r["deliveries"], w
    assert 0 < w["writes"] <= w["deliveries"] and w["messages_per_write"] == round(w["deliveries"] / w["writes"], 2)
    assert 10.0 <= w["window_ms"] <= 50.0, "between --coalesce-ms and --coalesce-max-ms"


def test_compressed_runs_are_exact_and_report_the_bytes_on_the_wire(herald, exchange):
    """--permessage-deflate: the clients offer compression and inflate; with the checked-in 1 KB
    ticker body each delivery takes well under half its plain bytes on the wire, and a run
    without it reports the plain figure beside."""
    ticker = os.path.join(ROOT, "bench", "ticker.json")
    args = ("latency", "--url", herald.ws_url(), "--exchange", exchange, "--clients", 50, "--rate", 50,
            "--duration", 2, "--body-file", ticker)
    plain = bench(*args)
    zipped = bench(*args, "--permessage-deflate")
    for r in (plain, zipped):
        assert r["connected"] == 50 and r["deliveries"] == r["published"] * 50
        assert (r["lost"], r["duplicated"], r["out_of_order"]) == (0, 0, 0)
    assert plain["permessage_deflate"] is False and plain["compressed_connections"] == 0
    assert zipped["permessage_deflate"] is True and zipped["compressed_connections"] == 50
    assert 1_100 < plain["wire_bytes_per_delivery"] < 1_400, "a frame of the 1 KB ticker body, plain"
    assert zipped["wire_bytes_per_delivery"] < plain["wire_bytes_per_delivery"] * 0.5


def test_sse_transport_is_exact_and_resumes_in_the_storm(herald, exchange):
    r = bench("latency", "--url", herald.ws_url(), "--exchange", exchange, "--clients", 100, "--channels", 2,
              "--rate", 100, "--duration", 2, "--transport", "sse")
    assert r["transport"] == "sse" and r["connected"] == 100 and r["connect_failures"] == 0
    assert r["deliveries"] == r["published"] * 50
    assert (r["lost"], r["duplicated"], r["out_of_order"]) == (0, 0, 0)
    s = bench("storm", "--url", herald.ws_url(), "--exchange", exchange, "--clients", 50, "--history", 20,
              "--rate", 50, "--duration", 2, "--transport", "sse")
    assert s["caught_up"] == 50 and (s["lost"], s["duplicated"]) == (0, 0)
    assert s["resumed"] == 50 and s["recovered"] == 50, "every stream resumed by since/epoch with nothing lost"


def test_presence_join_storm_is_counted_per_client(herald_factory, exchange):
    h = herald_factory(extra=("--presence-channels", "bench-*")).start()
    r = bench("latency", "--url", h.ws_url(), "--exchange", exchange, "--clients", 100, "--channels", 2,
              "--rate", 20, "--duration", 1, "--presence")
    p = r["presence"]
    assert r["connected"] == 100 and (r["lost"], r["duplicated"]) == (0, 0)
    # Every client's list reached its room's 50 members; the joins came merged (one list, then
    # a few join frames per tick), far fewer frames than the 50 a join-per-frame server sends.
    assert p["lists_complete"] == 100 and p["all_complete_seconds"] is not None
    print(f"\npresence: {p}")
    assert 1 <= p["frames_per_client_mean"] <= p["frames_per_client_max"] < 25, p
    plain = bench("latency", "--url", h.ws_url(), "--exchange", exchange, "--clients", 20, "--rate", 20, "--duration", 1)
    assert "presence" not in plain


def test_sequencer_preset_times_drains_of_stored_and_acked_messages(herald, exchange, redis_server):
    r = bench("sequencer", "--exchange", exchange, "--server-pid", herald.proc.pid, "--clients", 1, "--channels", 1,
              "--count", 3000, "--drains", 3, "--metrics-url", f"http://127.0.0.1:{herald.port}/metrics")
    drains = r["sequencer_drains_per_sec"]
    assert r["published"] == 9000 and len(drains) == 3 and all(d > 0 for d in drains)
    assert r["sequenced_per_sec"] == sorted(drains)[1], "the median drain"
    assert r["broker_alone_per_sec"] > 0
    assert herald.metrics()["herald_messages_in_total"] == 9000  # every message stored, none twice
    keys = redis_server.client().keys("herald:meta:bench-*")
    assert len(keys) == 1 and redis_server.client().hget(keys[0], "seq") == b"9000"


def test_http_publishing_and_a_three_node_cluster(herald_factory, exchange):
    nodes = [herald_factory(extra=["--node-id", f"n{i}"]).start() for i in range(3)]
    urls = [x for h in nodes for x in ("--url", h.ws_url())]
    r = bench("latency", *urls, "--publish-url", f"http://127.0.0.1:{nodes[0].port}/api/publish/{{channel}}",
              "--clients", 150, "--rate", 50, "--duration", 2)
    assert r["connected"] == 150 and r["published"] >= 90
    assert r["deliveries"] == r["published"] * 150
    assert (r["lost"], r["duplicated"], r["out_of_order"]) == (0, 0, 0)
    assert [int(h.metrics()["herald_connections_total"]) for h in nodes] == [50, 50, 50], "clients spread over the --urls"


def test_bench_counts_what_a_broken_server_loses_duplicates_and_reorders(exchange):
    port = free_port()
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "broken_server.py"), str(port), exchange],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        r = bench("latency", "--url", f"ws://127.0.0.1:{port}/ws", "--exchange", exchange, "--clients", 20,
                  "--rate", 40, "--duration", 1)
        assert r["published"] >= 12
        assert r["lost"] == 20, "seq 5 never reached any of the 20 clients"
        assert r["duplicated"] == 20, "seq 7 reached every client twice"
        assert r["out_of_order"] == 20, "seq 10 arrived after seq 11"
        assert r["clients_with_loss"] == 20
    finally:
        server.kill()


def assert_ramp(report, rates, p99_bound):
    """The ramp's rule, whatever the machine's load: steps at `rates` in order, each one run only
    after a clean one, a step's verdict agreeing with its own numbers (p99 within the preset's
    bound, publisher lag within 100 ms, nothing lost), and the highest clean rate one of the clean
    steps. Whether a step was clean depends on the clock, so it is not asserted."""
    steps = report["steps"]
    assert [s["rate"] for s in steps] == rates[:len(steps)] and steps, steps
    assert all(s["clean"] for s in steps[:-1]) and (len(steps) == len(rates) or not steps[-1]["clean"]), steps
    for s in steps:
        assert s["clean"] == (s["lost"] == 0 and s["p99_ms"] <= p99_bound and s["publisher_lag_ms"] <= 100), s
    clean = [s["rate"] for s in steps if s["clean"]]
    assert report["highest_clean_rate"] in clean if clean else report["highest_clean_rate"] is None


def test_throughput_connections_and_storm_presets(herald, exchange):
    t = bench("throughput", "--url", herald.ws_url(), "--exchange", exchange, "--clients", 100, "--rate", 20,
              "--max-rate", 50, "--step-seconds", 1)
    assert_ramp(t, [20, 30, 45], p99_bound=50)
    assert t["lost"] == 0
    c = bench("connections", "--url", herald.ws_url(), "--exchange", exchange, "--clients", 500, "--ramp", 2000,
              "--server-pid", herald.proc.pid)
    assert c["connected"] == 500 and c["published"] == 0
    assert 0 < c["memory_per_connection_kb"] < 100
    s = bench("storm", "--url", herald.ws_url(), "--exchange", exchange, "--clients", 300, "--history", 40,
              "--rate", 100, "--duration", 1)
    assert s["caught_up"] == 300 and s["resumed"] == 300 and s["recovered"] == 300
    assert s["join_catch_up_seconds"] > 0 and s["reconnect_catch_up_seconds"] > 0
    assert (s["lost"], s["duplicated"], s["out_of_order"]) == (0, 0, 0)


def test_html_report_shows_the_plots_in_chromium(herald, exchange, browser):  # noqa: F811
    report = os.path.join(ROOT, "test-output", "bench-report.html")
    subprocess.run([HERALD_BIN, "bench", "latency", "--url", herald.ws_url(), "--exchange", exchange,
                    "--clients", "100", "--rate", "100", "--duration", "2", "--report", report, "--quiet"],
                   check=True, capture_output=True, timeout=60)
    browser.get("file://" + report)
    points = browser.execute_script(
        "return [...document.querySelectorAll('svg polyline')].map(p => p.getAttribute('points').split(' ').length)")
    assert len(points) == 2 and points[0] >= 8 and points[1] >= 2
    data = json.loads(browser.execute_script("return document.getElementById('data').textContent"))
    assert data["lost"] == 0 and data["clients"] == 100


def test_the_bench_reaches_an_ipv6_address(herald_factory, exchange):
    """ws://[::1]:PORT: the bench's own clients connect over IPv6 (and --metrics-url too)."""
    h = herald_factory(extra=["--host", "::1"])
    h.start(wait_healthy=False)
    import urllib.request
    def up():
        try:
            with urllib.request.urlopen(f"http://[::1]:{h.port}/livez", timeout=2) as r:
                return r.status == 200
        except Exception:
            return False
    wait_until(up, 20, what="herald on [::1]")
    for transport in ("websocket", "sse"):
        r = bench("latency", "--url", f"ws://[::1]:{h.port}/ws", "--exchange", exchange, "--clients", 20, "--channels", 2,
                  "--rate", 20, "--duration", 1, "--transport", transport)
        assert r["connected"] == 20 and r["connect_failures"] == 0, (transport, r)
        assert r["deliveries"] == r["published"] * 10 and (r["lost"], r["duplicated"]) == (0, 0), (transport, r)


@pytest.mark.parametrize("route", ["amqp", "http"])
def test_many_channels_preset_puts_each_client_on_its_own_channel_and_reports_cpu_per_message(herald, exchange, redis_server, route):
    extra = ["--publish-url", f"http://127.0.0.1:{herald.port}/api/publish/{{channel}}", "--publish-connections", 4] if route == "http" else []
    r = bench("many-channels", "--url", herald.ws_url(), "--exchange", exchange, "--clients", 300, "--rate", 200,
              "--max-rate", 300, "--step-seconds", 1.5, "--server-pid", herald.proc.pid,
              "--watch-pid", f"redis={redis_server.proc.pid}", *extra)
    assert r["scenario"] == "many-channels" and r["channels"] == 300, "one channel per client unless --channels says otherwise"
    assert r["connected"] == 300 and (r["lost"], r["duplicated"], r["out_of_order"]) == (0, 0, 0)
    assert r["publish_failures"] == 0
    assert_ramp(r, [200.0, 300.0], p99_bound=100)
    for s in r["steps"]:
        assert s["lost"] == 0 and s["publisher_lag_ms"] >= 0
        assert set(s["cpu_percent"]) == {"server", "redis"} and set(s["cpu_us_per_message"]) == {"server", "redis"}
        assert s["cpu_us_per_message"]["server"] > 0
    assert r["deliveries"] == r["published"], "each message reaches the one client of its channel"


def test_rpc_preset_times_every_call_and_reports_calls_the_server_dropped(herald_factory, exchange):
    h = herald_factory(extra=["--rpc-methods", "bench.*"]).start()
    out = subprocess.run([HERALD_BIN, "bench", "rpc", "--url", h.ws_url(), "--exchange", exchange, "--clients", "20",
                          "--rate", "200", "--duration", "2", "--json", "--quiet"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["sent"] >= 390 and r["answered"] == r["sent"] and (r["unanswered"], r["duplicates"], r["errors"]) == (0, 0, {})
    assert 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"]
    assert h.labeled("herald_rpc_calls_total")['outcome="result"'] == r["sent"]
    # 2 clients at 100 calls/s each: the server's --max-client-ops (20/s, bursts of 100) drops
    # most frames, and the tool says so instead of reporting a clean run.
    out = subprocess.run([HERALD_BIN, "bench", "rpc", "--url", h.ws_url(), "--exchange", exchange, "--clients", "2",
                          "--rate", "200", "--duration", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "use more --clients" in out.stdout and "unanswered 0" not in out.stdout
