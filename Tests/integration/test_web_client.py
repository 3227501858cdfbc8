"""The browser client and demo page in a real headless Chromium, against a real Herald, RabbitMQ
and Redis. Each test reads the page the way a user does (the feed rows, the counters, the gap
line) and saves a screenshot under test-output/screenshots/."""
import json
import os
import shutil
import threading
import time
import urllib.request
import uuid

import pika
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from conftest import ROOT, assert_consecutive, publish, wait_until

SHOTS = os.path.join(ROOT, "test-output", "screenshots")


def chromium_paths():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    return binary, driver


@pytest.fixture
def browser(request):
    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,1000", "--user-data-dir=" + os.path.join("/tmp", "herald-chromium-" + uuid.uuid4().hex[:8])):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(10)
    yield driver
    os.makedirs(SHOTS, exist_ok=True)
    try:
        driver.save_screenshot(os.path.join(SHOTS, f"{request.node.name}.png"))
    finally:
        driver.quit()


def feed(driver):
    """The feed as the page shows it: [(seq, replayed)] for message rows, and the other rows."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#feed li')].map(li => li.dataset.seq
            ? {kind: 'message', seq: Number(li.dataset.seq), replayed: li.dataset.replayed === 'true'}
            : {kind: li.className, text: li.textContent, missed: li.dataset.missed ?? null});""")


def seqs(driver):
    return [row["seq"] for row in feed(driver) if row["kind"] == "message"]


def counter(driver, name):
    return int(driver.find_element("id", f"count-{name}").text)


def badge(driver):
    return driver.find_element("id", "state").text


def open_page(driver, herald, channel):
    driver.get(f"http://127.0.0.1:{herald.port}/?channel={channel}")
    wait_until(lambda: badge(driver) == "connected", 15, what="the page to connect")


def settled_feed(driver, last, quiet=1.0):
    """The feed once `last` is on the page and nothing more has been added for `quiet` seconds:
    a duplicate or a stray row after the last known message would show here."""
    wait_until(lambda: seqs(driver)[-1:] == [last], 40, what=f"#{last} on the page")
    rows = feed(driver)
    deadline = time.time() + quiet
    while time.time() < deadline:
        now = feed(driver)
        assert now == rows, f"the feed changed after #{last}: {now[len(rows):][:5]}"
        time.sleep(0.1)
    return rows


def redis_seq(redis_server, channel):
    raw = redis_server.client().hget(f"herald:meta:{channel}", "seq")
    return int(raw) if raw else 0


def paced(exchange, messages, rate=200):
    """Publishes (channel, body, message_id) in order at `rate`/s with confirms on a thread;
    returns the Event set once the last one is confirmed."""
    done = threading.Event()

    def run():
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        ch = conn.channel()
        ch.exchange_declare(exchange, "fanout", durable=True)
        ch.confirm_delivery()
        start = time.time()
        for i, (channel, body, message_id) in enumerate(messages):
            ch.basic_publish(exchange, channel, body, pika.BasicProperties(message_id=message_id, delivery_mode=2))
            ahead = (i + 1) / rate - (time.time() - start)
            if ahead > 0:
                time.sleep(ahead)
        conn.close()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


def test_library_is_served_at_herald_js(herald, browser):
    browser.get(f"http://127.0.0.1:{herald.port}/")
    kind = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/herald.js').then(m => done(typeof m.HeraldClient)).catch(e => done(String(e)));""")
    assert kind == "function"


def test_page_shows_history_then_live_in_order(herald, exchange, redis_server, browser):
    publish(exchange, "news", [f"old {i}".encode() for i in range(1, 6)])
    wait_until(lambda: redis_seq(redis_server, "news") == 5, 10, what="sequencing")
    open_page(browser, herald, "news")
    wait_until(lambda: len(seqs(browser)) == 5, 10, what="the history on the page")
    publish(exchange, "news", [f"new {i}".encode() for i in range(6, 11)])
    rows = settled_feed(browser, 10)
    messages = [r for r in rows if r["kind"] == "message"]
    assert [m["seq"] for m in messages] == list(range(1, 11))
    assert [m["replayed"] for m in messages] == [True] * 5 + [False] * 5
    kinds = [r["kind"] for r in rows]
    divider = kinds.index("divider")
    assert [r.get("seq") for r in rows[divider - 1: divider + 2]] == [5, None, 6], "the live line sits between #5 and #6"
    texts = [m.text for m in browser.find_elements("css selector", "#feed li .data")]
    assert texts == [f"old {i}" for i in range(1, 6)] + [f"new {i}" for i in range(6, 11)]
    assert (counter(browser, "received"), counter(browser, "replayed"), counter(browser, "missed")) == (10, 5, 0)


