"""Fixtures for integration tests: a private Redis per test, the shared local RabbitMQ with a
unique exchange per test, Herald as a real process, and WebSocket clients that split batched frames."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid

import pika
import pytest
import redis as redislib
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

HERALD_BIN = os.environ.get("HERALD_BIN", os.path.join(os.path.dirname(__file__), "../../.build/release/herald"))
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))


def pytest_configure(config):
    config.addinivalue_line("markers", "shared_broker: stops or freezes the RabbitMQ every test shares; "
                                       "scripts/test runs these alone, after the others")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports_at(offsets, low=20000, high=30000):
    """A base port below the kernel's ephemeral range (so no client connection of another test
    takes one of them) where base + each offset is free: for engines that listen on several
    ports. Checked with SO_REUSEADDR, as servers bind, so TIME_WAIT leftovers do not count."""
    import random
    for _ in range(200):
        base = random.randrange(low, high - max(offsets))
        free = True
        for off in offsets:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", base + off))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise AssertionError(f"no free ports at offsets {offsets} between {low} and {high}")


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A redis-server of our own on a free port, so tests may stop, restart and flush it."""

    def __init__(self, persistence=("--save", "", "--appendonly", "no")):
        self.dir = tempfile.mkdtemp(prefix="herald-redis-")
        self.port = free_port()
        self.proc = None
        self.persistence = list(persistence)

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--dbfilename", "dump.rdb", *self.persistence],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ping, 10, what="redis to start")

    def kill(self):
        """kill -9: whatever Redis had not yet written to disk is gone when it starts again."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def _ping(self):
        try:
            return self.client().ping()
        except Exception:
            return False

    def client(self):
        return redislib.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def stop(self, save=True):
        """Stops Redis; with save the data comes back on start (like a restart with persistence)."""
        if self.proc and self.proc.poll() is None:
            try:
                self.client().shutdown(save=save, nosave=not save)
            except Exception:
                pass
            self.proc.wait(10)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"


class Herald:
    """One `herald serve` process."""

    def __init__(self, exchange, redis_url, port=None, extra=(), env=None):
        self.exchange = exchange
        self.redis_url = redis_url
        self.port = port or free_port()
        self.extra = list(extra)
        self.env = env
        self.proc = None
        self.log_path = os.path.join(ROOT, "test-output", f"herald-{exchange}-{self.port}.log")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)

    def start(self, wait_healthy=True):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [HERALD_BIN, "serve", "--port", str(self.port), "--host", "127.0.0.1", "--exchange", self.exchange,
             "--redis-url", self.redis_url, "--web-root", os.path.join(ROOT, "web-client"), *self.extra],
            stdout=log, stderr=log, env=None if self.env is None else {**os.environ, **self.env})
        if wait_healthy:
            wait_until(lambda: self.health()[0] == 200, 20, what="herald to become healthy")
        return self

    def health(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
        except Exception:
            return None, None

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            out = {}
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#") and "{" not in line:
                    k, v = line.split()
                    out[k] = float(v)
            return out

    def labeled(self, name):
        """The samples of a labelled metric family: {'reason="expired"': 1.0, ...}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            out = {}
            for line in r.read().decode().splitlines():
                if line.startswith(name + "{"):
                    key, value = line.rsplit(" ", 1)
                    out[key[len(name) + 1:-1]] = float(value)
            return out

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def ws_url(self, query=""):
        return f"ws://127.0.0.1:{self.port}/ws" + (f"?{query}" if query else "")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Client:
    """A WebSocket client that returns one JSON object per server frame line."""

    def __init__(self, url, **kw):
        self.ws = ws_connect(url, max_size=None, **kw).__enter__()
        self.pending = []

    def recv(self, timeout=10):
        while not self.pending:
            raw = self.ws.recv(timeout=timeout)
            self.pending.extend(json.loads(line) for line in raw.split("\n"))
        return self.pending.pop(0)

    def send(self, obj):
        self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def recv_messages(self, channel, count, timeout=20):
        """The next `count` message frames of `channel` (other frames are returned separately)."""
        out, others = [], []
        deadline = time.time() + timeout
        while len(out) < count:
            f = self.recv(timeout=max(0.1, deadline - time.time()))
            if f.get("type") == "message" and f.get("channel") == channel:
                out.append(f)
            else:
                others.append(f)
        return out, others

    def frames_until_quiet(self, quiet=1.0):
        """Every frame that arrives until none has for `quiet` seconds: what a later duplicate
        would be hidden in if a test only looked at what it had already read."""
        out = list(self.pending)
        self.pending = []
        while True:
            try:
                raw = self.ws.recv(timeout=quiet)
            except TimeoutError:
                return out
            out.extend(json.loads(line) for line in raw.split("\n"))

    def assert_nothing_follows(self, quiet=1.0):
        extra = self.frames_until_quiet(quiet)
        assert extra == [], f"unexpected frames after the last expected one: {extra[:5]}"

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


