"""Server-Sent Events (GET /sse) with curl -N against a real Herald: exact events for subscribe,
replay and live, ids that resume every channel through Last-Event-ID, and the documented answers
to a bad channel, a bad token, a foreign Origin and an expiring token."""
import json
import socket
import subprocess
import threading
import time

from conftest import publish, wait_until
from test_cluster import Nginx, _get
from test_security import SECRET, jwt


class Stream:
    """`curl -N` on /sse; its output parsed into events ({"event", "id", "data"}) and comments."""

    def __init__(self, h, query, headers=(), max_time=60, base=None):
        args = ["curl", "-sN", "-i", "--max-time", str(max_time)]
        for name, value in headers:
            args += ["-H", f"{name}: {value}"]
        base = base or f"http://127.0.0.1:{h.port}"
        self.proc = subprocess.Popen(args + [f"{base}/sse?{query}"], stdout=subprocess.PIPE, text=True)
        self.status, self.headers, self.events, self.comments, self.body, self.retry = None, {}, [], 0, "", None
        self.lock = threading.Lock()
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        out = self.proc.stdout
        self.status = int(out.readline().split()[1])
        for line in out:
            line = line.rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            self.headers[name.lower()] = value.strip()
        if self.headers.get("content-type") != "text/event-stream":
            self.body = out.read()
            self.done.set()
            return
        event = {}
        for line in out:
            line = line.rstrip("\n")
            if line == "":
                if "retry" in event and len(event) == 1:
                    self.retry = int(event["retry"])
                elif event:
                    with self.lock:
                        self.events.append(event)
                event = {}
            elif line.startswith(":"):
                self.comments += 1
            else:
                field, _, value = line.partition(": ")
                event[field] = json.loads(value) if field == "data" else value
        self.done.set()

    def until(self, predicate, timeout=15, what="events"):
        return wait_until(lambda: predicate(self.snapshot()), timeout, what=what)

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def messages(self, channel=None):
        return [e for e in self.snapshot() if e.get("event") == "message" and channel in (None, e["data"]["channel"])]

    def close(self):
        self.proc.kill()
        self.proc.wait()


def positions(event_id):
    out = {}
    for item in event_id.split(","):
        rest, epoch = item.rsplit("@", 1)
        channel, seq = rest.rsplit(":", 1)
        out[channel] = (int(seq), epoch)
    return out


def test_subscribe_replay_and_live_are_exact_events_with_every_position(herald, exchange):
    publish(exchange, "sse:a", [json.dumps({"n": i}).encode() for i in (1, 2, 3)], content_type="application/json")
    publish(exchange, "sse:b", [b'{"n":1}'], content_type="application/json")
    s = Stream(herald, "channel=sse:a&channel=sse:b")
    try:
        s.until(lambda es: len([e for e in es if e.get("event") == "message"]) == 4, what="the replay")
        assert s.status == 200 and s.headers["cache-control"] == "no-cache" and s.headers["x-accel-buffering"] == "no"
        assert s.retry == 1000
        events = s.snapshot()
        subscribed = {e["data"]["channel"]: e["data"] for e in events if e["event"] == "subscribed"}
        assert {c: (d["seq"], d["replay"]) for c, d in subscribed.items()} == {"sse:a": (3, 3), "sse:b": (1, 1)}
        assert all("id" not in e for e in events if e["event"] == "subscribed")
        epochs = {c: d["epoch"] for c, d in subscribed.items()}
        # Each message event: the frame a WebSocket gets, and an id with the newest position of
        # every channel that has one.
        seen = {}
        for e in events:
            if e["event"] != "message":
                continue
            d = e["data"]
            assert set(d) == {"type", "channel", "seq", "id", "time", "data"} and d["data"] == {"n": d["seq"]}
            seen[d["channel"]] = (d["seq"], epochs[d["channel"]])
            assert positions(e["id"]) == seen
        assert [m["data"]["seq"] for m in s.messages("sse:a")] == [1, 2, 3]

        publish(exchange, "sse:b", [b'{"n":2}'], content_type="application/json")
        s.until(lambda es: len([e for e in es if e.get("event") == "message"]) == 5, what="the live message")
        live = s.messages()[-1]
        assert live["data"]["channel"] == "sse:b" and live["data"]["seq"] == 2
        assert positions(live["id"]) == {"sse:a": (3, epochs["sse:a"]), "sse:b": (2, epochs["sse:b"])}

        # Resuming with the last id: each channel from its own position, nothing twice.
        publish(exchange, "sse:a", [b'{"n":4}'], content_type="application/json")
        r = Stream(herald, "channel=sse:a&channel=sse:b", headers=[("Last-Event-ID", live["id"])])
        try:
            r.until(lambda es: len([e for e in es if e.get("event") == "subscribed"]) == 2 and len(r.messages()) == 1, what="the resume")
            got = {e["data"]["channel"]: e["data"] for e in r.snapshot() if e["event"] == "subscribed"}
            assert {c: (d["recovered"], d["missed"], d["replay"]) for c, d in got.items()} == {"sse:a": (True, 0, 1), "sse:b": (True, 0, 0)}
            assert [(m["data"]["channel"], m["data"]["seq"]) for m in r.messages()] == [("sse:a", 4)]
            assert positions(r.messages()[0]["id"]) == {"sse:a": (4, epochs["sse:a"]), "sse:b": (2, epochs["sse:b"])}
        finally:
            r.close()
    finally:
        s.close()