def test_chromium_negotiates_compression_and_the_demo_runs_on_it(herald, exchange, browser):
    """Chromium always offers permessage-deflate; every browser test here runs compressed. The
    page's own socket says what was negotiated, and a large message reaches the demo page
    compressed (the node counts deflate bytes) and intact."""
    open_page(browser, herald, "zipped")
    wait_until(lambda: herald.metrics()["herald_ws_deflate_connections"] == 1, 5, what="the page's connection to compress")
    extensions = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const ws = new WebSocket(`ws://${location.host}/ws`);
        ws.onopen = () => { done(ws.extensions); ws.close(); };
        ws.onerror = () => done('error');""")
    assert extensions == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    text = "".join(f"row {i} price {i * 37 % 1000}; " for i in range(300))
    publish(exchange, "zipped", [text.encode()])
    wait_until(lambda: seqs(browser) == [1], 10, what="the large message on the page")
    assert browser.find_element("css selector", "#feed li[data-seq='1'] .data").text == text.strip()
    assert herald.labeled("herald_ws_bytes_total")['encoding="deflate"'] > 0


def test_publish_box_goes_through_the_http_api(herald, browser):
    open_page(browser, herald, "box")
    browser.find_element("id", "text").send_keys('{"price": 42}')
    browser.find_element("id", "as-json").click()
    browser.find_element("css selector", "#publish-form button").click()
    wait_until(lambda: seqs(browser) == [1], 10, what="the published message on the page")
    assert browser.find_element("css selector", "#feed li[data-seq='1'] .data").text == '{"price":42}'
    assert browser.find_element("id", "publish-result").text.startswith("accepted (202)")


def test_page_reconnects_after_herald_is_killed_and_keeps_every_seq(herald_factory, exchange, browser):
    herald = herald_factory(extra=["--history-size", "10000"]).start()
    open_page(browser, herald, "tape")
    total = 1200
    stop = paced(exchange, [("tape", f"n{i + 1}".encode(), f"tape-{i}") for i in range(total)])
    wait_until(lambda: len(seqs(browser)) >= 200, 15, what="the first live messages")
    herald.kill()
    wait_until(lambda: badge(browser) != "connected", 10, what="the page to notice")
    time.sleep(1.5)
    herald.start()
    assert stop.wait(30), "publisher did not finish"
    settled_feed(browser, total)
    shown = seqs(browser)
    assert_consecutive(shown, start=1, end=total)
    assert len(shown) == len(set(shown)) == total
    assert counter(browser, "reconnects") >= 1
    assert counter(browser, "missed") == 0
    assert badge(browser) == "connected"
    assert not [r for r in feed(browser) if r["kind"] == "gap"]


def test_reload_replays_only_what_was_missed(herald, exchange, redis_server, browser):
    publish(exchange, "reload", [f"m{i}".encode() for i in range(1, 11)])
    open_page(browser, herald, "reload")
    wait_until(lambda: len(seqs(browser)) == 10, 10, what="the first ten")
    browser.get("about:blank")  # the tab leaves the page; its sessionStorage stays
    publish(exchange, "reload", [f"m{i}".encode() for i in range(11, 16)])
    wait_until(lambda: redis_seq(redis_server, "reload") == 15, 10, what="sequencing")
    open_page(browser, herald, "reload")
    messages = [r for r in settled_feed(browser, 15) if r["kind"] == "message"]
    assert [m["seq"] for m in messages] == [11, 12, 13, 14, 15]
    assert all(m["replayed"] for m in messages)
    notes = [r["text"] for r in feed(browser) if r["kind"] == "note"]
    assert notes and notes[0] == "resumed reload: 5 missed message(s) recovered"
    assert (counter(browser, "replayed"), counter(browser, "missed")) == (5, 0)


def test_gap_is_shown_when_more_than_the_history_was_published_while_herald_was_down(
        herald_factory, exchange, redis_server, browser):
    herald = herald_factory(extra=["--history-size", "10"]).start()
    publish(exchange, "overflow", [f"m{i}".encode() for i in range(1, 6)])
    open_page(browser, herald, "overflow")
    wait_until(lambda: seqs(browser) == [1, 2, 3, 4, 5], 10, what="the first five")
    herald.kill()
    wait_until(lambda: badge(browser) != "connected", 10, what="the page to notice")
    publish(exchange, "overflow", [f"m{i}".encode() for i in range(6, 36)])
    # Another node sequences the backlog while the page's node is down, so what the page finds on
    # its return does not depend on when its retry timer fires.
    other = herald_factory(extra=["--history-size", "10"]).start()
    wait_until(lambda: redis_seq(redis_server, "overflow") == 35, 15, what="the backlog to be sequenced")
    other.stop()
    herald.start()
    rows = settled_feed(browser, 35)
    gaps = [r for r in rows if r["kind"] == "gap"]
    assert len(gaps) == 1
    assert gaps[0]["missed"] == "20"
    assert "20 message(s) missed: #6–#25" in gaps[0]["text"]
    assert seqs(browser) == [1, 2, 3, 4, 5] + list(range(26, 36))
    assert counter(browser, "missed") == 20
    gap_at = rows.index(gaps[0])
    assert rows[gap_at - 1].get("seq") == 5 or any(r.get("seq") == 5 for r in rows[:gap_at])
    assert all(r.get("seq") is None or r["seq"] >= 26 for r in rows[gap_at:])


def members(driver):
    """The members panel: {client: is_you}."""
    return driver.execute_script("""
        return Object.fromEntries([...document.querySelectorAll('#members li')].map(li => [li.dataset.client, li.dataset.you === 'true']));""")


def presence_rows(driver):
    return driver.execute_script("""
        return [...document.querySelectorAll('#feed li.presence')].map(li => [li.dataset.kind, li.dataset.clients.split(' ')]);""")


def strip(rows, own):
    """The rows without the page's own join, which must come at most once and first."""
    assert rows.count(own[0]) <= 1 and (own[0] not in rows or rows[0] == own[0]), rows
    return [r for r in rows if r != own[0]]