class TripleFollower(threading.Thread):
    """A client that records every (epoch, seq, id) it is sent and every subscribed frame, and,
    like a browser, resumes with its position when its connection closes or is refused, on the
    next of `urls`. It stops at the message `last_id`, at a seq of `until_seq` or more, or when
    `stop` is set."""

    def __init__(self, urls, channel, last_id=None, stop=None, seconds=150, first=0, until_seq=None):
        super().__init__(daemon=True)
        self.first = first
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.channel, self.last_id, self.stop, self.seconds = channel, last_id, stop, seconds
        self.until_seq = until_seq
        self.triples, self.subscribed, self.closes = [], [], []
        self.error = None
        self.connected = threading.Event()

    def _done(self):
        return (self.stop is not None and self.stop.is_set()) or \
            (self.last_id is not None and bool(self.triples) and self.triples[-1][2] == self.last_id) or \
            (self.until_seq is not None and bool(self.triples) and self.triples[-1][1] >= self.until_seq)

    @property
    def seqs(self):
        return [seq for _, seq, _ in self.triples]

    @property
    def ids(self):
        """seq -> id, for a feed that stays in one epoch."""
        return {seq: mid for _, seq, mid in self.triples}

    @property
    def epoch(self):
        return self.subscribed[-1]["epoch"] if self.subscribed else None

    def run(self):
        deadline = time.time() + self.seconds
        node, epoch, seq = self.first, None, None
        try:
            while not self._done() and time.time() < deadline:
                query = f"channel={self.channel}" + (f"&since={seq}&epoch={epoch}" if seq is not None else "")
                try:
                    c = Client(f"{self.urls[node % len(self.urls)]}?{query}")
                except OSError:  # not listening (yet, or any more): the next node
                    node += 1
                    time.sleep(0.1)
                    continue
                try:
                    sub = c.recv()
                    assert sub["type"] == "subscribed", sub
                    self.subscribed.append(sub)
                    epoch = sub["epoch"]
                    self.connected.set()
                    while not self._done():
                        try:
                            f = c.recv(timeout=1)
                        except TimeoutError:
                            continue
                        if f.get("type") == "message" and f["channel"] == self.channel:
                            self.triples.append((epoch, f["seq"], f["id"]))
                            seq = f["seq"]
                except ConnectionClosed as closed:
                    self.closes.append(closed.rcvd.code if closed.rcvd else None)
                    node += 1
                finally:
                    c.close()
        except Exception as e:  # surfaced by the test
            self.error = e


def amqp_channel():
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", heartbeat=30))
    ch = conn.channel()
    return conn, ch


