"""HTTP/1.1 framing on the public port, over raw sockets (issue 36): every request on a connection
is read exactly once by its own framing and answered once, in order; framing that cannot be
trusted is refused before anything is published; the limits hold; the node stays live."""
import json
import random
import socket
import time
import urllib.request

import pytest

from conftest import Herald, RedisServer, amqp_channel, wait_until

MAX = 4096  # --max-message-bytes in these tests


def node(herald_factory, *extra):
    return herald_factory(extra=["--max-message-bytes", str(MAX), "--history-size", "2000",
                                 "--presence-channels", "room:*", *extra]).start()


@pytest.fixture(scope="module")
def shared():
    """One node for the refusal tests: each refusal is its own test on its own channel, and a
    refusal never affects another connection, so they need not pay for a node each."""
    import uuid
    redis = RedisServer()
    redis.start()
    exchange = "t" + uuid.uuid4().hex[:10]
    h = Herald(exchange, redis.url, extra=["--max-message-bytes", str(MAX), "--history-size", "2000",
                                           "--handshake-timeout", "2"]).start()
    yield h
    h.kill()
    redis.kill()
    conn, ch = amqp_channel()
    for q in (f"{exchange}.history", f"{exchange}.dead"):
        ch.queue_delete(q)
    for e in (exchange, f"{exchange}.live"):
        ch.exchange_delete(e)
    conn.close()