def test_two_pages_in_one_room_see_each_other_and_a_reload_is_one_leave_and_one_join(herald_factory, browser):
    h = herald_factory(extra=("--presence-channels", "room:*", "--presence-tick-ms", "50")).start()
    open_page(browser, h, "room:e2e")
    first = browser.current_window_handle
    wait_until(lambda: len(members(browser)) == 1, 15, what="the first page to list itself")
    me = next(iter(members(browser)))
    assert members(browser) == {me: True}

    browser.switch_to.new_window("tab")
    second = browser.current_window_handle
    open_page(browser, h, "room:e2e")
    wait_until(lambda: len(members(browser)) == 2, 15, what="the second page to list both")
    other = next(c for c, you in members(browser).items() if you)
    assert members(browser) == {me: False, other: True}

    browser.switch_to.window(first)
    wait_until(lambda: members(browser) == {me: True, other: False}, 15, what="the first page to see the second join")
    # A page's list is the server's at the moment it was read: its own join may come after it,
    # as a change like anyone's. Apart from that, the first page saw only the second one join.
    mine = [["join", [me]]]
    assert strip(presence_rows(browser), mine) == [["join", [other]]]
    # A presence line reads as one line across the feed, not one letter per line in a narrow
    # grid column: its rendered width is the feed row's, and it is one line high.
    widths = browser.execute_script("""
        const feed = document.getElementById('feed');
        return [...feed.querySelectorAll('li.presence')].map(li => {
            const range = document.createRange(); range.selectNodeContents(li);
            const lines = range.getClientRects().length;
            return [li.getBoundingClientRect().width, li.clientWidth, feed.clientWidth, lines, li.textContent];
        });""")
    assert widths
    for width, inner, feed_width, lines, text in widths:
        assert width >= 0.95 * feed_width and lines == 1, (text, width, feed_width, lines)

    browser.switch_to.window(second)
    browser.refresh()
    wait_until(lambda: badge(browser) == "connected" and len(members(browser)) == 2, 15, what="the reloaded page's list")
    again = next(c for c, you in members(browser).items() if you)
    assert again != other and set(members(browser)) == {me, again}

    browser.switch_to.window(first)
    wait_until(lambda: set(members(browser)) == {me, again}, 15, what="the first page to see the reload")
    rows = presence_rows(browser)
    assert strip(rows, mine) == [["join", [other]], ["leave", [other]], ["join", [again]]]
    # Nothing else follows: a duplicate or stray change would add a row.
    deadline = time.time() + 1.0
    while time.time() < deadline:
        assert presence_rows(browser) == rows
        time.sleep(0.1)


