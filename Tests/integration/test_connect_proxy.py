"""The connect proxy: a local backend maps a session cookie to a user and channels; Herald asks
it at every upgrade (and SSE request), takes its answer, refuses what it refuses, and answers
503 at once, without hanging, when it is down or slow."""
import http.server
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import HERALD_BIN, Client, free_port, publish, wait_until

SESSIONS = {"s-ann": {"user": "ann", "channels": ["team:*"], "info": {"name": "Ann"}, "publish": ["team:*"], "rpc": ["team.*"]},
            "s-bob": {"user": "bob", "channels": ["bob:*"]}}


class Backend:
    """The application's session endpoint; `delay` makes it slow, `stop()` takes it down."""

    def __init__(self):
        self.calls = []
        self.delay = 0
        self.expire_at = None
        self.subscribe_status = None   # force an answer to subscribe checks (500: broken)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls.append(body)
                if self.path == "/herald/subscribe":
                    allowed = body["channel"] == f"vip:{body['user']}"
                    self.send_response(outer.subscribe_status or (200 if allowed else 403))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if outer.delay:
                    time.sleep(outer.delay)  # the backend being slow is the subject here
                session = SESSIONS.get(body["cookies"].get("session"))
                if session is None:
                    self.send_response(403 if body["cookies"].get("session") == "s-banned" else 401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = dict(session)
                if outer.expire_at:
                    answer["expire_at"] = outer.expire_at
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/herald/connect"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend():
    b = Backend()
    yield b
    try:
        b.stop()
    except Exception:
        pass


def proxied(herald_factory, backend, *extra):
    return herald_factory(extra=["--connect-proxy-url", backend.url, "--connect-proxy-timeout", "1", *extra]).start()


def test_the_backend_names_the_user_and_channels(herald_factory, backend, exchange):
    node = proxied(herald_factory, backend, "--token-secret", "proxy-secret-0123456789abcdef", "--client-publish", "token")
    c = Client(node.ws_url("channel=team:1&lang=en"), additional_headers={"Cookie": "theme=dark; session=s-ann", "User-Agent": "test-agent"})
    auth = c.recv()
    assert (auth["type"], auth.get("sub")) == ("authenticated", "ann"), auth
    assert c.recv()["type"] == "subscribed"
    c.send({"op": "subscribe", "channel": "bob:1"})
    e = c.recv()
    assert (e["code"], e["channel"]) == ("forbidden", "bob:1")
    publish(exchange, "team:1", [b"hello team"])
    msgs, _ = c.recv_messages("team:1", 1)
    assert msgs[0]["data"] == "hello team"
    # The answer's publish list works as a token's publish claim (client-publish: token).
    c.send({"op": "publish", "channel": "team:1", "data": "from ann", "id": "p1"})
    frames = [c.recv(), c.recv()]   # the answer and the message, in either order
    answer = next(f for f in frames if f.get("id") == "p1")
    message = next(f for f in frames if f.get("type") == "message")
    assert answer["type"] == "published"
    assert message["data"] == "from ann" and message["id"] == "client:ann:p1"
    call = backend.calls[-1]
    assert call["transport"] == "websocket" and call["path"] == "/ws" and call["remote_addr"] == "127.0.0.1"
    assert call["cookies"] == {"theme": "dark", "session": "s-ann"}
    assert call["query"] == {"channel": "team:1", "lang": "en"}
    assert call["headers"]["user-agent"] == "test-agent"
    assert node.labeled("herald_connect_proxy_requests_total")['result="ok"'] == 1


def test_a_refused_cookie_refuses_the_upgrade_with_herald_json(herald_factory, backend):
    node = proxied(herald_factory, backend)
    with pytest.raises(InvalidStatus) as refused:
        Client(node.ws_url(), additional_headers={"Cookie": "session=stolen"})
    response = refused.value.response
    assert response.status_code == 401
    assert json.loads(response.body) == {"error": "unauthorized", "message": "the application refused this connection (connect proxy)"}
    # The SSE transport is asked too.
    try:
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{node.port}/sse?channel=x", headers={"Cookie": "session=nope"}), timeout=5)
        raise AssertionError("the stream was not refused")
    except urllib.error.HTTPError as e:
        assert e.code == 401 and json.loads(e.read())["error"] == "unauthorized"
    assert node.labeled("herald_connect_proxy_requests_total")['result="refused"'] == 2


def test_with_refusal_close_a_refused_websocket_is_closed_with_a_code_the_browser_can_read(herald_factory, backend, exchange):
    """--connect-proxy-refusal close: a browser sees a refused upgrade only as 1006 and retries;
    completed, then closed with 4001 (401) or 4003 (403) and the reason, it can tell, and the
    web client stops. Nothing is subscribed first. SSE keeps the HTTP status."""
    node = proxied(herald_factory, backend, "--connect-proxy-refusal", "close")
    reason = "the application refused this connection (connect proxy)"
    for cookie, code in [("session=stolen", 4001), ("session=s-banned", 4003)]:
        c = Client(node.ws_url("channel=team:1"), additional_headers={"Cookie": cookie})
        with pytest.raises(ConnectionClosed) as closed:
            c.recv(timeout=5)   # no frame comes first: not subscribed, not authenticated
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, reason), cookie
    ok = Client(node.ws_url("channel=team:1"), additional_headers={"Cookie": "session=s-ann"})
    assert ok.recv()["type"] == "authenticated" and ok.recv()["type"] == "subscribed"
    try:
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{node.port}/sse?channel=x", headers={"Cookie": "session=s-banned"}), timeout=5)
        raise AssertionError("the stream was not refused")
    except urllib.error.HTTPError as e:
        assert e.code == 403 and json.loads(e.read()) == {"error": "forbidden", "message": reason}
    assert node.labeled("herald_connect_proxy_requests_total")['result="refused"'] == 3
    # A close is counted when lws has finished it, which may come after the client saw the frame.
    closes = lambda: node.labeled("herald_connection_closes_total")
    wait_until(lambda: (closes()['code="4001"'], closes()['code="4003"']) == (1, 1), 10, what="one close of each code counted")


