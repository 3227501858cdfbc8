"""`herald serve --config herald.yaml`: namespaces give kinds of channel their own history size,
anonymous read and HTTP publishing, checked through the WebSocket, the history API and Redis;
`herald config check` names the line and the reason of a bad file; variables and flags override
the file."""
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import HERALD_BIN, Client, publish, wait_until
from test_security import SECRET, closed_with, jwt, _claims

CONFIG = """\
# A namespaced deployment: chat is open and keeps 50, prices needs a token and keeps 5.
token-secret-file: {secret_file}
api-key: ops-key
history-size: 100
namespaces:
  - name: chat
    pattern: "chat:*"
    history-size: 50
    anonymous: true
  - name: prices
    pattern: "prices:*"
    history-size: 5
    anonymous: false
    publish-keys: [feed-key]
  - name: internal
    pattern: "internal:*"
    http-publish: false
"""


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def run(args, env=None):
    return subprocess.run([HERALD_BIN, *args], capture_output=True, text=True, timeout=20,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}, **(env or {})})


@pytest.fixture
def config_file(tmp_path):
    secret = tmp_path / "token-secret"
    secret.write_text(SECRET + "\n")
    path = tmp_path / "herald.yaml"
    path.write_text(CONFIG.format(secret_file=secret))
    return path


def seqs(frames):
    return [f["seq"] for f in frames]