def eventsource_log(driver):
    return driver.execute_script("return window.heraldLog || []")


def open_eventsource(driver, herald, channels):
    driver.get(f"http://127.0.0.1:{herald.port}/examples/eventsource.html?" + "&".join(f"channel={c}" for c in channels))
    wait_until(lambda: len([e for e in eventsource_log(driver) if e["kind"] == "subscribed"]) == len(channels), 15,
               what="the EventSource to subscribe")


def test_a_plain_eventsource_resumes_two_channels_exactly_across_a_sigkill(herald_factory, exchange, browser):
    herald = herald_factory(extra=["--history-size", "10000"]).start()
    open_eventsource(browser, herald, ["es:a", "es:b"])
    total = 600  # per channel, alternating, at 200 msg/s in all
    done = paced(exchange, [("es:a" if i % 2 == 0 else "es:b", f"n{i // 2 + 1}".encode(), f"es-{i}") for i in range(2 * total)])
    wait_until(lambda: len([e for e in eventsource_log(browser) if e["kind"] == "message"]) >= 200, 15, what="live messages")
    herald.kill()
    wait_until(lambda: any(e["kind"] == "lost" for e in eventsource_log(browser)), 10, what="the page to notice")
    herald.start()
    assert done.wait(30), "publisher did not finish"

    def per_channel():
        log = eventsource_log(browser)
        return {c: [e["seq"] for e in log if e["kind"] == "message" and e["channel"] == c] for c in ("es:a", "es:b")}
    wait_until(lambda: all(s[-1:] == [total] for s in per_channel().values()), 40, what="the last message of both channels")
    seen = per_channel()
    assert seen == {"es:a": list(range(1, total + 1)), "es:b": list(range(1, total + 1))}
    log = eventsource_log(browser)
    resumed = [e for e in log if e["kind"] == "subscribed"][2:]
    assert sorted(e["channel"] for e in resumed) == ["es:a", "es:b"], "one resume of each channel after the restart"
    assert all(e["recovered"] is True and e["missed"] == 0 for e in resumed)
    assert not [e for e in log if e["kind"] in ("gap", "error")]
    last = [e for e in log if e["kind"] == "message"][-1]["id"]
    # The last id names both channels at their last seq.
    assert {item.rsplit("@", 1)[0].rsplit(":", 1)[0]: int(item.rsplit("@", 1)[0].rsplit(":", 1)[1]) for item in last.split(",")} == \
        {"es:a": total, "es:b": total}


def test_a_plain_eventsource_shows_the_gap_an_outage_longer_than_the_history_left(herald_factory, exchange, redis_server, browser):
    herald = herald_factory(extra=["--history-size", "10"]).start()
    publish(exchange, "esgap", [f"m{i}".encode() for i in range(1, 6)])
    open_eventsource(browser, herald, ["esgap"])
    wait_until(lambda: [e["seq"] for e in eventsource_log(browser) if e["kind"] == "message"] == [1, 2, 3, 4, 5], 10, what="the first five")
    herald.kill()
    wait_until(lambda: any(e["kind"] == "lost" for e in eventsource_log(browser)), 10, what="the page to notice")
    publish(exchange, "esgap", [f"m{i}".encode() for i in range(6, 36)])
    other = herald_factory(extra=["--history-size", "10"]).start()
    wait_until(lambda: redis_seq(redis_server, "esgap") == 35, 15, what="the backlog to be sequenced")
    other.stop()
    herald.start()
    wait_until(lambda: [e["seq"] for e in eventsource_log(browser) if e["kind"] == "message"][-1:] == [35], 30, what="#35")
    log = eventsource_log(browser)
    gaps = [e for e in log if e["kind"] == "gap"]
    assert [(g["channel"], g["missed"]) for g in gaps] == [("esgap", 20)]
    assert [e["seq"] for e in log if e["kind"] == "message"] == [1, 2, 3, 4, 5] + list(range(26, 36))


