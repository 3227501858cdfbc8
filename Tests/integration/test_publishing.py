"""docs/PUBLISHING.md's snippets, run as a backend would run them: the Python and Go publishers
(confirms, a stable message_id, a retry stored once) against a real RabbitMQ and Herald, and the
Python and Go token minters checked by Herald itself."""
import json
import os
import re
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
    (python, _), (go, _) = snippets("python"), snippets("go")
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
    (_, python), (_, go) = snippets("python"), snippets("go")
    for language, code in [("python", python), ("go", go)]:
        out = run(language, code, {"HERALD_TOKEN_SECRET": SECRET}, tmp_path)
        assert out.returncode == 0, out.stderr
        token = out.stdout.strip()
        c = Client(h.ws_url(f"token={token}&channel=orders:user-42"))
        frames = [c.recv(), c.recv()]
        c.close()
        assert frames[0]["type"] == "authenticated" and frames[0]["sub"] == "user-42", (language, frames)
        assert frames[1]["type"] == "subscribed" and frames[1]["channel"] == "orders:user-42", (language, frames)
