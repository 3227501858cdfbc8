"""permessage-deflate (RFC 7692) in Herald's own frame layer: what is negotiated, that messages
of every size and coalesced batches of them arrive intact and in order through Python
`websockets` and a raw socket client, that compressed client ops work, and that bad compressed
input closes with the code the RFCs name while the node's other clients go on receiving."""
import json
import threading
import time

import pika
from websockets.exceptions import ConnectionClosed

from conftest import Client, assert_consecutive, publish, wait_until
from wsraw import Closed, RawWebSocket, deflate

ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def body(size, i):
    """A JSON body whose frame is about `size` bytes, compressible like real traffic."""
    filler = "".join(f"{{\"symbol\":\"S{(i * 7 + k) % 97}\",\"price\":{(i * 31 + k * 17) % 100000}}}," for k in range(size // 30 + 1))
    return json.dumps({"n": i, "rows": filler[:max(0, size - 20)]}).encode()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_the_negotiated_parameters_are_exactly_herald_s_answer(herald):
    # What browsers and Python websockets offer.
    c = RawWebSocket(herald.port, offer="permessage-deflate; client_max_window_bits")
    assert c.status == 101 and c.extensions == ANSWER
    assert sum(1 for line in c.header_lines if line.lower().startswith("sec-websocket-extensions")) == 1
    c.close()
    # A window the client asks for is honoured; 8 bits cannot be (zlib), so that offer is
    # declined and the next one taken, or none at all.
    c = RawWebSocket(herald.port, offer="permessage-deflate; server_max_window_bits=10")
    assert c.extensions == ANSWER + "; server_max_window_bits=10"
    c.close()
    c = RawWebSocket(herald.port, offer="permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=11")
    assert c.extensions == ANSWER + "; server_max_window_bits=11"
    c.close()
    for offer in ("permessage-deflate; server_max_window_bits=8", "permessage-deflate; mystery", "x-webkit-deflate-frame"):
        c = RawWebSocket(herald.port, offer=offer)
        assert c.status == 101 and c.extensions is None, offer
        c.close()
    # Python websockets offers compression by default and accepts the answer.
    w = Client(herald.ws_url("channel=news"))
    assert w.ws.response.headers["Sec-WebSocket-Extensions"] == ANSWER
    assert w.recv()["type"] == "subscribed"
    w.close()
    assert herald.metrics()["herald_ws_deflate_connections"] == 0


def test_messages_of_every_size_and_batches_of_them_arrive_intact_and_in_order(herald_factory, exchange):
    h = herald_factory(extra=["--max-message-bytes", "1000000"]).start()
    deflating = RawWebSocket(h.port, "/ws?channel=mixed")
    narrow = RawWebSocket(h.port, "/ws?channel=mixed", offer="permessage-deflate; server_max_window_bits=10")
    plain = RawWebSocket(h.port, "/ws?channel=mixed", offer=None)
    library = Client(h.ws_url("channel=mixed"))
    assert plain.extensions is None and narrow.extensions.endswith("server_max_window_bits=10")
    for c in (deflating, narrow, plain):
        assert json.loads(c.recv_lines()[0][0])["type"] == "subscribed"
    assert library.recv()["type"] == "subscribed"
    wait_until(lambda: h.metrics()["herald_ws_deflate_connections"] == 3, 5, what="three compressing connections")

    sizes = [10, 2_000, 300_000] * 4 + [10] * 20 + [2_000] * 20
    bodies = [body(n, i) for i, n in enumerate(sizes)]
    publish(exchange, "mixed", bodies)  # one burst: the coalescing window batches it

    def read_all(c):
        frames, batches = [], []
        while len(frames) < len(bodies):
            lines, compressed = c.recv_lines()
            frames += [json.loads(line) for line in lines]
            batches.append((len(lines), max(len(line) for line in lines), compressed))
        return frames, batches

    results = {}
    for name, c in (("deflating", deflating), ("narrow", narrow), ("plain", plain)):
        frames, batches = read_all(c)
        assert_consecutive([f["seq"] for f in frames], 1, len(bodies))
        assert [f["data"] for f in frames] == [b.decode() for b in bodies]
        results[name] = (batches, c.wire_bytes)
    library_frames, _ = library.recv_messages("mixed", len(bodies))
    assert [m["seq"] for m in library_frames] == list(range(1, len(bodies) + 1))
    assert [m["data"] for m in library_frames] == [b.decode() for b in bodies]

    batches, wire = results["deflating"]
    assert all(compressed for _, largest, compressed in batches if largest >= 2_000), "every message with a large frame goes compressed"
    assert not any(compressed for _, largest, compressed in batches if largest < 128), "small frames alone go plain"
    assert any(n > 1 and compressed for n, _, compressed in batches), "some messages were coalesced into a compressed batch"
    assert not any(compressed for _, _, compressed in results["plain"][0]), "nothing compressed to a client that offered nothing"
    assert plain.compressed_messages == 0 and deflating.compressed_messages > 0 and narrow.compressed_messages > 0
    assert wire < results["plain"][1] / 3, f"compressed {wire} bytes vs plain {results['plain'][1]}"
    for c in (deflating, narrow, plain):
        c.close()
    library.close()
    m = h.metrics()
    labeled = h.labeled("herald_ws_bytes_total")
    assert labeled['encoding="deflate"'] > 0 and labeled['encoding="plain"'] > 0
    assert labeled['encoding="deflate"'] < m["herald_ws_deflate_input_bytes_total"] / 3
    # Every large live message was compressed once for the node, not once per connection.
    assert 0 < m["herald_deflate_shared_pieces_total"] <= len(bodies)


def test_a_lone_small_message_costs_nothing_and_a_large_one_is_compressed(herald, exchange):
    c = RawWebSocket(herald.port, "/ws?channel=one")
    json.loads(c.recv_lines()[0][0])
    publish(exchange, "one", [b"hi"])
    lines, compressed = c.recv_lines()
    assert json.loads(lines[0])["data"] == "hi" and not compressed
    publish(exchange, "one", [body(4_000, 1)])
    lines, compressed = c.recv_lines()
    assert json.loads(lines[0])["seq"] == 2 and compressed
    c.close()


def test_compressed_ops_from_the_client_are_accepted(herald, exchange):
    c = RawWebSocket(herald.port, "/ws")
    c.send_text(json.dumps({"op": "subscribe", "channel": "ops"}))
    lines, _ = c.recv_lines()
    assert json.loads(lines[0])["type"] == "subscribed"
    publish(exchange, "ops", [b"one"])
    assert json.loads(c.recv_lines()[0][0])["data"] == "one"
    # A compressed op split over a first frame and a continuation (RSV1 on the first only).
    compressed = deflate(json.dumps({"op": "unsubscribe", "channel": "ops"}).encode())
    c.send_frame(0x1, compressed[:5], fin=False, rsv=0x40)
    c.send_frame(0x0, compressed[5:])
    assert json.loads(c.recv_lines()[0][0]) == {"type": "unsubscribed", "channel": "ops"}
    # An empty first frame carrying RSV1, and an empty continuation in the middle.
    z = deflate(json.dumps({"op": "subscribe", "channel": "ops"}).encode())
    for frames in ([b"", z], [z[:3], b"", z[3:]]):
        for i, payload in enumerate(frames):
            c.send_frame(0x1 if i == 0 else 0x0, payload, fin=i == len(frames) - 1, rsv=0x40 if i == 0 else 0)
        assert json.loads(c.recv_lines()[0][0])["type"] == "subscribed"
        c.send_text(json.dumps({"op": "unsubscribe", "channel": "ops"}))
        assert json.loads(c.recv_lines()[0][0])["type"] == "unsubscribed"
    # A plain op on the same connection is fine too.
    c.send_text(json.dumps({"op": "subscribe", "channel": "ops2"}), compress=False)
    assert json.loads(c.recv_lines()[0][0])["type"] == "subscribed"
    c.close()


def test_with_permessage_deflate_false_nothing_is_negotiated(herald_factory, exchange, tmp_path):
    config = tmp_path / "herald.yaml"
    config.write_text("permessage-deflate: false\n")
    for channel, h in (("flag", herald_factory(extra=["--permessage-deflate", "false"]).start()),
                       ("env", herald_factory(env={"HERALD_PERMESSAGE_DEFLATE": "false"}).start()),
                       ("file", herald_factory(extra=["--config", str(config)]).start())):
        c = RawWebSocket(h.port, f"/ws?channel={channel}")
        assert c.status == 101 and c.extensions is None
        w = Client(h.ws_url(f"channel={channel}"))
        assert "Sec-WebSocket-Extensions" not in w.ws.response.headers
        w.recv()
        json.loads(c.recv_lines()[0][0])
        publish(exchange, channel, [body(4_000, 1)])
        lines, compressed = c.recv_lines()
        assert json.loads(lines[0])["seq"] == 1 and not compressed
        assert w.recv_messages(channel, 1)[0][0]["seq"] == 1
        # An RSV1 frame on a connection without the extension is a protocol error.
        c.send_text('{"op":"subscribe","channel":"x"}', compress=True)
        assert c.close_code() == 1002
        w.close()


def test_bad_compressed_input_closes_with_the_rfc_codes_and_other_clients_keep_receiving(herald_factory, exchange):
    h = herald_factory(extra=["--max-client-frame-bytes", "1048576"]).start()
    bystander = Client(h.ws_url("channel=steady"))
    assert bystander.recv()["type"] == "subscribed"
    stop = threading.Event()
    sent = []

    def publisher():
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        ch = conn.channel()
        ch.confirm_delivery()
        i = 0
        while not stop.is_set():
            i += 1
            ch.basic_publish(exchange, "steady", json.dumps({"i": i}).encode(), pika.BasicProperties(message_id=f"s{i}"))
            sent.append(i)
            time.sleep(0.01)
        conn.close()

    t = threading.Thread(target=publisher, daemon=True)
    t.start()
    wait_until(lambda: len(sent) > 20, 10, what="the steady publisher to start")

    def closed_with(frames):
        c = RawWebSocket(h.port, "/ws")
        for opcode, payload, flags in frames:
            c.send_frame(opcode, payload, **flags)
        code = c.close_code()
        c.close()
        return code

    # Not deflate data at all: 1007 (RFC 7692 §8.2.3.1 leaves it to the endpoint; invalid payload).
    assert closed_with([(0x1, b"\xff\xff\xff\xff garbage", {"rsv": 0x40})]) == 1007
    # RSV1 on a continuation frame: 1002.
    assert closed_with([(0x1, deflate(b'{"op":'), {"fin": False, "rsv": 0x40}),
                        (0x0, b"more", {"rsv": 0x40})]) == 1002
    # Valid deflate that inflates to bytes that are not UTF-8 in a text message: 1007.
    assert closed_with([(0x1, deflate(b"\xc3\x28 not utf-8"), {"rsv": 0x40})]) == 1007

    # About 100 KB that inflates to 100 MiB: closed 1009 at the 1 MiB cap, nothing kept past it.
    bomb = deflate(bytes(100 << 20))
    assert len(bomb) < 120_000
    before = rss_kib(h.proc.pid)
    for _ in range(3):
        assert closed_with([(0x1, bomb, {"rsv": 0x40})]) == 1009
    grown = rss_kib(h.proc.pid) - before
    assert grown < 4096, f"resident memory grew by {grown} KiB"
    assert h.metrics()["herald_oversize_closes_total"] == 3

    # The bystander got every message, in order, throughout.
    stop.set()
    t.join(10)
    msgs, _ = bystander.recv_messages("steady", len(sent), timeout=30)
    assert [json.loads(m["data"])["i"] for m in msgs] == sent
    assert_consecutive([m["seq"] for m in msgs], 1, len(sent))
    bystander.close()
    assert h.proc.poll() is None


def test_a_replay_goes_out_compressed_from_pieces_made_once_per_history_read(herald, exchange, redis_server):
    publish(exchange, "past", [body(3_000, i) for i in range(5)])
    wait_until(lambda: redis_server.client().hget("herald:meta:past", "seq") == b"5", 10, what="sequencing")
    assert herald.metrics()["herald_deflate_shared_pieces_total"] == 0, "no compressing connection yet: nothing compressed"
    c = RawWebSocket(herald.port, "/ws?channel=past")
    frames, compressed = [], []
    while len(frames) < 6:
        lines, z = c.recv_lines()
        frames += [json.loads(line) for line in lines]
        compressed.append(z)
    assert frames[0]["type"] == "subscribed" and frames[0]["replay"] == 5
    assert [f["seq"] for f in frames[1:]] == [1, 2, 3, 4, 5]
    assert [f["data"] for f in frames[1:]] == [body(3_000, i).decode() for i in range(5)]
    assert all(compressed)
    # The history reader compressed the five frames once, for whichever subscribers compress.
    assert herald.metrics()["herald_deflate_shared_pieces_total"] == 5
    c.close()