def test_the_demo_falls_back_to_sse_when_a_proxy_refuses_the_upgrade(herald_factory, exchange, redis_server, browser):
    from test_cluster import Nginx, _get
    herald = herald_factory(extra=["--history-size", "10000"]).start()
    lb = Nginx([herald.port], refuse_websocket=True)
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{lb.port}/healthz") == 200, 10, what="nginx to proxy")
        publish(exchange, "fallback", [f"h{i}".encode() for i in range(1, 11)])
        browser.get(f"http://127.0.0.1:{lb.port}/?channel=fallback")
        wait_until(lambda: badge(browser) == "connected", 20, what="the page to connect")
        assert browser.find_element("id", "transport").text == "over Server-Sent Events"
        wait_until(lambda: seqs(browser) == list(range(1, 11)), 10, what="the history")
        assert all(r["replayed"] for r in feed(browser) if r["kind"] == "message")

        # Live, with Herald SIGKILLed and restarted behind the proxy while publishing.
        total = 600
        done = paced(exchange, [("fallback", f"n{i + 1}".encode(), f"fb-{i}") for i in range(10, total)])
        wait_until(lambda: len(seqs(browser)) >= 100, 15, what="live messages")
        herald.kill()
        wait_until(lambda: badge(browser) != "connected", 10, what="the page to notice")
        herald.start()
        assert done.wait(30), "publisher did not finish"
        settled_feed(browser, total)
        shown = seqs(browser)
        assert shown == list(range(1, total + 1))
        assert counter(browser, "reconnects") >= 1 and counter(browser, "missed") == 0

        # A reload replays only what was missed meanwhile, still over SSE.
        browser.get("about:blank")
        publish(exchange, "fallback", [f"r{i}".encode() for i in range(1, 6)])
        wait_until(lambda: redis_seq(redis_server, "fallback") == total + 5, 10, what="sequencing")
        browser.get(f"http://127.0.0.1:{lb.port}/?channel=fallback")
        wait_until(lambda: badge(browser) == "connected", 20, what="the page to connect again")
        messages = [r for r in settled_feed(browser, total + 5) if r["kind"] == "message"]
        assert [m["seq"] for m in messages] == list(range(total + 1, total + 6))
        assert all(m["replayed"] for m in messages)
        assert browser.find_element("id", "transport").text == "over Server-Sent Events"
    finally:
        lb.stop()



def test_a_page_on_a_listed_origin_reads_history_from_another_node_with_a_token(herald_factory, exchange, browser):
    """A front end on its own origin reads history with `fetch` and `Authorization: Bearer`: the
    browser's preflight and the read succeed for an origin in `--allowed-origin`, the page reads
    the messages and the `x-herald-seq` header, and from an origin not in the list the browser
    blocks the read (the preflight is answered 403)."""
    from test_security import SECRET, jwt
    page = herald_factory().start()  # serves the page: its origin is the one listed
    api = herald_factory(extra=["--token-secret", SECRET, "--token-leeway", "0", "--allowed-origin", f"http://127.0.0.1:{page.port}"]).start()
    publish(exchange, "private:1", [b'{"n":1}', b'{"n":2}'], content_type="application/json")
    wait_until(lambda: len(json.loads(api_history(api, "private:1"))) == 2, what="both stored")
    token = jwt({"sub": "ann", "channels": ["private:*"], "exp": int(time.time()) + 3600})
    read = """
        const [url, token, done] = arguments;
        fetch(url, {headers: {Authorization: 'Bearer ' + token}})
          .then(async r => done({status: r.status, seq: r.headers.get('x-herald-seq'), body: await r.json()}))
          .catch(e => done({error: String(e)}));"""
    url = f"http://127.0.0.1:{api.port}/api/history/private:1"
    for origin in (f"http://127.0.0.1:{page.port}", f"http://localhost:{page.port}"):
        browser.get(f"{origin}/")
        got = browser.execute_async_script(read, url, token)
        if origin.startswith("http://127.0.0.1"):
            assert (got.get("status"), got.get("seq"), [m["seq"] for m in got.get("body", [])]) == (200, "2", [1, 2]), got
            assert [m["data"] for m in got["body"]] == [{"n": 1}, {"n": 2}]
        else:
            assert got == {"error": "TypeError: Failed to fetch"}, got