def test_bad_channel_token_and_origin_get_their_answers(herald_factory):
    h = herald_factory(extra=("--token-secret", SECRET, "--token-leeway", "0", "--anonymous-channels", "open:*",
                              "--allowed-origin", "https://app.example")).start()
    origin = [("Origin", "https://app.example")]

    def answer(query, headers=origin):
        s = Stream(h, query, headers)
        assert s.done.wait(10)
        return s.status, json.loads(s.body)

    assert answer("channel=bad%20name") == (400, {"error": "bad_channel", "message": "channel name may only contain A-Z a-z 0-9 _ . : @ -"})
    assert answer("")[0] == 400 and answer("")[1]["error"] == "bad_request"
    status, body = answer("channel=open:1&token=not-a-token")
    assert status == 401 and body["error"] == "invalid_token" and body["message"].startswith("invalid token")
    status, body = answer("channel=open:1", headers=[("Origin", "https://evil.example")])
    assert (status, body["error"]) == (403, "origin_not_allowed")
    assert answer("channel=open:1", headers=[])[1]["error"] == "origin_not_allowed"
    assert h.metrics()["herald_origin_refused_total"] == 2

    # An allowed origin gets its CORS header; a channel the token does not cover is an error
    # event while the stream goes on.
    token = jwt({"sub": "ann", "channels": ["priv:*"], "exp": int(time.time()) + 3600})
    s = Stream(h, f"channel=priv:1&channel=secret:1&token={token}", origin)
    try:
        s.until(lambda es: {e["event"] for e in es} >= {"subscribed", "error"}, what="subscribed and forbidden")
        assert s.status == 200 and s.headers["access-control-allow-origin"] == "https://app.example"
        errors = [e["data"] for e in s.snapshot() if e["event"] == "error"]
        assert [(e["code"], e["channel"]) for e in errors] == [("forbidden", "secret:1")]
    finally:
        s.close()


def test_an_expiring_token_ends_the_stream_with_4002_and_heartbeats_keep_it_alive(herald_factory):
    h = herald_factory(extra=("--token-secret", SECRET, "--token-leeway", "0", "--ping-interval", "1")).start()
    token = jwt({"sub": "ann", "channels": ["*"], "exp": int(time.time()) + 3})
    s = Stream(h, f"channel=x:1&token={token}")
    try:
        assert s.done.wait(15), "the stream did not end when its token expired"
        events = s.snapshot()
        assert [e["event"] for e in events] == ["authenticated", "subscribed", "close"]
        assert events[-1]["data"] == {"type": "close", "code": 4002, "reason": "token expired"}
        assert s.comments >= 1, "no heartbeat comment in a quiet stream"
    finally:
        s.close()


def test_the_nginx_example_passes_a_stream_through_unbuffered(herald_factory, exchange):
    nodes = [herald_factory().start() for _ in range(2)]
    lb = Nginx([h.port for h in nodes])
    try:
        publish(exchange, "sse:lb", [b'{"n":1}'], content_type="application/json")
        wait_until(lambda: _get(lb.url("/healthz")) == 200, 10, what="nginx to proxy")
        s = Stream(None, "channel=sse:lb", base=lb.url(""))
        try:
            s.until(lambda es: len([e for e in es if e.get("event") == "message"]) == 1, what="the replay through nginx")
            assert s.status == 200 and s.headers["content-type"] == "text/event-stream"
            # One small live event arrives on its own: nothing holds it in a buffer.
            publish(exchange, "sse:lb", [b'{"n":2}'], content_type="application/json")
            s.until(lambda es: [e["data"]["seq"] for e in es if e.get("event") == "message"] == [1, 2], what="the live event through nginx")
        finally:
            s.close()
    finally:
        lb.stop()