def publish(exchange, channel_name, messages, confirm=True, content_type=None, ids=None):
    """Publishes bodies to the exchange with confirms; ids default to a fresh uuid each."""
    conn, ch = amqp_channel()
    ch.exchange_declare(exchange, "fanout", durable=True)
    if confirm:
        ch.confirm_delivery()
    for i, body in enumerate(messages):
        props = pika.BasicProperties(content_type=content_type, delivery_mode=2,
                                     message_id=(ids[i] if ids else str(uuid.uuid4())))
        ch.basic_publish(exchange, channel_name, body, props)
    conn.close()


class Publisher(threading.Thread):
    """Publishes `count` messages with confirms at about `rate`/s; reconnects and republishes the
    unconfirmed message (same message_id) when RabbitMQ goes away, like a careful service would."""

    def __init__(self, exchange, channel, count, rate=2000, urls=None):
        super().__init__(daemon=True)
        self.exchange, self.channel, self.count, self.rate = exchange, channel, count, rate
        self.ids = [f"id-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
        self.confirmed = 0
        self.error = None
        # Several URLs: the nodes of a cluster, tried in turn, starting after the one that failed.
        self.urls = urls
        self.failovers = 0

    def _message(self, i):
        """The i-th message: its channel, body and message_id."""
        return self.channel, f"n{i}".encode(), self.ids[i]

    def _connect(self):
        if not self.urls:
            return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", heartbeat=10, connection_attempts=1))
        order = self.urls[self.failovers % len(self.urls):] + self.urls[:self.failovers % len(self.urls)]
        params = [pika.URLParameters(u.rstrip("/") + "/%2F?heartbeat=10&connection_attempts=1&socket_timeout=2") for u in order]
        return pika.BlockingConnection(params)

    def run(self):
        i, conn, start, failing_since = 0, None, time.time(), None
        while i < self.count:
            try:
                if conn is None or conn.is_closed:
                    conn = self._connect()
                    ch = conn.channel()
                    ch.exchange_declare(self.exchange, "fanout", durable=True)
                    ch.confirm_delivery()
                channel, body, message_id = self._message(i)
                ch.basic_publish(self.exchange, channel, body, pika.BasicProperties(message_id=message_id, delivery_mode=2))
                i += 1
                self.confirmed = i
                failing_since = None
                ahead = i / self.rate - (time.time() - start)
                if ahead > 0:
                    time.sleep(ahead)
            except Exception as e:  # broker restarting: retry the same message
                conn = None
                self.failovers += 1
                time.sleep(0.2)
                failing_since = failing_since or time.time()
                if time.time() - failing_since > 120:  # two minutes without one confirm: give up
                    self.error = e
                    return
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    # The test is over and nothing reads its data again: kill it (SHUTDOWN NOSAVE takes Redis 7
    # about 4 s here, which every test paid in its teardown).
    server.kill()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def exchange():
    name = "t" + uuid.uuid4().hex[:10]
    yield name
    try:
        conn, ch = amqp_channel()
        for q in (f"{name}.history", f"{name}.dead", f"{name}.control.broadcast", *(f"{name}.history.{p}" for p in range(8))):
            ch.queue_delete(q)
        for e in (name, f"{name}.live", f"{name}.events", f"{name}.control", f"{name}.inbound", f"{name}.rpc", f"{name}.partitions"):
            ch.exchange_delete(e)
        conn.close()
    except Exception:
        pass


@pytest.fixture
def herald_factory(exchange, redis_server):
    started = []

    def make(extra=(), port=None, env=None):
        h = Herald(exchange, redis_server.url, port=port, extra=extra, env=env)
        started.append(h)
        return h

    yield make
    for h in started:
        h.kill()


@pytest.fixture
def herald(herald_factory):
    return herald_factory().start()


def assert_consecutive(seqs, start=None, end=None):
    assert seqs, "no messages"
    if start is not None:
        assert seqs[0] == start, f"first seq {seqs[0]}, expected {start}"
    if end is not None:
        assert seqs[-1] == end, f"last seq {seqs[-1]}, expected {end}"
    for a, b in zip(seqs, seqs[1:]):
        assert b == a + 1, f"gap or duplicate: {a} then {b}"