def api_history(h, channel):
    from test_security import SECRET, jwt
    token = jwt({"sub": "t", "channels": ["*"], "exp": int(time.time()) + 60})
    req = urllib.request.Request(f"http://127.0.0.1:{h.port}/api/history/{channel}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


def test_the_server_api_reaches_the_browser_client(herald_factory, exchange, browser):
    """A server-side subscription reaches a handler the page attached on "serverSubscribed", and
    a disconnect with the no-reconnect code (4003) stops the client for good."""
    from test_security import SECRET, jwt
    key = "browser-api-key-0123456789"
    h = herald_factory(extra=["--token-secret", SECRET, "--token-leeway", "0", "--api-key", key]).start()
    token = jwt({"sub": "ann", "channels": ["own:*"], "exp": int(time.time()) + 3600})
    browser.get(f"http://127.0.0.1:{h.port}/herald.js")  # a page of this origin that opens no connection itself
    browser.execute_async_script("""
        const [url, token, done] = arguments;
        import('/herald.js').then(({ HeraldClient }) => {
          const log = window.apiLog = {server: [], messages: [], disconnected: [], ended: []};
          const client = window.apiClient = new HeraldClient(url, {token, backoff: {initial: 100, max: 200}});
          client.on('serverSubscribed', ({channel, subscription}) => {
            log.server.push(channel);
            subscription.on('message', (m) => log.messages.push([m.channel, m.seq, m.data]));
          });
          client.on('serverUnsubscribed', (e) => log.ended.push(e));
          client.on('disconnected', (d) => log.disconnected.push(d));
          client.on('connected', () => done(true));
          client.connect();
        });""", f"ws://127.0.0.1:{h.port}/ws", token)
    log = lambda: browser.execute_script("return window.apiLog")

    def api(name, body):
        req = urllib.request.Request(f"http://127.0.0.1:{h.port}/api/{name}", data=json.dumps(body).encode(), method="POST",
                                     headers={"X-API-Key": key, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 202

    publish(exchange, "vip:ann", [b"first"])
    api("subscribe", {"user": "ann", "channel": "vip:ann"})
    wait_until(lambda: log()["messages"] == [["vip:ann", 1, "first"]], 10, what="the replayed message in the handler")
    publish(exchange, "vip:ann", [b"second"])
    wait_until(lambda: len(log()["messages"]) == 2, 10, what="the live message")
    assert log()["server"] == ["vip:ann"] and log()["messages"][1] == ["vip:ann", 2, "second"]
    api("disconnect", {"user": "ann"})
    wait_until(lambda: log()["disconnected"], 10, what="the disconnect")
    assert log()["disconnected"] == [{"code": 4003, "reason": "disconnected by the server", "willReconnect": False, "delay": None}]
    assert log()["ended"] == [{"channel": "vip:ann", "reason": "disconnected"}]
    # With a 100 ms backoff a reconnect would come within a second: none comes.
    deadline = time.time() + 2
    while time.time() < deadline:
        assert h.metrics()["herald_connections_total"] == 1
        assert browser.execute_script("return window.apiClient.state") == "disconnected"
        time.sleep(0.2)


def chat_rows(driver):
    """The feed's message rows as the page shows them: [(seq, text)]."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#feed li[data-seq]')].map(li => [Number(li.dataset.seq), li.querySelector('.data').textContent]);""")


def say(driver, name, text):
    driver.find_element("id", "chat-name").clear()
    driver.find_element("id", "chat-name").send_keys(name)
    driver.find_element("id", "chat-text").send_keys(text)
    driver.find_element("css selector", "#chat-form button").click()
    wait_until(lambda: driver.find_element("id", "chat-result").get_attribute("data-outcome") == "published", 15,
               what=f"{name}'s chat message confirmed")


def open_chat(driver, herald, channel):
    """The demo page subscribed to `channel` (client publish needs the subscription first)."""
    open_page(driver, herald, channel)
    wait_until(lambda: driver.execute_script(f"return window.heraldDemo.client.getSubscription('{channel}').state") == "subscribed", 15,
               what="the page to be subscribed")


def test_the_demo_chat_sends_and_receives_across_two_tabs_through_client_publish(herald_factory, browser):
    h = herald_factory(extra=("--client-publish", "subscribers")).start()
    open_chat(browser, h, "room:chat")
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    second = browser.current_window_handle
    open_chat(browser, h, "room:chat")
    browser.switch_to.window(first)
    say(browser, "ann", "hello from the first tab")
    browser.switch_to.window(second)
    wait_until(lambda: chat_rows(browser) == [[1, "ann: hello from the first tab"]], 15, what="the second tab to show ann's line")
    say(browser, "bob", "hi ann")
    expected = [[1, "ann: hello from the first tab"], [2, "bob: hi ann"]]
    wait_until(lambda: chat_rows(browser) == expected, 15, what="the second tab to show its own line with seq 2")
    browser.switch_to.window(first)
    wait_until(lambda: chat_rows(browser) == expected, 15, what="the first tab to show both lines")
    assert h.labeled("herald_client_publishes_total")['outcome="published"'] == 2


def test_client_rpc_resolves_with_the_workers_result_and_rejects_with_its_code(herald_factory, exchange, browser):
    from test_rpc import Worker
    worker = Worker(exchange)
    worker.start()
    try:
        h = herald_factory(extra=("--rpc-methods", "cart.*,nobody.*")).start()
        open_page(browser, h, "demo")
        outcomes = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const client = window.heraldDemo.client;
            const settle = (p) => p.then((value) => ({value}), (e) => ({code: e.code, name: e.name, message: e.message}));
            Promise.all([
                settle(client.rpc("cart.add", {sku: "a-1"})),
                settle(client.rpc("cart.fail", {})),
                settle(client.rpc("nobody.home", {})),
                settle(client.rpc("admin.stats", {})),
                settle(client.rpc("cart.slow", {}, {timeout: 300})),
            ]).then(done);""")
    finally:
        worker.stop()
    result, failed, no_route, forbidden, timeout = outcomes
    assert result["value"]["data"] == {"sku": "a-1"} and result["value"]["method"] == "cart.add"
    assert (failed["code"], failed["message"], failed["name"]) == ("worker_error", "out of stock", "HeraldRequestError")
    assert [no_route["code"], forbidden["code"], timeout["code"]] == ["no_route", "forbidden", "timeout"]


def test_a_page_the_connect_proxy_refuses_is_told_and_stops_then_connects_with_a_session(herald_factory, exchange, browser):
    """--connect-proxy-refusal close: the browser client hears 4001 with the reason (a refused
    upgrade would be only 1006, retried forever) and does not retry; once the page has a session
    cookie, connecting again is admitted as the backend's user."""
    from test_connect_proxy import Backend
    backend = Backend()
    try:
        h = herald_factory(extra=["--connect-proxy-url", backend.url, "--connect-proxy-refusal", "close"]).start()
        browser.get(f"http://127.0.0.1:{h.port}/herald.js")
        browser.execute_async_script("""
            const [url, done] = arguments;
            import('/herald.js').then(({ HeraldClient }) => {
              const log = window.proxyLog = {disconnected: [], messages: [], connected: 0};
              const client = window.proxyClient = new HeraldClient(url, {backoff: {initial: 100, max: 200}});
              client.on('disconnected', (d) => log.disconnected.push(d));
              client.on('connected', () => { log.connected += 1; });
              client.subscribe('team:1', {message: (m) => log.messages.push([m.seq, m.data])});
              client.connect();
              done(true);
            });""", f"ws://127.0.0.1:{h.port}/ws")
        log = lambda: browser.execute_script("return window.proxyLog")
        wait_until(lambda: log()["disconnected"], 10, what="the refusal")
        assert log()["disconnected"] == [{"code": 4001, "reason": "the application refused this connection (connect proxy)",
                                          "willReconnect": False, "delay": None}]
        # With a 100 ms backoff a retry would come within a second: none comes.
        deadline = time.time() + 2
        while time.time() < deadline:
            assert h.labeled("herald_connect_proxy_requests_total")['result="refused"'] == 1
            time.sleep(0.2)
        browser.execute_script("document.cookie = 'session=s-ann; path=/'; window.proxyClient.connect();")
        # The refused upgrade opened too (then closed at once, as a bad token's does): two opens.
        wait_until(lambda: log()["connected"] == 2, 10, what="the page admitted with its session")
        publish(exchange, "team:1", [b"for the team"])
        wait_until(lambda: log()["messages"] == [[1, "for the team"]], 10, what="the message on the admitted connection")
        assert backend.calls[-1]["cookies"] == {"session": "s-ann"}
    finally:
        backend.stop()
