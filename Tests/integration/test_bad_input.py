"""Bad input gets a clear error and nothing is lost."""
import json
import socket
import threading
import time

import pika
from websockets.exceptions import ConnectionClosed

from conftest import Client, amqp_channel, assert_consecutive, publish, wait_until


def dead_letters(ch, exchange, count):
    """Waits for `count` messages in `<exchange>.dead`: {message_id: (body, x-herald-error, x-herald-routing-key)}."""
    dead = {}
    def got_all():
        while True:
            method, props, body = ch.basic_get(f"{exchange}.dead", auto_ack=True)
            if method is None:
                return len(dead) == count
            dead[props.message_id] = (body, props.headers["x-herald-error"], props.headers["x-herald-routing-key"])
    wait_until(got_all, 10, what=f"{count} dead letters")
    return dead


def test_poison_messages_are_dead_lettered_with_reason(herald, exchange, redis_server):
    c = Client(herald.ws_url("channel=news"))
    c.recv()
    conn, ch = amqp_channel()
    ch.confirm_delivery()
    ch.basic_publish(exchange, "bad channel!", b"x", pika.BasicProperties(message_id="p1"))
    ch.basic_publish(exchange, "news", b"x" * 70000, pika.BasicProperties(message_id="p2"))
    ch.basic_publish(exchange, "news", b"{not json", pika.BasicProperties(content_type="application/json", message_id="p3"))
    ch.basic_publish(exchange, "news", b"fine", pika.BasicProperties(message_id="ok"))
    msgs, _ = c.recv_messages("news", 1)
    assert (msgs[0]["seq"], msgs[0]["id"]) == (1, "ok")
    dead = {k: error for k, (_, error, _) in dead_letters(ch, exchange, 3).items()}
    assert dead["p1"].startswith("bad_channel: ")
    assert dead["p2"].startswith("too_large: ")
    assert dead["p3"].startswith("bad_json: ")
    conn.close()
    # Counted when the sequencer acks, after RabbitMQ confirmed the dead letters: a reader of
    # .dead can see them a moment before that.
    wait_until(lambda: herald.metrics()["herald_dead_lettered_total"] == 3, 10, what="the three dead letters counted")
    assert redis_server.client().llen("herald:history:news") == 1
    c.close()


def test_a_poison_message_sent_twice_is_dead_lettered_twice_and_counted_once(herald, exchange):
    """A retry (or a redelivery after a crash between the dead-letter publish and the ack) of a
    poison message is dead-lettered again, never dropped, but counted by reason once per id."""
    conn, ch = amqp_channel()
    ch.confirm_delivery()
    for _ in range(2):
        ch.basic_publish(exchange, "news", b"{not json", pika.BasicProperties(content_type="application/json", message_id="twice"))
    ch.basic_publish(exchange, "news", b"{nor this", pika.BasicProperties(content_type="application/json", message_id="once"))
    wait_until(lambda: ch.queue_declare(f"{exchange}.dead", passive=True).method.message_count == 3, what="three dead letters")
    conn.close()
    assert herald.labeled("herald_dead_letters_by_reason_total")['reason="bad_json"'] == 2


def test_a_message_redis_refuses_to_store_is_dead_lettered_and_other_channels_go_on(herald, exchange, redis_server):
    r = redis_server.client()
    r.hset("herald:meta:broken", "epoch", "e1")  # an existing channel (a new one starts with a fresh list)
    r.set("herald:history:broken", "not a list")  # so every LPUSH on it fails: WRONGTYPE
    c = Client(herald.ws_url("channel=news"))
    c.recv()
    conn, ch = amqp_channel()
    ch.confirm_delivery()
    for i in range(1, 4):
        ch.basic_publish(exchange, "news", f"n{i}".encode(), pika.BasicProperties(message_id=f"n{i}"))
        ch.basic_publish(exchange, "broken", f"b{i}".encode(), pika.BasicProperties(message_id=f"b{i}"))
    msgs, _ = c.recv_messages("news", 3)
    assert [(m["seq"], m["data"]) for m in msgs] == [(1, "n1"), (2, "n2"), (3, "n3")]
    dead = dead_letters(ch, exchange, 3)
    for i in range(1, 4):
        body, error, key = dead[f"b{i}"]
        assert (body, key) == (f"b{i}".encode(), "broken") and error.startswith("store_failed: ") and "WRONGTYPE" in error
    assert ch.queue_declare(f"{exchange}.history", passive=True).method.message_count == 0  # acked, not stuck
    conn.close()
    # Counted when the sequencer acks, after RabbitMQ confirmed the dead letters: a reader of
    # .dead can see them a moment before that.
    wait_until(lambda: herald.metrics()["herald_dead_lettered_total"] == 3, 10, what="the three dead letters counted")
    c.close()


