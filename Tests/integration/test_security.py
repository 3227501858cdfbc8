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

import pytest
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from conftest import HERALD_BIN, Client, publish

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
    return herald_factory(extra=["--token-secret", SECRET]).start()


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


@pytest.mark.parametrize("name,token", [
    ("expired", jwt({"sub": "u", "exp": int(time.time()) - 5, "channels": ["*"]})),
    ("wrong secret", jwt({"sub": "u", "exp": int(time.time()) + 60, "channels": ["*"]}, secret="another-secret-0123456")),
    ("alg none", b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps({"sub": "u", "exp": int(time.time()) + 60, "channels": ["*"]}).encode()) + "."),
    ("alg none signed", jwt({"sub": "u", "exp": int(time.time()) + 60, "channels": ["*"]}, header={"alg": "none"})),
    ("no exp", jwt({"sub": "u", "channels": ["*"]})),
    ("garbage", "not.a.token"),
])
def test_bad_tokens_are_closed_with_4001(secured, name, token):
    c = Client(secured.ws_url(f"token={token}&channel=chat:1"))
    assert closed_with(c, 4001), name
    assert secured.metrics()["herald_auth_failures_total"] == 1


def test_a_tampered_token_is_refused_in_the_auth_op_too(secured):
    good = jwt({"sub": "u", "exp": int(time.time()) + 60, "channels": ["chat:1"]})
    head, _, sig = good.split(".")
    widened = b64(json.dumps({"sub": "u", "exp": int(time.time()) + 60, "channels": ["*"]}).encode())
    c = Client(secured.ws_url())
    c.send({"op": "auth", "token": f"{head}.{widened}.{sig}"})
    assert closed_with(c, 4001)


def test_anonymous_channels_are_readable_without_a_token(herald_factory):
    h = herald_factory(extra=["--token-secret", SECRET, "--anonymous-channels", "public:*"]).start()
    c = Client(h.ws_url("channel=public:lobby&channel=private"))
    frames = [c.recv(), c.recv()]
    assert {f["type"] for f in frames} == {"subscribed", "error"}
    assert [f for f in frames if f["type"] == "error"][0]["code"] == "forbidden"
    c.close()


def upgrade_status(port, origin):
    """The status line Herald answers a WebSocket upgrade with."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        headers = "".join(f"{k}: {v}\r\n" for k, v in {
            "Host": f"127.0.0.1:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
            **({"Origin": origin} if origin else {})}.items())
        s.sendall(f"GET /ws?channel=a HTTP/1.1\r\n{headers}\r\n".encode())
        return s.recv(4096).split(b"\r\n")[0].decode()


def test_a_foreign_origin_is_refused_before_the_upgrade(herald_factory):
    h = herald_factory(extra=["--allowed-origin", "https://app.example.com"]).start()
    assert upgrade_status(h.port, "https://evil.example.com").endswith("403 Forbidden")
    assert upgrade_status(h.port, None).endswith("403 Forbidden")  # no Origin at all
    with pytest.raises((InvalidStatus, InvalidMessage)):
        Client(h.ws_url("channel=a"), origin="https://evil.example.com")
    ok = Client(h.ws_url("channel=a"), origin="https://app.example.com")
    assert ok.recv()["type"] == "subscribed"
    ok.close()
    assert h.metrics()["herald_origin_refused_total"] == 3


def test_without_a_secret_tokens_are_refused_and_everything_is_open(herald):
    c = Client(herald.ws_url("channel=anything"))
    assert c.recv()["type"] == "subscribed"
    c.close()
    t = Client(herald.ws_url("token=x.y.z&channel=a"))
    assert closed_with(t, 4001)
