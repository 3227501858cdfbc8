"""Who may connect and read: HS256 connection tokens (URL or auth op), channel patterns,
anonymous channels, Origin allow-list, and the counters for each refusal."""
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import time
import urllib.request
from http.client import HTTPConnection

import pytest
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from conftest import HERALD_BIN, Client, publish, wait_until

SECRET = "test-secret-0123456789abcdef"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(payload, secret=SECRET, header=None):
    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    sig = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def cli_token(sub, channels, ttl="1h"):
    out = subprocess.run([HERALD_BIN, "token", "--sub", sub, "--channels", channels, "--ttl", ttl],
                         env={**os.environ, "HERALD_TOKEN_SECRET": SECRET}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def closed_with(client, code):
    try:
        for _ in range(10):
            client.recv(timeout=5)
    except ConnectionClosed as closed:
        return closed.rcvd is not None and closed.rcvd.code == code
    return False


@pytest.fixture
def secured(herald_factory):
    # No clock-skew leeway here: these tests time exp and nbf to the second (test_tokens_idp
    # covers --token-leeway).
    return herald_factory(extra=["--token-secret", SECRET, "--token-leeway", "0"]).start()


def test_a_valid_token_reads_its_channels_and_only_those(secured, exchange):
    token = cli_token("user-1", "chat:*,news")
    c = Client(secured.ws_url(f"token={token}&channel=chat:room1"))
    auth = c.recv()
    assert auth["type"] == "authenticated" and auth["sub"] == "user-1" and auth["exp"] > time.time()
    assert c.recv()["type"] == "subscribed"
    c.send({"op": "subscribe", "channel": "news"})
    assert c.recv()["channel"] == "news"
    c.send({"op": "subscribe", "channel": "admin"})
    e = c.recv()
    assert (e["type"], e["code"], e["op"], e["channel"]) == ("error", "forbidden", "subscribe", "admin")
    c.send({"op": "subscribe", "channel": "chat"})  # "chat:*" covers chat:..., not "chat"
    assert c.recv()["code"] == "forbidden"
    publish(exchange, "chat:room1", [b"hello"])
    msgs, _ = c.recv_messages("chat:room1", 1)
    assert msgs[0]["data"] == "hello"
    assert secured.metrics()["herald_forbidden_total"] == 2
    c.close()


def test_without_a_token_nothing_is_readable_until_auth(secured):
    c = Client(secured.ws_url("channel=chat:1"))
    e = c.recv()
    assert (e["code"], e["channel"]) == ("forbidden", "chat:1")
    c.send({"op": "auth", "token": jwt({"sub": "u", "exp": int(time.time()) + 60, "channels": ["chat:1"]})})
    assert c.recv()["type"] == "authenticated"
    c.send({"op": "subscribe", "channel": "chat:1"})
    assert c.recv()["type"] == "subscribed"
    c.close()


def _claims(**extra):
    return {"sub": "u", "exp": int(time.time()) + 60, "channels": ["*"], **extra}


# Each token is built inside the test (the clock is read when the test runs, not when pytest
# collects the file), and each is refused for its own reason, which the metric label names.
BAD_TOKENS = {
    "expired": (lambda: jwt(_claims(exp=int(time.time()) - 60)), "expired"),
    "wrong secret": (lambda: jwt(_claims(), secret="another-secret-0123456"), "bad_signature"),
    "alg none": (lambda: b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(_claims()).encode()) + ".", "bad_alg"),
    "alg none signed": (lambda: jwt(_claims(), header={"alg": "none"}), "bad_alg"),
    "no exp": (lambda: jwt({"sub": "u", "channels": ["*"]}), "bad_claims"),
    "not yet valid": (lambda: jwt(_claims(nbf=int(time.time()) + 30)), "not_yet_valid"),
    "padded signature": (lambda: jwt(_claims()) + "=", "malformed"),
    "garbage": (lambda: "not.a.token", "malformed"),
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_bad_tokens_are_closed_with_4001_for_their_own_reason(secured, name):
    build, reason = BAD_TOKENS[name]
    c = Client(secured.ws_url(f"token={build()}&channel=chat:1"))
    assert closed_with(c, 4001), name
    assert secured.metrics()["herald_auth_failures_total"] == 1
    by_reason = secured.labeled("herald_auth_failures_by_reason_total")
    assert by_reason[f'reason="{reason}"'] == 1, by_reason
    assert sum(by_reason.values()) == 1
    assert f"reason={reason}" in secured.log()


def test_a_token_is_accepted_from_its_nbf_on(secured):
    now = int(time.time())
    c = Client(secured.ws_url(f"token={jwt(_claims(nbf=now - 1))}&channel=chat:1"))
    assert c.recv()["type"] == "authenticated"
    assert c.recv()["type"] == "subscribed"
    c.close()


def test_a_tampered_token_is_refused_in_the_auth_op_too(secured):
    good = jwt({"sub": "u", "exp": int(time.time()) + 60, "channels": ["chat:1"]})
    head, _, sig = good.split(".")
    widened = b64(json.dumps({"sub": "u", "exp": int(time.time()) + 60, "channels": ["*"]}).encode())
    c = Client(secured.ws_url())
    c.send({"op": "auth", "token": f"{head}.{widened}.{sig}"})
    assert closed_with(c, 4001)


def test_a_connection_is_closed_with_4002_when_its_token_expires(secured, exchange):
    exp = int(time.time()) + 5  # room for the message below on a slow machine
    c = Client(secured.ws_url(f"token={jwt({'sub': 'u', 'exp': exp, 'channels': ['chat:1']})}&channel=chat:1"))
    assert c.recv()["exp"] == exp
    assert c.recv()["type"] == "subscribed"
    publish(exchange, "chat:1", [b"before"])
    msgs, _ = c.recv_messages("chat:1", 1)
    assert msgs[0]["data"] == "before"
    try:
        while True:
            c.recv(timeout=10)  # nothing else arrives until the close
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (4002, "token expired")
    assert time.time() >= exp
    m = secured.metrics()
    assert (m["herald_token_expired_closes_total"], m["herald_auth_failures_total"]) == (1, 0)


def test_a_fresh_token_before_expiry_keeps_the_connection_and_narrows_what_it_reads(secured, exchange):
    exp = int(time.time()) + 4  # room to renew before it, on a slow machine
    c = Client(secured.ws_url(f"token={jwt({'sub': 'u', 'exp': exp, 'channels': ['chat:*']})}"))
    assert c.recv()["type"] == "authenticated"
    for ch in ("chat:1", "chat:2"):
        c.send({"op": "subscribe", "channel": ch})
        assert c.recv()["type"] == "subscribed"
    later = int(time.time()) + 60
    assert time.time() < exp - 0.5, "the machine was too slow to renew in time"
    c.send({"op": "auth", "token": jwt({"sub": "u", "exp": later, "channels": ["chat:1"]})})
    auth, err, unsub = c.recv(), c.recv(), c.recv()
    assert (auth["type"], auth["exp"]) == ("authenticated", later)
    assert (err["type"], err["code"], err["op"], err["channel"]) == ("error", "forbidden", "auth", "chat:2")
    assert (unsub["type"], unsub["channel"]) == ("unsubscribed", "chat:2")
    while time.time() < exp + 1.5:  # past the first token's expiry
        time.sleep(0.2)
    publish(exchange, "chat:2", [b"not for you"])
    publish(exchange, "chat:1", [b"still here"])
    msgs, others = c.recv_messages("chat:1", 1)
    assert msgs[0]["data"] == "still here" and others == []
    assert secured.metrics()["herald_token_expired_closes_total"] == 0
    c.close()


def test_anonymous_channels_are_readable_without_a_token(herald_factory):
    h = herald_factory(extra=["--token-secret", SECRET, "--token-leeway", "0", "--anonymous-channels", "public:*"]).start()
    c = Client(h.ws_url("channel=public:lobby&channel=private"))
    frames = [c.recv(), c.recv()]
    assert {f["type"] for f in frames} == {"subscribed", "error"}
    assert [f for f in frames if f["type"] == "error"][0]["code"] == "forbidden"
    c.close()


def upgrade_status(port, origin, forwarded_for=None):
    """The HTTP status code Herald answers a WebSocket upgrade with."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        headers = "".join(f"{k}: {v}\r\n" for k, v in {
            "Host": f"127.0.0.1:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
            **({"Origin": origin} if origin else {}),
            **({"X-Forwarded-For": forwarded_for} if forwarded_for else {})}.items())
        s.sendall(f"GET /ws?channel=a HTTP/1.1\r\n{headers}\r\n".encode())
        return s.recv(4096).split(b"\r\n")[0].decode().split(" ")[1]


def test_a_foreign_origin_is_refused_before_the_upgrade(herald_factory):
    h = herald_factory(extra=["--allowed-origin", "https://app.example.com"]).start()
    assert upgrade_status(h.port, "https://evil.example.com") == "403"
    assert upgrade_status(h.port, None) == "403"  # no Origin at all
    with pytest.raises((InvalidStatus, InvalidMessage)):
        Client(h.ws_url("channel=a"), origin="https://evil.example.com")
    ok = Client(h.ws_url("channel=a"), origin="https://app.example.com")
    assert ok.recv()["type"] == "subscribed"
    ok.close()
    assert h.metrics()["herald_origin_refused_total"] == 3


def cors_request(port, method, path, headers=()):
    conn = HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=dict(headers))
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_history_and_presence_answer_cors_for_listed_origins_only(herald_factory):
    """The CORS a browser needs to read history or presence with a token from a listed origin:
    its preflight, and the headers on every answer (an error too, so the page can read it).
    A foreign origin's preflight is 403; publishing offers no CORS (its key stays in backends)."""
    app = "https://app.example.com"
    h = herald_factory(extra=["--token-secret", SECRET, "--token-leeway", "0", "--allowed-origin", app, "--presence-channels", "room:*"]).start()
    for path in ("/api/history/private:1", "/api/presence/room:1"):
        status, headers, body = cors_request(h.port, "OPTIONS", path, [("Origin", app), ("Access-Control-Request-Method", "GET"),
                                                                ("Access-Control-Request-Headers", "authorization")])
        assert (status, body, headers["content-length"]) == (200, b"", "0"), (path, status, body)
        assert {k: headers.get(k) for k in ("access-control-allow-origin", "access-control-allow-methods",
                                            "access-control-allow-headers", "access-control-max-age", "vary")} == {
            "access-control-allow-origin": app, "access-control-allow-methods": "GET, HEAD",
            "access-control-allow-headers": "authorization, x-api-key", "access-control-max-age": "600", "vary": "Origin"}
        status, headers, body = cors_request(h.port, "OPTIONS", path, [("Origin", "https://evil.example.com"),
                                                                ("Access-Control-Request-Method", "GET")])
        assert (status, json.loads(body)) == (403, {"error": "origin_not_allowed",
                                                    "message": "origin https://evil.example.com is not allowed (--allowed-origin)"})
        assert "access-control-allow-origin" not in headers
        status, headers, body = cors_request(h.port, "OPTIONS", path, [("Origin", app), ("Access-Control-Request-Method", "DELETE")])
        assert (status, headers.get("allow"), json.loads(body)["error"]) == (405, "GET, HEAD", "method_not_allowed")
    token = jwt({"sub": "ann", "channels": ["private:*"], "exp": int(time.time()) + 3600})
    status, headers, body = cors_request(h.port, "GET", "/api/history/private:1", [("Origin", app), ("Authorization", f"Bearer {token}")])
    assert (status, body, headers["x-herald-seq"]) == (200, b"[]", "0")
    assert (headers["access-control-allow-origin"], headers["access-control-expose-headers"]) == (app, "x-herald-epoch, x-herald-seq")
    status, headers, _ = cors_request(h.port, "GET", "/api/history/private:1", [("Origin", app)])
    assert (status, headers["access-control-allow-origin"]) == (401, app)
    status, headers, _ = cors_request(h.port, "GET", "/api/history/private:1", [("Origin", "https://evil.example.com"), ("Authorization", f"Bearer {token}")])
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = cors_request(h.port, "OPTIONS", "/api/publish/private:1", [("Origin", app), ("Access-Control-Request-Method", "POST")])
    assert (status, headers.get("allow")) == (405, "POST") and "access-control-allow-origin" not in headers


def test_without_a_secret_tokens_are_refused_and_everything_is_open(herald):
    c = Client(herald.ws_url("channel=anything"))
    assert c.recv()["type"] == "subscribed"
    c.close()
    t = Client(herald.ws_url("token=x.y.z&channel=a"))
    assert closed_with(t, 4001)


# Limits: each one triggers, and each is counted in /metrics.

def test_subscriptions_per_connection_are_limited(herald_factory):
    h = herald_factory(extra=["--max-subscriptions", "3"]).start()
    c = Client(h.ws_url("channel=a&channel=b&channel=c"))
    assert [c.recv()["type"] for _ in range(3)] == ["subscribed"] * 3
    c.send({"op": "subscribe", "channel": "d"})
    e = c.recv()
    assert (e["code"], e["channel"]) == ("too_many_subscriptions", "d")
    c.send({"op": "subscribe", "channel": "a"})  # re-subscribing an existing one is fine
    assert c.recv()["type"] == "subscribed"
    assert h.metrics()["herald_subscription_limit_total"] == 1
    c.close()


def test_client_frames_per_second_are_limited(herald_factory):
    h = herald_factory(extra=["--max-client-ops", "5"]).start()  # bursts up to 25
    c = Client(h.ws_url())
    for i in range(60):
        c.send({"op": "unsubscribe", "channel": f"c{i}"})
    frames = []
    try:
        while True:
            frames.append(c.recv(timeout=2))
    except TimeoutError:
        pass
    answered = [f for f in frames if f["type"] == "unsubscribed"]
    limited = [f for f in frames if f.get("code") == "rate_limited"]
    assert 25 <= len(answered) < 60 and len(limited) == 1, "excess frames dropped, told once"
    assert h.metrics()["herald_rate_limited_total"] == 60 - len(answered)
    c.close()


def test_connections_per_address_and_in_total_are_limited(herald_factory):
    h = herald_factory(extra=["--max-connections-per-ip", "2"]).start()
    a, b = Client(h.ws_url()), Client(h.ws_url())
    assert upgrade_status(h.port, None) == "429"
    a.close()
    wait_until_metric(h, "herald_connections", 1)
    assert upgrade_status(h.port, None) == "101"
    assert h.metrics()["herald_address_full_refused_total"] == 1
    b.close()
    full = herald_factory(extra=["--max-connections", "1"]).start()
    only = Client(full.ws_url())
    assert upgrade_status(full.port, None) == "503"
    assert full.metrics()["herald_server_full_refused_total"] == 1
    only.close()


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(herald_factory):
    h = herald_factory(extra=["--max-connections-per-ip", "2", "--trusted-proxies", "10.0.0.0/8,127.0.0.1"]).start()
    # The proxy appends the address it saw; what the client claimed to its left is ignored.
    a = Client(h.ws_url(), additional_headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
    b = Client(h.ws_url(), additional_headers={"X-Forwarded-For": "203.0.113.7, 10.1.1.1"})  # two proxies deep
    assert upgrade_status(h.port, None, forwarded_for="203.0.113.7") == "429"
    assert upgrade_status(h.port, None, forwarded_for="203.0.113.8") == "101"
    assert upgrade_status(h.port, None, forwarded_for="not-an-address") == "101"  # counts as the proxy itself
    assert h.metrics()["herald_address_full_refused_total"] == 1
    a.close(), b.close()

    # Without --trusted-proxies the header is ignored: a client cannot pick its own address.
    plain = herald_factory(extra=["--max-connections-per-ip", "2"]).start()
    c = Client(plain.ws_url(), additional_headers={"X-Forwarded-For": "198.51.100.1"})
    d = Client(plain.ws_url(), additional_headers={"X-Forwarded-For": "198.51.100.2"})
    assert upgrade_status(plain.port, None, forwarded_for="198.51.100.3") == "429"
    c.close(), d.close()

    bad = subprocess.run([HERALD_BIN, "serve", "--trusted-proxies", "10.0.0.0/33"], capture_output=True, text=True, timeout=10)
    assert bad.returncode != 0 and "--trusted-proxies 10.0.0.0/33: not an IP address or CIDR range" in bad.stderr


@pytest.mark.parametrize("sent", [b"GET /ws HTTP/1.1\r\nHost: x\r\n", b""], ids=["part of a request", "nothing"])
def test_a_client_that_never_finishes_the_handshake_is_dropped(herald_factory, sent):
    # Herald's acceptor takes lws's own timeouts off new sockets; its handshake deadline must
    # still hang up on a client that sends half a request, or nothing at all.
    h = herald_factory(extra=["--handshake-timeout", "2"]).start()
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
        if sent:
            s.sendall(sent)  # and never the rest
        start = time.time()
        answer = b""
        while chunk := s.recv(1024):
            answer += chunk
        assert 1.5 < time.time() - start < 8
        if sent:  # half a request is told why (408); a silent connection is just closed
            assert answer.startswith(b"HTTP/1.1 408 ") and b'"error":"request_timeout"' in answer, answer
        else:
            assert answer == b""
    wait_until_metric(h, "herald_incomplete_handshakes_total", 1)
    # A client that does finish in time is served.
    c = Client(h.ws_url("channel=after"))
    assert c.recv()["type"] == "subscribed"
    c.close()


def test_a_dead_peer_is_closed_after_the_pong_timeout_and_a_live_one_is_not(herald_factory, exchange):
    h = herald_factory(extra=["--ping-interval", "1", "--pong-timeout", "1"]).start()
    live = Client(h.ws_url("channel=ping"))
    assert live.recv()["type"] == "subscribed"
    with socket.create_connection(("127.0.0.1", h.port), timeout=15) as s:
        s.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        received = b""
        start = time.time()
        while True:  # read (pings included) and never answer
            chunk = s.recv(4096)
            if not chunk:
                break
            received += chunk
        assert received.startswith(b"HTTP/1.1 101")
        assert b"\x89" in received, "the server pinged"
        assert time.time() - start < 10
    publish(exchange, "ping", [b"still here"])
    msgs, _ = live.recv_messages("ping", 1)  # the live client answered its pings and stayed
    assert msgs[0]["data"] == "still here"
    assert h.metrics()["herald_dead_peers_total"] == 1
    live.close()


def wait_until_metric(h, name, value):
    from conftest import wait_until
    wait_until(lambda: h.metrics()[name] == value, 5, what=f"{name} == {value}")


# The HTTP API applies the WebSocket rules.

def http(method, url, body=None, headers=None):
    """(status, parsed JSON body, headers) of a request, errors included."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def test_history_api_follows_the_rule_of_subscribing(herald_factory, exchange):
    h = herald_factory(extra=["--token-secret", SECRET, "--token-leeway", "0", "--anonymous-channels", "public:*", "--api-key", "k-123"]).start()
    publish(exchange, "chat:1", [b"secret"])
    publish(exchange, "public:1", [b"open"])
    wait_until(lambda: h.metrics()["herald_messages_in_total"] == 2, 10, what="sequencing")
    base = f"http://127.0.0.1:{h.port}/api/history/"
    bearer = lambda t: {"Authorization": f"Bearer {t}"}

    status, body, _ = http("GET", base + "public:1")                      # anonymous channel
    assert status == 200 and [m["data"] for m in body] == ["open"]
    status, body, _ = http("GET", base + "chat:1", headers=bearer(jwt(_claims(channels=["chat:*"]))))  # covered
    assert status == 200 and [m["data"] for m in body] == ["secret"]
    status, body, _ = http("GET", base + "chat:1", headers=bearer(jwt(_claims(channels=["news"]))))    # not covered
    assert (status, body["error"]) == (403, "forbidden"), body
    status, body, _ = http("GET", base + "chat:1", headers=bearer(jwt(_claims(exp=int(time.time()) - 1))))  # expired
    assert (status, body["error"], body["message"]) == (401, "unauthorized", "invalid token: token expired")
    status, body, _ = http("GET", base + "chat:1", headers=bearer(jwt(_claims(), secret="another-secret-0123456")))
    assert (status, body["message"]) == (401, "invalid token: bad signature")
    status, body, _ = http("GET", base + "chat:1", headers={"X-API-Key": "k-123"})                 # API key
    assert status == 200 and [m["data"] for m in body] == ["secret"]
    status, body, _ = http("GET", base + "chat:1", headers={"X-API-Key": "k-wrong"})
    assert (status, body["error"]) == (401, "unauthorized")
    status, body, _ = http("GET", base + "chat:1")                                               # nothing
    assert (status, body["error"]) == (401, "unauthorized") and "needs a connection token" in body["message"]
    assert h.metrics()["herald_http_auth_refused_total"] == 5


def test_http_publish_needs_an_api_key_whenever_reading_is_protected(herald_factory):
    h = herald_factory(extra=["--token-secret", SECRET, "--token-leeway", "0"]).start()
    status, body, _ = http("POST", f"http://127.0.0.1:{h.port}/api/publish/chat:private", b"injected")
    assert (status, body["error"]) == (401, "unauthorized"), body
    assert "needs an API key" in body["message"]
    assert "HTTP publishing is refused (401)" in h.log()
    assert h.metrics()["herald_messages_in_total"] == 0

    keyed = herald_factory(extra=["--token-secret", SECRET, "--token-leeway", "0", "--api-key", "k-1"]).start()
    url = f"http://127.0.0.1:{keyed.port}/api/publish/chat:private"
    assert http("POST", url, b"x")[0] == 401
    assert http("POST", url, b"x", headers={"X-API-Key": "k-1"})[0] == 202


def test_the_open_demo_says_it_is_open(herald):
    assert "OPEN: no token keys (--token-secret, --jwks-url, ...) and no --api-key" in herald.log()
    assert http("POST", f"http://127.0.0.1:{herald.port}/api/publish/demo", b"x")[0] == 202


# Refusals before the upgrade are HTTP/1.1 responses with a JSON body that clients can read.

def refused_by_websockets(url, **kw):
    """The status and JSON body Python's websockets reports for a refused upgrade."""
    with pytest.raises(InvalidStatus) as refused:
        Client(url, **kw)
    response = refused.value.response
    return response.status_code, json.loads(response.body)


def raw_response(port, request):
    """Parses Herald's answer to a raw request with http.client, as an HTTP/1.1 response."""
    import http.client
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request.encode())
        response = http.client.HTTPResponse(s)
        response.begin()
        return response.version, response.status, json.loads(response.read()), response.getheader("sec-websocket-version")


def test_every_refusal_before_the_upgrade_is_a_readable_http_11_response(herald_factory):
    h = herald_factory(extra=["--allowed-origin", "https://app.example.com", "--max-connections-per-ip", "1"]).start()
    assert refused_by_websockets(h.ws_url(), origin="https://evil.example.com") == (
        403, {"error": "origin_not_allowed", "message": "origin https://evil.example.com is not allowed (--allowed-origin)"})
    status, body = refused_by_websockets(f"ws://127.0.0.1:{h.port}/elsewhere", origin="https://app.example.com")
    assert (status, body["error"]) == (404, "not_found")
    first = Client(h.ws_url(), origin="https://app.example.com")
    status, body = refused_by_websockets(h.ws_url(), origin="https://app.example.com")
    assert (status, body["error"]) == (429, "too_many_connections")
    first.close()

    full = herald_factory(extra=["--max-connections", "1"]).start()
    only = Client(full.ws_url())
    status, body = refused_by_websockets(full.ws_url())
    assert (status, body["error"]) == (503, "server_full")
    only.close()

    upgrade = f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: https://app.example.com\r\n"
    version, status, body, _ = raw_response(h.port, upgrade + "Sec-WebSocket-Version: 13\r\n\r\n")  # no key
    assert (version, status, body["error"]) == (11, 400, "bad_upgrade")
    version, status, body, _ = raw_response(h.port, upgrade + "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert (version, status, body["error"]) == (11, 400, "bad_upgrade")
    version, status, body, supported = raw_response(
        h.port, upgrade + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    assert (version, status, body["error"], supported) == (11, 426, "bad_upgrade", "13")
    assert h.metrics()["herald_bad_upgrades_refused_total"] == 3


# Health for orchestrators: liveness never depends on RabbitMQ or Redis.

def test_livez_stays_up_while_readyz_and_healthz_report_redis_down(herald, redis_server):
    base = f"http://127.0.0.1:{herald.port}"
    assert http("GET", base + "/livez")[:2] == (200, {"status": "ok", "node": herald.health()[1]["node"]})
    assert http("GET", base + "/readyz")[0] == 200
    redis_server.stop(save=False)
    try:
        wait_until(lambda: http("GET", base + "/readyz")[0] == 503, 15, what="readyz to report Redis down")
        status, body, _ = http("GET", base + "/readyz")
        assert (body["status"], body["redis"]) == ("degraded", "down")
        assert http("GET", base + "/healthz")[0] == 503
        assert http("GET", base + "/livez")[0] == 200
    finally:
        redis_server.start()
    wait_until(lambda: http("GET", base + "/readyz")[0] == 200, 30, what="readyz after Redis is back")