def test_bad_client_frames_get_error_frames_and_oversize_gets_1009(herald, exchange):
    c = Client(herald.ws_url("channel=news&channel=bad%20one"))
    frames = [c.recv(), c.recv()]
    err = [f for f in frames if f["type"] == "error"][0]
    assert err["code"] == "bad_channel" and "op" not in err
    assert [f for f in frames if f["type"] == "subscribed"][0]["channel"] == "news"

    c.send("{not json")
    e = c.recv()
    assert e["type"] == "error" and e["code"] == "bad_request" and "op" not in e
    c.send({"op": "dance"})
    e = c.recv()
    assert (e["code"], e["op"]) == ("unknown_op", "dance")
    c.send({"op": "subscribe", "channel": "x" * 129})
    e = c.recv()
    assert (e["code"], e["op"]) == ("bad_channel", "subscribe")
    c.send({"op": "subscribe", "channel": "ok", "since": -1})
    assert c.recv()["code"] == "bad_request"

    bystander = Client(herald.ws_url("channel=news"))
    bystander.recv()
    try:
        c.send("x" * (1 << 20))
        c.recv(timeout=5)
        assert False, "expected close"
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 1009
    publish(exchange, "news", [b"after"])
    msgs, _ = bystander.recv_messages("news", 1)
    assert msgs[0]["data"] == "after"
    bystander.close()
    assert herald.metrics()["herald_oversize_closes_total"] == 1


def test_url_since_with_several_channels_is_bad_request(herald):
    c = Client(herald.ws_url("channel=a&channel=b&since=3"))
    e = c.recv()
    assert e["type"] == "error" and e["code"] == "bad_request"
    c.send({"op": "subscribe", "channel": "c"})
    assert c.recv()["channel"] == "c"  # a and b were not subscribed
    c.close()


def raw_ws(port, path):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(1)
    assert b" 101 " in buf.split(b"\r\n")[0]
    return s


def read_until_close(s, timeout=30):
    """Reads frames until a close frame; returns its code (None on EOF without one)."""
    s.settimeout(timeout)
    data = b""
    def need(n):
        nonlocal data
        while len(data) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError
            data += chunk
    try:
        while True:
            need(2)
            opcode, ln = data[0] & 0x0F, data[1] & 0x7F
            off = 2
            if ln == 126:
                need(4); ln = int.from_bytes(data[2:4], "big"); off = 4
            elif ln == 127:
                need(10); ln = int.from_bytes(data[2:10], "big"); off = 10
            need(off + ln)
            payload = data[off:off + ln]
            data = data[off + ln:]
            if opcode == 8:
                return int.from_bytes(payload[:2], "big")
    except (EOFError, ConnectionResetError):
        return None


def test_a_client_still_sending_an_oversize_message_reads_its_1009(herald):
    """The 1009 is sent once the oversize message has been read to its end. Closed earlier,
    the server would leave the client's remaining bytes unread, and the kernel would answer
    them with a reset that can destroy the close frame before the client reads it."""
    s = raw_ws(herald.port, "/ws?channel=news")
    size, mask = 1 << 20, b"\x11\x22\x33\x44"
    s.sendall(bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big") + mask)
    chunk = bytes(b ^ mask[i % 4] for i, b in enumerate(b"x" * 65536))
    s.sendall(chunk)
    time.sleep(0.5)  # the server has seen more than the limit, and the client is still sending
    for _ in range(size // len(chunk) - 1):
        s.sendall(chunk)
    assert read_until_close(s) == 1009
    s.close()
    assert herald.metrics()["herald_oversize_closes_total"] == 1


def test_client_that_stops_reading_is_closed_4008_while_others_get_everything(herald_factory, exchange):
    h = herald_factory(extra=["--client-backlog", "100"]).start()
    slow = raw_ws(h.port, "/ws?channel=flood")  # never reads until it has been told to go
    # Readers that keep up: 20 Python clients (100 could themselves fall --client-backlog behind
    # on a loaded 2-core machine running other tests beside this one).
    readers = [Client(h.ws_url("channel=flood")) for _ in range(20)]
    for r in readers:
        assert r.recv()["type"] == "subscribed"
    total = 600
    body = b"y" * 16000  # enough to fill the slow client's socket buffers and then the backlog
    publisher = threading.Thread(target=publish, args=(exchange, "flood", [body] * total))
    publisher.start()
    results = [None] * len(readers)
    def read(i):
        msgs, _ = readers[i].recv_messages("flood", total, timeout=180)
        results[i] = [m["seq"] for m in msgs]
    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(readers))]
    for t in threads: t.start()
    wait_until(lambda: h.metrics()["herald_slow_consumer_closes_total"] >= 1, 120, interval=0.2,
               what="the slow client to be closed")
    assert read_until_close(slow) == 4008
    for t in threads: t.join()
    publisher.join()
    for seqs in results:
        assert seqs == list(range(1, total + 1))
    assert h.metrics()["herald_slow_consumer_closes_total"] == 1
    for r in readers: r.close()