def test_a_bad_connect_proxy_refusal_mode_is_refused_at_start():
    out = subprocess.run([HERALD_BIN, "serve", "--connect-proxy-refusal", "silent"], capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and '--connect-proxy-refusal must be status or close, not "silent"' in out.stderr, out.stderr


@pytest.mark.parametrize("failure", ["down", "slow"])
def test_a_backend_that_is_down_or_slow_gets_a_clear_503_and_nothing_hangs(herald_factory, backend, failure):
    node = proxied(herald_factory, backend)
    if failure == "down":
        backend.stop()
    else:
        backend.delay = 3   # past --connect-proxy-timeout 1
    with pytest.raises(InvalidStatus) as refused:
        Client(node.ws_url(), additional_headers={"Cookie": "session=s-ann"}, open_timeout=10)
    response = refused.value.response
    assert response.status_code == 503
    body = json.loads(response.body)
    assert body["error"] == "connect_proxy_unavailable" and body["message"].endswith("; retry")
    assert node.labeled("herald_connect_proxy_requests_total")['result="error"'] == 1
    assert "connect proxy unavailable: upgrade refused with 503" in node.log()
    # The node itself is fine: its HTTP API answers while upgrades are refused.
    assert node.health()[0] == 200


def test_expire_at_closes_the_connection_like_a_token(herald_factory, backend):
    node = proxied(herald_factory, backend)
    backend.expire_at = int(time.time()) + 2
    c = Client(node.ws_url(), additional_headers={"Cookie": "session=s-bob"})
    auth = c.recv()
    assert (auth["sub"], auth["exp"]) == ("bob", backend.expire_at)
    try:
        while True:
            c.recv(timeout=10)
    except ConnectionClosed as closed:
        assert (closed.rcvd.code, closed.rcvd.reason) == (4002, "token expired")


def test_a_subscribe_proxy_decides_a_namespace_s_subscribes(herald_factory, backend, exchange, tmp_path):
    config = tmp_path / "herald.yaml"
    config.write_text(f"""
namespaces:
  - name: vip
    pattern: "vip:*"
    subscribe-proxy-url: "http://127.0.0.1:{backend.port}/herald/subscribe"
""")
    secret = "subscribe-proxy-secret-0123456789abcdef"
    node = herald_factory(extra=["--config", str(config), "--token-secret", secret, "--connect-proxy-timeout", "1"]).start()
    import jwt as pyjwt
    tok = pyjwt.encode({"sub": "ann", "exp": int(time.time()) + 600, "channels": ["*"]}, secret, algorithm="HS256")
    c = Client(node.ws_url(f"token={tok}"))
    assert c.recv()["type"] == "authenticated"
    c.send({"op": "subscribe", "channel": "vip:ann"})
    assert c.recv()["type"] == "subscribed"
    assert backend.calls[-1] == {"user": "ann", "client": backend.calls[-1]["client"], "channel": "vip:ann"}
    publish(exchange, "vip:ann", [b"welcome"])
    msgs, _ = c.recv_messages("vip:ann", 1)
    assert msgs[0]["data"] == "welcome"
    # Her token covers every channel, but in this namespace the application decides.
    c.send({"op": "subscribe", "channel": "vip:bob"})
    e = c.recv()
    assert (e["code"], e["channel"], e["message"]) == ("forbidden", "vip:bob", "the application refused this subscription (subscribe proxy)")
    backend.subscribe_status = 500
    c.send({"op": "subscribe", "channel": "vip:ann2"})
    e = c.recv()
    assert (e["code"], e["channel"]) == ("subscribe_proxy_unavailable", "vip:ann2")
    counts = node.labeled("herald_subscribe_proxy_requests_total")
    assert (counts['result="ok"'], counts['result="refused"'], counts['result="error"']) == (1, 1, 1)
    # Other channels go by the token, without asking.
    asked = len(backend.calls)
    c.send({"op": "subscribe", "channel": "news"})
    assert c.recv()["type"] == "subscribed" and len(backend.calls) == asked