def test_chat_keeps_50_anonymously_and_prices_keeps_5_behind_a_token(herald_factory, exchange, redis_server, config_file):
    h = herald_factory(extra=["--config", str(config_file)]).start()
    for channel in ["chat:lobby", "prices:eur", "news"]:
        publish(exchange, channel, [f"{channel}-{i}".encode() for i in range(1, 81)])
    wait_until(lambda: h.metrics()["herald_messages_in_total"] == 240, 20, what="240 messages sequenced")

    # Redis: each channel's list is capped by its own namespace, in the sequencing script.
    r = redis_server.client()
    assert [r.llen(f"herald:history:{c}") for c in ["chat:lobby", "prices:eur", "news"]] == [50, 5, 80]
    assert [b"prices:eur-%d" % i in f for i, f in zip(range(80, 75, -1), r.lrange("herald:history:prices:eur", 0, -1))] == [True] * 5

    # WebSocket, no token: chat replays its 50 and goes live; prices and news need a token.
    anon = Client(h.ws_url("channel=chat:lobby"))
    sub = anon.recv()
    assert (sub["type"], sub["channel"], sub["seq"], sub["replay"]) == ("subscribed", "chat:lobby", 80, 50)
    assert seqs(anon.recv_messages("chat:lobby", 50)[0]) == list(range(31, 81))
    for channel in ["prices:eur", "news"]:
        anon.send({"op": "subscribe", "channel": channel})
        error = anon.recv()
        assert (error["type"], error["code"], error["channel"]) == ("error", "forbidden", channel), error
        assert "needs a token" in error["message"]
    publish(exchange, "chat:lobby", [b"live"])
    live, _ = anon.recv_messages("chat:lobby", 1)
    assert (live[0]["seq"], live[0]["data"]) == (81, "live")
    assert r.llen("herald:history:chat:lobby") == 50
    anon.close()

    # WebSocket with a token for prices: its 5, then live.
    token = jwt(_claims(channels=["prices:*"]))
    priced = Client(h.ws_url(f"token={token}&channel=prices:eur"))
    assert priced.recv()["type"] == "authenticated"
    sub = priced.recv()
    assert (sub["seq"], sub["replay"]) == (80, 5)
    assert seqs(priced.recv_messages("prices:eur", 5)[0]) == [76, 77, 78, 79, 80]
    priced.close()

    # History API: the same rules and sizes.
    base = f"http://127.0.0.1:{h.port}/api/history/"
    status, body = http("GET", base + "chat:lobby?limit=1000")
    assert status == 200 and seqs(body) == list(range(32, 82))
    status, body = http("GET", base + "prices:eur")
    assert (status, body["error"]) == (401, "unauthorized")
    status, body = http("GET", base + "prices:eur?limit=1000", headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and seqs(body) == [76, 77, 78, 79, 80]
    status, body = http("GET", base + "news")
    assert (status, body["error"]) == (401, "unauthorized")
    status, body = http("GET", base + "news?limit=1000", headers={"X-API-Key": "ops-key"})
    assert status == 200 and seqs(body) == list(range(1, 81))

    # HTTP publishing: prices only with its own key, internal not at all, the rest with the server's.
    pub = f"http://127.0.0.1:{h.port}/api/publish/"
    assert http("POST", pub + "prices:eur", b"p", {"X-API-Key": "ops-key"}) == (403, {
        "error": "forbidden", "message": "this API key may not publish to namespace prices"})
    assert http("POST", pub + "prices:eur", b"p", {"X-API-Key": "feed-key"})[0] == 202
    assert http("POST", pub + "chat:lobby", b"c", {"X-API-Key": "feed-key"})[0] == 401
    # A publish key publishes and does not read (PROTOCOL.md, namespaces).
    for headers in ({"X-API-Key": "feed-key"}, {"Authorization": "Bearer feed-key"}):
        status, body = http("GET", base + "prices:eur", headers=headers)
        assert (status, body["error"]) == (403, "forbidden")
    status, body = http("POST", pub + "internal:jobs", b"i", {"X-API-Key": "ops-key"})
    assert (status, body["error"]) == (403, "publish_not_allowed")
    assert http("POST", pub + "chat:lobby", b"c", {"X-API-Key": "ops-key"})[0] == 202
    wait_until(lambda: r.llen("herald:history:prices:eur") == 5 and h.metrics()["herald_messages_in_total"] == 243, 10,
               what="the two accepted HTTP publishes")
    status, body = http("GET", base + "prices:eur", headers={"Authorization": f"Bearer {token}"})
    assert seqs(body) == [77, 78, 79, 80, 81] and body[-1]["data"] == "p"
    assert "namespace" in h.log() and "prices:*" in h.log()


def test_config_check_prints_the_effective_settings_masked_and_names_a_bad_line(config_file, tmp_path):
    good = run(["config", "check", str(config_file)], env={"HERALD_HISTORY_SIZE": "70"})
    assert good.returncode == 0, good.stderr
    lines = good.stdout.splitlines()
    assert f'history-size: 70  # HERALD_HISTORY_SIZE' in lines          # the variable wins over line 4
    assert f'api-key: ["********"]  # {config_file}:3' in lines
    assert f'token-secret: "********"  # {config_file}:2 (token-secret-file)' in lines
    assert 'port: 8080  # default' in lines
    assert SECRET not in good.stdout and "ops-key" not in good.stdout and "feed-key" not in good.stdout
    assert '  - name: "prices"  # ' + f"{config_file}:10" in lines and '    history-size: 5' in lines

    for text, expected in [
        ("history-size: 5\nping-interval: soon\n", ":2: The value 'soon' is invalid for '--ping-interval <ping-interval>'"),
        ("history-size: 5\nhistroy-ttl: 5\n", ':2: unknown setting "histroy-ttl" (did you mean history-ttl?)'),
        ("namespaces:\n  - pattern: \"a:*\"\n  - pattern: \"b:*\"\n    client-backlog: none\n", ":4: client-backlog must be a whole number from 1 up"),
        ("log-level: loud\n", ':1: --log-level must be one of trace, debug, info, notice, warning, error, critical, not "loud"'),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        out = run(["config", "check", str(bad)])
        assert out.returncode == 1 and out.stdout == "", (text, out.stdout)
        assert out.stderr.strip() == f"{bad}{expected}", out.stderr
        # serve refuses the same file, with the same reason.
        served = run(["serve", "--config", str(bad)])
        assert served.returncode != 0 and expected.split(": ", 1)[1] in served.stderr, served.stderr

    example = run(["config", "example"])
    assert example.returncode == 0 and "#namespaces:" in example.stdout and "#history-size: 100" in example.stdout
    (tmp_path / "example.yaml").write_text(example.stdout)
    assert run(["config", "check", str(tmp_path / "example.yaml")]).returncode == 0


def test_variables_override_the_file_and_flags_override_both(herald_factory, exchange, redis_server, tmp_path):
    (tmp_path / "secret").write_text(SECRET)
    path = tmp_path / "herald.yaml"
    path.write_text("history-size: 7\nanonymous-channels: [open]\n")
    r = redis_server.client()
    for n, (env, extra, expected) in enumerate([({}, [], 7), ({"HERALD_HISTORY_SIZE": "9"}, [], 9),
                                                 ({"HERALD_HISTORY_SIZE": "9"}, ["--history-size", "11"], 11)]):
        h = herald_factory(extra=["--config", str(path), *extra],
                           env={**env, "HERALD_TOKEN_SECRET_FILE": str(tmp_path / "secret")}).start()
        channel = f"layer{n}"
        publish(exchange, channel, [b"x"] * 20)
        wait_until(lambda: h.metrics()["herald_messages_in_total"] == 20, 10, what="20 stored")
        assert r.llen(f"herald:history:{channel}") == expected, (env, extra)
        # The secret came from HERALD_TOKEN_SECRET_FILE: a channel outside the file's anonymous
        # list needs a token signed with it.
        c = Client(h.ws_url(f"channel={channel}"))
        assert c.recv()["code"] == "forbidden"
        c.close()
        c = Client(h.ws_url(f"token={jwt(_claims())}&channel={channel}"))
        assert c.recv()["type"] == "authenticated"
        assert c.recv()["replay"] == expected
        c.close()
        h.stop()
