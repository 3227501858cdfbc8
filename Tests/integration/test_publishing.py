"""docs/PUBLISHING.md's snippets, run as a backend would run them: the Python and Go publishers
(confirms, a stable message_id, a retry stored once) against a real RabbitMQ and Herald, and the
Python and Go token minters checked by Herald itself."""
import json
import os
import re
import signal
import subprocess

from conftest import ROOT, Client, wait_until
from test_security import SECRET

DOC = os.path.join(ROOT, "docs", "PUBLISHING.md")


def snippets(language):
    with open(DOC) as f:
        return re.findall(rf"```{language}\n(.*?)```", f.read(), flags=re.S)


def run(language, code, env, tmp_path):
    if language == "python":
        return subprocess.run(["python3", "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    path = tmp_path / f"snippet{abs(hash(code))}.go"
    path.write_text(code)
    return subprocess.run(["go", "run", str(path)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, **env, "GOPATH": "/usr/share/gocode", "GO111MODULE": "off",
                               "GOCACHE": str(tmp_path / "gocache")})


def history(h, channel):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{h.port}/api/history/{channel}", timeout=5) as r:
        body = json.loads(r.read())
        return body["messages"] if isinstance(body, dict) else body


def test_the_publishing_snippets_store_each_order_once_even_when_run_twice(herald, exchange, tmp_path):
    python, go = snippets("python")[0], snippets("go")[0]
    for language, code, channel, orders in [("python", python, "orders:py", [101, 102, 103]), ("go", go, "orders:go", [201, 202, 203])]:
        env = {"AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/", "EXCHANGE": exchange, "CHANNEL": channel}
        for _ in range(2):  # the second run is a retry of every message: same ids
            out = run(language, code, env, tmp_path)
            assert out.returncode == 0, out.stderr
        wait_until(lambda: len(history(herald, channel)) == 3, 15, what=f"{language}'s three orders")
        stored = history(herald, channel)
        assert [m["data"] for m in stored] == [{"order": o, "status": "shipped"} for o in orders]
        assert [m["seq"] for m in stored] == [1, 2, 3] and [m["id"] for m in stored] == [f"order-{o}-shipped" for o in orders]


def test_the_token_snippets_mint_tokens_herald_accepts(herald_factory, tmp_path):
    h = herald_factory(extra=["--token-secret", SECRET]).start()
    python, go = snippets("python")[1], snippets("go")[1]
    for language, code in [("python", python), ("go", go)]:
        out = run(language, code, {"HERALD_TOKEN_SECRET": SECRET}, tmp_path)
        assert out.returncode == 0, out.stderr
        token = out.stdout.strip()
        c = Client(h.ws_url(f"token={token}&channel=orders:user-42"))
        frames = [c.recv(), c.recv()]
        c.close()
        assert frames[0]["type"] == "authenticated" and frames[0]["sub"] == "user-42", (language, frames)
        assert frames[1]["type"] == "subscribed" and frames[1]["channel"] == "orders:user-42", (language, frames)


def start_worker(language, code, env, tmp_path):
    """A worker snippet as a backend runs it: until stopped. Returns once it printed "ready"."""
    env = {**os.environ, **env}
    if language == "python":
        proc = subprocess.Popen(["python3", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
    else:
        path = tmp_path / f"worker{abs(hash(code))}.go"
        path.write_text(code)
        # Its own process group: `go run` starts the built program as a child, stopped with it.
        proc = subprocess.Popen(["go", "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                env={**env, "GOPATH": "/usr/share/gocode", "GO111MODULE": "off", "GOCACHE": str(tmp_path / "gocache")},
                                start_new_session=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise AssertionError(f"{language} worker did not start: {line!r} {stop_process(proc)}")
    return proc


def stop_process(proc):
    """Kills the worker's whole process group; returns what it wrote to stderr."""
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=10)
    return err


def stop_worker(proc, exchange, queue):
    err = stop_process(proc)
    if err.strip():
        print(err[-3000:])
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    conn.channel().queue_delete(f"{exchange}.{queue}")
    conn.close()


def user_token(sub, channels):
    import time
    import jwt as pyjwt
    return pyjwt.encode({"sub": sub, "exp": int(time.time()) + 600, "channels": channels}, SECRET, algorithm="HS256")


def answer(c, id_):
    """The frame answering the publish or call `id_` (message frames, whose id differs, are kept)."""
    others = []
    while True:
        f = c.recv(timeout=10)
        if f.get("id") == id_:
            c.pending = others + c.pending
            return f
        others.append(f)


def test_the_rpc_workers_answer_client_calls_with_results_and_errors(herald_factory, exchange, tmp_path):
    h = herald_factory(extra=["--rpc-methods", "cart.*", "--token-secret", SECRET]).start()
    env = {"AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/", "EXCHANGE": exchange}
    for language in ("python", "go"):
        worker = start_worker(language, snippets(language)[2], env, tmp_path)
        try:
            c = Client(h.ws_url(f"token={user_token('ann', [])}"))
            assert c.recv()["type"] == "authenticated"
            c.send({"op": "rpc", "id": "r1", "method": "cart.add", "data": {"sku": "a-1", "qty": 2}})
            assert answer(c, "r1") == {"type": "rpc_result", "id": "r1", "data": {"added": "a-1", "qty": 2, "user": "ann", "by": language}}
            c.send({"op": "rpc", "id": "r2", "method": "cart.remove", "data": {"sku": "a-1"}})
            failed = answer(c, "r2")
            assert (failed["type"], failed["code"]) == ("rpc_error", "worker_error") and failed["message"].startswith("cannot do cart.remove")
            c.close()
        finally:
            stop_worker(worker, exchange, "cart-worker")


def test_the_inbound_workers_publish_what_they_accept_and_drop_the_rest(herald_factory, exchange, tmp_path):
    h = herald_factory(extra=["--client-publish", "backend", "--token-secret", SECRET]).start()
    env = {"AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/", "EXCHANGE": exchange}
    for language in ("python", "go"):
        worker = start_worker(language, snippets(language)[3], env, tmp_path)
        channel = f"room:{language}"
        try:
            c = Client(h.ws_url(f"token={user_token('ann', ['room:*'])}&channel={channel}"))
            assert c.recv()["type"] == "authenticated"
            for i, text in enumerate(["hello", "buy SPAM now", "bye"]):
                c.send({"op": "publish", "channel": channel, "data": {"text": text}, "id": f"m{i}"})
                assert answer(c, f"m{i}")["type"] == "published"
            delivered, _ = c.recv_messages(channel, 2)
            assert [(m["seq"], m["data"], m["id"]) for m in delivered] == [
                (1, {"text": "hello", "user": "ann", "checked_by": language}, "client:ann:m0"),
                (2, {"text": "bye", "user": "ann", "checked_by": language}, "client:ann:m2")]
            c.close()
        finally:
            stop_worker(worker, exchange, "moderation")