def connect(h):
    s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def post(channel, body, key, extra=""):
    return (f"POST /api/publish/{channel} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            f"Idempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def get(path, extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


class Reader:
    """Reads HTTP/1.1 responses off a socket by their content-length."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.time()))
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
        self.buf += data

    def response(self, timeout=10, is_head=False):
        deadline = time.time() + timeout
        while b"\r\n\r\n" not in self.buf:
            assert not self.eof, f"connection closed before a response; read {self.buf!r}"
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            assert k.lower() not in headers, f"header {k} twice"
            headers[k.lower()] = v.strip()
        length = 0 if is_head else int(headers["content-length"])
        while len(self.buf) < length:
            assert not self.eof, "connection closed inside a response body"
            self._fill(deadline)
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def responses(self, n, timeout=30):
        return [self.response(timeout) for _ in range(n)]

    def closed(self, timeout=10):
        """True when the server closes the connection (after any bytes already read)."""
        deadline = time.time() + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except (socket.timeout, TimeoutError):
                return False
            except ConnectionResetError:
                return True
        return True


def history(h, channel):
    with urllib.request.urlopen(f"http://127.0.0.1:{h.port}/api/history/{channel}?limit=2000", timeout=10) as r:
        return json.loads(r.read())


def settled(h, exchange):
    """Waits until everything published before now has been stored: a marker published after it
    on a new connection is stored (the sequencer stores in order), and the queue is empty."""
    marker = f"marker-{time.time_ns()}"
    req = urllib.request.Request(f"http://127.0.0.1:{h.port}/api/publish/markers", data=marker.encode(),
                                 headers={"Content-Type": "text/plain", "Idempotency-Key": marker}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 202
    wait_until(lambda: any(m["data"] == marker for m in history(h, "markers")), 20, what="the marker to be stored")
    conn, ch = amqp_channel()
    depth = ch.queue_declare(f"{exchange}.history", passive=True).method.message_count
    conn.close()
    assert depth == 0, f"{depth} messages still in {exchange}.history"


def bodies_of(n, seed):
    """n distinct bodies of different lengths, including empty and the largest allowed."""
    rng = random.Random(seed)
    lengths = [0, MAX] + [rng.randrange(1, MAX) for _ in range(n - 2)]
    return [(f"{i}:".encode() + b"x" * MAX)[:length] if length >= len(f"{i}:") else b"y" * length
            for i, length in enumerate(lengths[:n])]


@pytest.mark.parametrize("n", [2, 10, 100])
def test_pipelined_publishes_are_answered_once_each_in_order_and_stored_exactly(herald_factory, exchange, n):
    h = node(herald_factory)
    bodies = bodies_of(n, n)
    keys = [f"p{n}-{i}" for i in range(n)]
    s = connect(h)
    s.sendall(b"".join(post("pipe", b, k) for b, k in zip(bodies, keys)))
    answers = Reader(s).responses(n)
    assert [a[0] for a in answers] == [202] * n
    assert [json.loads(a[2])["id"] for a in answers] == keys  # in order, one each
    settled(h, exchange)
    stored = history(h, "pipe")
    assert [m["id"] for m in stored] == keys
    assert [m["data"].encode() for m in stored] == bodies
    assert [m["seq"] for m in stored] == list(range(1, n + 1))
    s.close()


def test_a_pair_split_at_every_byte_boundary_is_read_the_same(herald_factory, exchange):
    h = node(herald_factory)
    expected = []
    pair_len = len(post("split", b"first", "a-000") + post("split", b"second!", "b-000"))
    for cut in range(1, pair_len):
        a, b = post("split", b"first", f"a-{cut:03}"), post("split", b"second!", f"b-{cut:03}")
        pair = a + b
        s = connect(h)
        s.sendall(pair[:cut])
        time.sleep(0.002)  # let the first part be read on its own (the split is what is tested, not a wait)
        s.sendall(pair[cut:])
        answers = Reader(s).responses(2)
        assert [json.loads(x[2])["id"] for x in answers] == [f"a-{cut:03}", f"b-{cut:03}"], cut
        expected += [(f"a-{cut:03}", "first"), (f"b-{cut:03}", "second!")]
        s.close()
    settled(h, exchange)
    assert [(m["id"], m["data"]) for m in history(h, "split")] == expected


def test_one_byte_at_a_time_and_random_splits(herald_factory, exchange):
    h = node(herald_factory)
    rng = random.Random(36)
    expected = []
    # One byte per write.
    reqs = [post("bytes", b"one", "one"), get("/livez"), post("bytes", b"", "empty"), post("bytes", b"two!", "two")]
    s = connect(h)
    for byte in b"".join(reqs):
        s.send(bytes([byte]))
    answers = Reader(s).responses(4)
    assert [a[0] for a in answers] == [202, 200, 202, 202]
    expected += [("one", "one"), ("empty", ""), ("two", "two!")]
    s.close()
    # Random splits of a mix.
    for round_ in range(40):
        mix, want = [], []
        for i in range(rng.randrange(1, 6)):
            if rng.random() < 0.3:
                mix.append(get("/livez"))
                want.append(200)
            else:
                body = bytes(rng.choice(b"abcdef") for _ in range(rng.randrange(0, 300)))
                key = f"r{round_}-{i}"
                mix.append(post("bytes", body, key))
                want.append(202)
                expected.append((key, body.decode()))
        data = b"".join(mix)
        s = connect(h)
        pos = 0
        while pos < len(data):
            step = rng.randrange(1, 200)
            s.send(data[pos:pos + step])
            pos += step
        assert [a[0] for a in Reader(s).responses(len(want))] == want
        s.close()
    settled(h, exchange)
    assert [(m["id"], m["data"]) for m in history(h, "bytes")] == expected


def test_pipelined_gets_and_a_mix_are_answered_in_order(herald_factory, exchange):
    h = node(herald_factory)
    s = connect(h)
    s.sendall(post("mix", b"m1", "m1"))
    assert Reader(s).response()[0] == 202
    settled(h, exchange)
    s.sendall(get("/api/history/mix") + get("/api/presence/room:1") + post("mix", b"m2", "m2") + get("/livez")
              + get("/api/history/mix?since=1") + get("/nope"))
    answers = Reader(s).responses(6)
    assert [a[0] for a in answers] == [200, 200, 202, 200, 200, 404]
    assert [m["data"] for m in json.loads(answers[0][2])] == ["m1"]
    assert json.loads(answers[1][2])["members"] == []
    published = json.loads(answers[2][2])
    assert published == {"id": "m2", "channel": "mix", "epoch": published["epoch"], "seq": 2}
    assert json.loads(answers[3][2])["status"] == "ok"
    # A publish is answered once stored: the history read pipelined after it has it.
    assert [m["data"] for m in json.loads(answers[4][2])] == ["m2"]
    assert json.loads(answers[5][2])["error"] == "not_found"
    # HEAD: the GET's headers, no body; the next answer follows at once.
    s.sendall(b"HEAD /livez HTTP/1.1\r\nHost: x\r\n\r\n" + get("/livez"))
    r = Reader(s)
    head = r.response(is_head=True)
    assert head[0] == 200 and int(head[1]["content-length"]) > 0
    after = r.response()
    assert after[0] == 200 and int(after[1]["content-length"]) == int(head[1]["content-length"])
    assert json.loads(after[2])["status"] == "ok"


BAD = [
    # (id, request bytes, status, error code)
    ("missing-length", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\n\r\nhello", 411, "length_required"),
    ("negative", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello", 400, "bad_framing"),
    ("not-a-number", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello", 400, "bad_framing"),
    ("two-lengths", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "bad_framing"),
    ("length-list", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!", 400, "bad_framing"),
    ("huge", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\nhello", 413, "too_large"),
    ("over-max", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nContent-Length: 4097\r\n\r\n", 413, "too_large"),
    ("length-and-chunked", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "bad_framing"),
    ("gzip-coding", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "not_implemented"),
    ("bad-chunk-size", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, "bad_framing"),
    ("chunk-too-long", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", 400, "bad_framing"),
    ("chunked-over-max", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n", 413, "too_large"),
    ("header-100k", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\nContent-Length: 5\r\n\r\nhello", 431, "headers_too_large"),
    ("no-host", b"POST /api/publish/bad HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400, "bad_request"),
    ("space-before-colon", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello", 400, "bad_request"),
    ("folded-header", b"POST /api/publish/bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n  6\r\n\r\nhello", 400, "bad_request"),
    ("http-2", b"POST /api/publish/bad HTTP/2.0\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 505, "http_version_not_supported"),
    ("nul-in-path", b"POST /api/publish/bad%00 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400, "bad_request"),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, "method_not_allowed"),
]


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_framing_that_cannot_be_trusted_is_refused_before_any_publish(shared, case):
    name, raw, status, code = case
    h, channel = shared, f"bad-{name}"
    raw = raw.replace(b"/api/publish/bad", f"/api/publish/{channel}".encode())
    s = connect(h)
    s.sendall(raw + post(channel, b"smuggled", f"smuggled-{name}"))  # a request after it must never be read
    r = Reader(s)
    got, headers, body = r.response()
    assert (got, json.loads(body)["error"]) == (status, code), body
    assert headers.get("connection") == "close"
    assert r.closed(), "the connection stays open after a refusal"
    assert r.buf == b"", f"more than one answer: {r.buf!r}"
    with urllib.request.urlopen(f"http://127.0.0.1:{h.port}/livez", timeout=5) as live:
        assert live.status == 200
    settled(h, h.exchange)
    assert history(h, channel) == []


def test_chunked_bodies_are_decoded(herald_factory, exchange):
    h = node(herald_factory)
    s = connect(h)
    chunked = (b"POST /api/publish/chunks HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nIdempotency-Key: c1\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")
    s.sendall(chunked + post("chunks", b"after", "c2"))
    assert [a[0] for a in Reader(s).responses(2)] == [202, 202]
    settled(h, exchange)
    assert [(m["id"], m["data"]) for m in history(h, "chunks")] == [("c1", "hello, world"), ("c2", "after")]


def test_a_body_that_stalls_is_timed_out_and_never_published(shared):
    h = shared
    s = connect(h)
    s.sendall(post("stall", b"hello", "stall")[:-2])  # three of five bytes, then nothing
    r = Reader(s)
    status, headers, body = r.response(timeout=15)
    assert (status, json.loads(body)["error"]) == (408, "request_timeout")
    assert r.closed()
    settled(h, h.exchange)
    assert history(h, "stall") == []


def test_an_oversize_body_is_refused_without_being_read(shared):
    """413 comes at once, while the client is still sending the body; it is not lost to a reset."""
    h = shared
    s = connect(h)
    s.sendall(b"POST /api/publish/big HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"z" * 50_000)
    r = Reader(s)
    status, _, body = r.response()
    assert (status, json.loads(body)["error"]) == (413, "too_large")
    settled(h, h.exchange)
    assert history(h, "big") == []


def test_keep_alive_limits(herald_factory):
    h = node(herald_factory, "--max-requests-per-connection", "3", "--http-idle-timeout", "1")
    s = connect(h)
    s.sendall(get("/livez") * 4)
    r = Reader(s)
    answers = r.responses(3)
    assert [a[0] for a in answers] == [200, 200, 200]
    assert "connection" not in answers[0][1] and answers[2][1].get("connection") == "close"
    assert r.closed() and r.buf == b""  # the fourth request is not answered
    # An idle keep-alive connection is closed after --http-idle-timeout.
    s = connect(h)
    s.sendall(get("/livez"))
    r = Reader(s)
    assert r.response()[0] == 200
    assert r.closed(timeout=10)
    # HTTP/1.0 closes after its answer unless it asks to keep the connection.
    s = connect(h)
    s.sendall(b"GET /livez HTTP/1.0\r\n\r\n")
    r = Reader(s)
    status, headers, _ = r.response()
    assert status == 200 and headers.get("connection") == "close" and r.closed()


@pytest.mark.parametrize("method", ["TRACE", "FOO", "PUT"])
def test_unknown_methods_get_herald_json_at_once(shared, method):
    s = connect(shared)
    s.sendall(f"{method} /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode() + get("/livez"))
    r = Reader(s)
    status, headers, body = r.response()
    assert status == 405 and json.loads(body)["error"] == "method_not_allowed" and headers["allow"] == "GET, HEAD"
    assert r.response()[0] == 200  # the connection goes on


def test_a_websocket_upgrade_after_keep_alive_requests_is_served(herald_factory, exchange):
    """A proxy (nginx with upstream keepalive) may send an upgrade on a connection it used for
    other requests: the upgrade is handed to the WebSocket server after their answers."""
    h = node(herald_factory)
    s = connect(h)
    upgrade = (b"GET /ws?channel=up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    s.sendall(post("up", b"before", "u1") + get("/livez") + upgrade)
    r = Reader(s)
    assert [a[0] for a in r.responses(2)] == [202, 200]
    deadline = time.time() + 10
    while b"\r\n\r\n" not in r.buf:
        r._fill(deadline)
    assert r.buf.startswith(b"HTTP/1.1 101"), r.buf


@pytest.mark.parametrize("flag,value", [("--max-header-bytes", "100"), ("--http-idle-timeout", "0"),
                                        ("--max-requests-per-connection", "0"), ("--max-header-bytes", "lots")])
def test_bad_http_bounds_are_refused_at_start(flag, value):
    import subprocess
    from conftest import HERALD_BIN
    out = subprocess.run([HERALD_BIN, "serve", flag, value], capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and flag in out.stderr, out.stderr


def test_pipelined_publishes_are_taken_ahead_and_answered_in_the_order_sent(herald_factory, exchange):
    """Publishes are read ahead of their answers (the publisher stores them together) and a
    batch is stored channel by channel, yet each answer comes in its request's place; a history
    read pipelined after them waits for them and sees every one."""
    h = node(herald_factory)
    s = connect(h)
    channels = ["pa", "pb", "pc"]
    requests = [(channels[i % 3], f"m{i}") for i in range(300)]
    s.sendall(b"".join(post(ch, body.encode(), f"k{i}") for i, (ch, body) in enumerate(requests))
              + get("/api/history/pa?limit=2000") + post("pb", b"last", "k-last"))
    answers = Reader(s).responses(len(requests) + 2, timeout=60)
    assert [a[0] for a in answers] == [202] * len(requests) + [200, 202]
    published = [json.loads(a[2]) for a in answers[:len(requests)]]
    assert [(p["channel"], p["id"]) for p in published] == [(ch, f"k{i}") for i, (ch, _) in enumerate(requests)], \
        "each answer in its request's place"
    for ch in channels:
        assert [p["seq"] for p in published if p["channel"] == ch] == list(range(1, 101)), f"{ch}: seqs in the order sent"
    assert [m["data"] for m in json.loads(answers[-2][2])] == [body for ch, body in requests if ch == "pa"], \
        "the history read saw every publish sent before it"
    assert json.loads(answers[-1][2])["seq"] == 101
    s.close()


def test_bad_framing_behind_pipelined_publishes_is_answered_after_them_and_nothing_after_it_is_read(herald_factory, exchange):
    """Publishes read ahead, then a request whose framing cannot be trusted: the publishes are
    answered in order, then the refusal closes the connection, and what followed it is not acted on."""
    h = node(herald_factory)
    s = connect(h)
    s.sendall(post("bf", b"one", "b1") + post("bf", b"two", "b2")
              + b"POST /api/publish/bf HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc"
              + post("bf", b"never", "b3"))
    r = Reader(s)
    answers = r.responses(3)
    assert [a[0] for a in answers] == [202, 202, 400]
    assert [json.loads(a[2])["seq"] for a in answers[:2]] == [1, 2]
    assert json.loads(answers[2][2])["error"] == "bad_framing" and answers[2][1]["connection"] == "close"
    assert r.closed()
    assert [m["data"] for m in history(h, "bf")] == ["one", "two"]
