"""A deliberately broken Herald look-alike, to prove `herald bench` counts what a server gets
wrong. It consumes the test's exchange, numbers messages per channel, and sends every client
each message except seq 5, seq 7 twice, and seq 11 before seq 10.
Run: python3 broken_server.py PORT EXCHANGE"""
import asyncio
import json
import sys
import threading
import time
from urllib.parse import parse_qs, urlparse

import pika
import websockets

PORT, EXCHANGE = int(sys.argv[1]), sys.argv[2]
clients = {}  # channel -> set of websockets
seqs = {}


def consume(loop, queue):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    ch = conn.channel()
    ch.exchange_declare(EXCHANGE, "fanout", durable=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, EXCHANGE)
    for method, props, body in ch.consume(q, auto_ack=True):
        loop.call_soon_threadsafe(queue.put_nowait, (method.routing_key, props.message_id, body))


async def fan_out(queue):
    held = {}
    while True:
        channel, mid, body = await queue.get()
        seq = seqs[channel] = seqs.get(channel, 0) + 1
        frame = json.dumps({"type": "message", "channel": channel, "seq": seq, "id": mid,
                            "time": int(time.time() * 1000), "data": json.loads(body)}, separators=(",", ":"))
        if seq == 5:
            continue  # lost
        if seq == 10:
            held[channel] = frame  # sent after 11
            continue
        out = [frame, frame] if seq == 7 else [frame]
        if seq == 11 and channel in held:
            out.append(held.pop(channel))
        for ws in list(clients.get(channel, ())):
            for f in out:
                try:
                    await ws.send(f)
                except Exception:
                    pass


async def handler(ws):
    path = ws.request.path if hasattr(ws, "request") else ws.path
    channel = parse_qs(urlparse(path).query)["channel"][0]
    clients.setdefault(channel, set()).add(ws)
    await ws.send(json.dumps({"type": "subscribed", "channel": channel, "epoch": "broken",
                              "seq": seqs.get(channel, 0), "replay": 0}, separators=(",", ":")))
    try:
        await ws.wait_closed()
    finally:
        clients[channel].discard(ws)


async def main():
    queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=consume, args=(loop, queue), daemon=True).start()
    asyncio.create_task(fan_out(queue))
    async with websockets.serve(handler, "127.0.0.1", PORT):
        print("ready", flush=True)
        await asyncio.Future()


asyncio.run(main())
