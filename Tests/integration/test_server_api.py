"""The server API on two nodes: disconnect (and revoke) a user everywhere, subscribe and
unsubscribe a user's connections, broadcast to many channels once, over HTTP and as AMQP
messages on <exchange>.control; and its refusals."""
import base64
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request

import pika
import pytest
from websockets.exceptions import ConnectionClosed

from conftest import ROOT, Client, amqp_channel, publish, wait_until

SECRET = "server-api-secret-0123456789"
KEY = "api-key-0123456789"
REPORT = os.path.join(ROOT, "test-output", "server-api.json")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub, channels=("x:*",), iat=None):
    now = int(time.time())
    payload = {"sub": sub, "exp": now + 600, "iat": now if iat is None else iat, "channels": list(channels)}
    head = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}." + b64(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())


def api(node, name, body, key=KEY):
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}/api/{name}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **({"X-API-Key": key} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def control(exchange, name, body):
    """What a backend that speaks only AMQP does: publish the command to <exchange>.control."""
    conn, ch = amqp_channel()
    ch.confirm_delivery()
    ch.basic_publish(f"{exchange}.control", name, json.dumps(body).encode(), pika.BasicProperties(content_type="application/json"))
    conn.close()


def connect(node, tok, query=""):
    c = Client(node.ws_url(f"token={tok}" + (f"&{query}" if query else "")))
    assert c.recv()["type"] == "authenticated"
    return c


def closed(client, timeout=5):
    """The close code and reason, and when it came (time.monotonic())."""
    try:
        while True:
            client.recv(timeout=timeout)
    except ConnectionClosed as e:
        return (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, None), time.monotonic()


def refused_reason(node, tok):
    c = Client(node.ws_url(f"token={tok}"))
    (code, reason), _ = closed(c)
    return code, reason


def report(key, value):
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    data = json.load(open(REPORT)) if os.path.exists(REPORT) else {}
    data[key] = value
    json.dump(data, open(REPORT, "w"), indent=2)


@pytest.fixture
def nodes(herald_factory):
    extra = ["--token-secret", SECRET, "--token-leeway", "0", "--api-key", KEY, "--anonymous-channels", "open:*"]
    return [herald_factory(extra=["--node-id", f"n{i}", *extra]).start() for i in (1, 2)]


@pytest.mark.parametrize("via", ["http", "amqp"])
def test_disconnect_closes_a_user_on_every_node_and_no_one_else(nodes, exchange, via):
    n1, n2 = nodes
    ann = [connect(n1, token("ann")), connect(n1, token("ann")), connect(n2, token("ann"))]
    bob = [connect(n1, token("bob"), "channel=open:news"), connect(n2, token("bob"), "channel=open:news")]
    for b in bob:
        assert b.recv()["type"] == "subscribed"
    start = time.monotonic()
    if via == "http":
        assert api(n1, "disconnect", {"user": "ann"}) == (202, {"command": "disconnect", "accepted": True})
    else:
        control(exchange, "disconnect", {"user": "ann"})
    latest = 0
    for c in ann:
        (code, reason), at = closed(c)
        assert (code, reason) == (4003, "disconnected by the server")
        latest = max(latest, at - start)
    report(f"disconnect_{via}_seconds", round(latest, 3))
    publish(exchange, "open:news", [b"still here"])
    for b in bob:
        msgs, _ = b.recv_messages("open:news", 1)
        assert msgs[0]["data"] == "still here"
    for n in nodes:
        assert n.metrics()["herald_server_disconnects_total"] == (2 if n is n1 else 1)
        # A close is counted when lws has finished it, which may come after the client saw the frame.
        wait_until(lambda: n.labeled("herald_connection_closes_total")['code="4003"'] == (2 if n is n1 else 1), 10,
                   what="the 4003 closes counted")


def test_disconnect_with_reconnect_and_by_client_id(herald_factory):
    node = herald_factory(extra=["--token-secret", SECRET, "--token-leeway", "0", "--api-key", KEY,
                                 "--presence-channels", "room:*"]).start()
    a = connect(node, token("ann"))
    assert api(node, "disconnect", {"user": "ann", "reconnect": True, "reason": "maintenance"})[0] == 202
    assert closed(a)[0] == (4005, "maintenance")
    # One connection by its client id, as presence (and lifecycle events) name it.
    b1, b2 = connect(node, token("bob", channels=("room:*",)), "channel=room:1"), connect(node, token("bob", channels=("room:*",)), "channel=room:1")
    for b in (b1, b2):
        assert b.recv()["type"] == "subscribed"
    def members():
        request = urllib.request.Request(f"http://127.0.0.1:{node.port}/api/presence/room:1", headers={"X-API-Key": KEY})
        listed = json.loads(urllib.request.urlopen(request, timeout=5).read())["members"]
        return listed if len(listed) == 2 else None
    first = wait_until(members, 10, what="both members")[0]["client"]
    assert api(node, "disconnect", {"client": first})[0] == 202
    codes = []
    for b in (b1, b2):
        try:
            b.send({"op": "subscribe", "channel": "room:2"})
            b.recv(timeout=3)
            codes.append(None)
        except ConnectionClosed as e:
            codes.append(e.rcvd.code)
    assert sorted(codes, key=str) == [4003, None]


def test_revoke_refuses_old_tokens_everywhere_until_a_new_one(nodes, herald_factory):
    n1, n2 = nodes
    old = token("ann", iat=int(time.time()) - 30)
    a = connect(n1, old)
    status, body = api(n2, "disconnect", {"user": "ann", "revoke": True})
    assert status == 202
    assert closed(a)[0] == (4003, "disconnected by the server")
    for n in nodes:
        wait_until(lambda: n.metrics()["herald_revoked_users"] == 1, 5, what="the revocation to reach every node")
        code, reason = refused_reason(n, old)
        assert code == 4001 and "revoked" in reason, reason
    # Other users are not touched; a token issued from now on is accepted on both nodes.
    connect(n1, token("bob")).close()
    fresh = token("ann", iat=int(time.time()) + 1)
    for n in nodes:
        connect(n, fresh).close()
    # A node that starts after the revocation reads it from Redis.
    n3 = herald_factory(extra=["--node-id", "n3", "--token-secret", SECRET, "--token-leeway", "0", "--api-key", KEY]).start()
    wait_until(lambda: n3.metrics()["herald_revoked_users"] == 1, 15, what="the late node to load the revocation")
    code, reason = refused_reason(n3, old)
    assert code == 4001 and "revoked" in reason
    by_reason = n1.labeled("herald_auth_failures_by_reason_total")
    assert by_reason['reason="revoked"'] == 1


def test_revoke_through_amqp(nodes, exchange):
    n1, n2 = nodes
    old = token("ann", iat=int(time.time()) - 30)
    a, b = connect(n1, old), connect(n2, old)
    control(exchange, "disconnect", {"user": "ann", "revoke": True})
    assert closed(a)[0][0] == 4003 and closed(b)[0][0] == 4003
    for n in nodes:
        assert refused_reason(n, old)[0] == 4001


def test_server_side_subscribe_and_unsubscribe_on_both_nodes(nodes, exchange):
    n1, n2 = nodes
    publish(exchange, "vip:1", [b"one", b"two"])
    ann = [connect(n1, token("ann")), connect(n2, token("ann"))]
    other = connect(n1, token("bob"))
    # ann's token does not cover vip:1; the server subscribes her anyway, replay included.
    assert api(n2, "subscribe", {"user": "ann", "channel": "vip:1"})[0] == 202
    for c in ann:
        sub = c.recv()
        assert (sub["type"], sub["channel"], sub["seq"], sub["replay"]) == ("subscribed", "vip:1", 2, 2), sub
        msgs, others = c.recv_messages("vip:1", 2)
        assert [m["data"] for m in msgs] == ["one", "two"] and others == []
    publish(exchange, "vip:1", [b"three"])
    for c in ann:
        msgs, _ = c.recv_messages("vip:1", 1)
        assert (msgs[0]["seq"], msgs[0]["data"]) == (3, "three")
    assert api(n1, "unsubscribe", {"user": "ann", "channel": "vip:1"})[0] == 202
    for c in ann:
        assert c.recv() == {"type": "unsubscribed", "channel": "vip:1", "reason": "server"}
    publish(exchange, "vip:1", [b"four"])
    for c in ann:
        c.assert_nothing_follows()
    other.assert_nothing_follows(0.2)
    # Asking again now goes by the token: forbidden.
    ann[0].send({"op": "subscribe", "channel": "vip:1"})
    e = ann[0].recv()
    assert (e["type"], e["code"]) == ("error", "forbidden")


def test_broadcast_stores_each_channel_once_even_when_retried(nodes, exchange):
    n1, n2 = nodes
    subs = {ch: connect(n1, token("ann", channels=("*",)), f"channel={ch}") for ch in ("b:1", "b:2")}
    for c in subs.values():
        assert c.recv()["type"] == "subscribed"
    body = {"channels": ["b:1", "b:2"], "data": {"text": "hi"}, "id": "bc-1"}
    status, first = api(n1, "broadcast", body)
    assert status == 202 and first["id"] == "bc-1"
    assert [(r["channel"], r["seq"], r.get("duplicate", False)) for r in first["results"]] == [("b:1", 1, False), ("b:2", 1, False)]
    status, again = api(n2, "broadcast", body)   # a retry, on another node
    assert status == 202
    assert [(r["channel"], r["seq"], r.get("duplicate")) for r in again["results"]] == [("b:1", 1, True), ("b:2", 1, True)]
    control(exchange, "broadcast", body)         # and once more through AMQP
    wait_until(lambda: sum(n.labeled("herald_control_commands_total")['command="broadcast"'] for n in nodes) == 1, 10,
               what="the AMQP broadcast to be stored")
    for ch, c in subs.items():
        msgs, _ = c.recv_messages(ch, 1)
        assert (msgs[0]["seq"], msgs[0]["data"], msgs[0]["id"]) == (1, {"text": "hi"}, "bc-1")
        c.assert_nothing_follows()
    # A new broadcast through AMQP alone is stored and delivered.
    control(exchange, "broadcast", {"channels": ["b:2"], "data": "amqp only", "id": "bc-2"})
    msgs, _ = subs["b:2"].recv_messages("b:2", 1)
    assert (msgs[0]["seq"], msgs[0]["data"]) == (2, "amqp only")


def test_refusals(nodes, exchange):
    n1, _ = nodes
    assert api(n1, "disconnect", {"user": "ann"}, key=None)[0] == 401
    assert api(n1, "disconnect", {"user": "ann"}, key="wrong")[0] == 401
    status, body = api(n1, "disconnect", {"user": "ann", "client": "x"})
    assert (status, body["error"]) == (400, "bad_request")
    status, body = api(n1, "subscribe", {"user": "ann", "channel": "bad channel"})
    assert (status, body["error"]) == (400, "bad_channel")
    status, body = api(n1, "broadcast", {"channels": [], "data": 1})
    assert (status, body["error"]) == (400, "bad_request")
    status, body = api(n1, "disconnect", {"client": "c1", "revoke": True})
    assert (status, body["error"]) == (400, "bad_request")
    # A poison command on the exchange goes to <exchange>.dead with its reason.
    control(exchange, "subscribe", {"user": "ann"})
    conn, ch = amqp_channel()
    def dead():
        method, props, body = ch.basic_get(f"{exchange}.dead", auto_ack=True)
        return (props.headers, body) if method else None
    got = wait_until(dead, 10, what="the poison command in the dead-letter queue")
    headers, body = got
    assert headers["x-herald-routing-key"] == "subscribe"
    assert headers["x-herald-error"].startswith("bad_request:")
    assert json.loads(body) == {"user": "ann"}
    conn.close()


def get(node, path, key=KEY):
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_channels_and_info_cover_every_node(nodes):
    n1, n2 = nodes
    clients = [connect(n1, token("ann", channels=("*",)), "channel=room:1"), connect(n1, token("bob", channels=("*",)), "channel=room:1"),
               connect(n2, token("cat", channels=("*",)), "channel=room:1"), connect(n2, token("cat", channels=("*",)), "channel=room:2"),
               connect(n2, token("dan", channels=("*",)), "channel=other")]
    for c in clients:
        assert c.recv()["type"] == "subscribed"
    want = {"channels": [{"channel": "room:1", "subscribers": 3}, {"channel": "room:2", "subscribers": 1}], "nodes": 2}
    wait_until(lambda: get(n1, "/api/channels?pattern=room:*") == (200, want), 10, what="both nodes' channels")
    assert get(n2, "/api/channels?pattern=room:*") == (200, want)
    status, everything = get(n2, "/api/channels")
    assert status == 200 and [c["channel"] for c in everything["channels"]] == ["other", "room:1", "room:2"]
    # A channel whose last subscriber left is no longer listed.
    clients[3].close()
    wait_until(lambda: get(n1, "/api/channels?pattern=room:2")[1]["channels"] == [], 10, what="room:2 to empty")
    status, info = get(n1, "/api/info")
    assert status == 200 and info["served_by"] == "n1"
    by_id = {n["id"]: n for n in info["nodes"]}
    assert set(by_id) == {"n1", "n2"}
    assert all(n["state"] == "up" and n["version"] for n in by_id.values())
    assert (by_id["n1"]["connections"], by_id["n2"]["connections"]) == (2, 2)
    assert get(n1, "/api/channels?pattern=bad*pattern")[0] == 400
    assert get(n1, "/api/info", key=None)[0] == 401


def test_pipelined_server_api_requests_sent_a_byte_at_a_time_are_answered_once_each_in_order(nodes):
    import socket
    n1, _ = nodes
    def request(path, body):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        return (f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    stream = (request("/api/disconnect", b'{"user": ')                       # bad JSON
              + request("/api/subscribe", {"user": "ann", "channel": "p:1"})
              + request("/api/broadcast", {"channels": ["p:1", "p:2"], "data": 1, "id": "pipe-1"})
              + request("/api/unsubscribe", {"user": "ann", "channel": "p:1", "client": "x"}))   # two targets
    s = socket.create_connection(("127.0.0.1", n1.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(stream)):
        s.sendall(stream[i:i + 1])
    answers, buffer = [], b""
    while len(answers) < 4:
        chunk = s.recv(65536)
        assert chunk, f"connection closed after {len(answers)} answers"
        buffer += chunk
        while b"\r\n\r\n" in buffer:
            head, rest = buffer.split(b"\r\n\r\n", 1)
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
            if len(rest) < length:
                break
            answers.append((int(head.split(b" ")[1]), json.loads(rest[:length])))
            buffer = rest[length:]
    s.close()
    assert [(status, body.get("error", body.get("command", "broadcast"))) for status, body in answers] == [
        (400, "bad_json"), (202, "subscribe"), (202, "broadcast"), (400, "bad_request")]
    assert [r["seq"] for r in answers[2][1]["results"]] == [1, 1]
    assert buffer == b""