def test_streams_count_toward_the_connection_limit_and_carry_presence(herald_factory):
    h = herald_factory(extra=("--max-connections", "1", "--presence-channels", "room:*")).start()
    s = Stream(h, "channel=room:1&presence=true")
    try:
        s.until(lambda es: any(e.get("event") == "presence" for e in es), what="the member list")
        me = next(e["data"] for e in s.snapshot() if e["event"] == "presence")["client"]

        def members(es):
            listed = set()
            for e in es:
                if e["event"] == "presence":
                    listed = {m["client"] for m in e["data"]["members"]}
                elif e["event"] in ("join", "leave"):
                    change = {m["client"] for m in e["data"]["members"]}
                    listed = listed | change if e["event"] == "join" else listed - change
            return listed
        s.until(lambda es: members(es) == {me}, what="its own join")
        second = Stream(h, "channel=room:1")
        assert second.done.wait(10)
        assert second.status == 503 and json.loads(second.body)["error"] == "server_full"
    finally:
        s.close()
    # Its place is given back when the stream ends.
    wait_until(lambda: h.metrics()["herald_connections"] == 0, 10, what="the stream to be gone")
    again = Stream(h, "channel=room:2")
    try:
        again.until(lambda es: any(e.get("event") == "subscribed" for e in es), what="a stream after the first ended")
    finally:
        again.close()


def test_a_stream_too_far_behind_is_ended_and_resumes_from_its_last_id(herald_factory, exchange):
    h = herald_factory(extra=("--client-backlog", "20", "--history-size", "20000")).start()
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", h.port))
    raw.sendall(b"GET /sse?channel=slow HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"event: subscribed" not in got:
        got += raw.recv(4096)
    # The client stops reading while 12,000 messages go out: it falls behind.
    total = 12000
    publish(exchange, "slow", [json.dumps({"n": i + 1, "pad": "x" * 200}).encode() for i in range(total)],
            content_type="application/json")
    wait_until(lambda: h.metrics()["herald_slow_consumer_closes_total"] >= 1, 30, what="the slow stream to be closed")
    # Now it reads until the server ends the stream: with the 4008 close event if the client
    # drains in time, cut at the 10 s grace if not (the publish alone can outlast it under load).
    # Waited for as the event it is, not with a per-read timer: a zero-window stall between two
    # reads is the kernel's, not Herald's.
    raw.settimeout(1)
    deadline = time.monotonic() + 60
    while True:
        try:
            chunk = raw.recv(65536)
        except socket.timeout:
            assert time.monotonic() < deadline, "the server did not end the stream within 60 s of its 4008 close"
            continue
        if not chunk:
            break  # the server ended the stream
        got += chunk
    raw.close()
    # Only complete events count, as in a browser: a cut stream's last event may be partial.
    text = got.decode(errors="replace")
    events = text.split("\n\n")[:-1]  # the last piece: empty after a whole event, else partial
    seqs, ids, ended = [], [], None
    for event in events:
        lines = dict(line.split(": ", 1) for line in event.split("\n") if ": " in line)
        if lines.get("event") == "message":
            seqs.append(json.loads(lines["data"])["seq"])
            ids.append(lines["id"])
        elif lines.get("event") == "close":
            ended = json.loads(lines["data"])
    assert ended is None or (ended["code"] == 4008 and events[-1].startswith("event: close")), ended
    last = positions(ids[-1])["slow"][0]
    assert 0 < last < total
    assert seqs == list(range(1, last + 1)), "the stream skipped or repeated a message before its close"
    # The browser would reconnect with its last id: the rest arrives, nothing twice.
    s = Stream(h, "channel=slow", headers=[("Last-Event-ID", ids[-1])])
    try:
        s.until(lambda es: len([e for e in es if e.get("event") == "message"]) == total - last, 30, what="the resume")
        sub = next(e["data"] for e in s.snapshot() if e["event"] == "subscribed")
        assert sub["recovered"] is True and sub["missed"] == 0
        assert [m["data"]["seq"] for m in s.messages()] == list(range(last + 1, total + 1))
    finally:
        s.close()
