"""HERALD_* variables: every option of every subcommand reads one (Tests/HeraldCLITests walks
them all); these check, end to end, the ones that were once ignored and that a bad value fails
as it does on the command line."""
import json
import os
import subprocess

from conftest import HERALD_BIN, publish, wait_until


def run(args, env, timeout=20):
    return subprocess.run([HERALD_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def test_history_ttl_meta_ttl_and_trusted_proxies_from_the_environment_are_applied(herald_factory, exchange, redis_server):
    # Each of these variables was once promised by --help and silently ignored.
    h = herald_factory(env={"HERALD_HISTORY_TTL": "40", "HERALD_HISTORY_META_TTL": "80",
                            "HERALD_TRUSTED_PROXIES": "127.0.0.1", "HERALD_MAX_CONNECTIONS_PER_IP": "1"}).start()
    publish(exchange, "envttl", [b"a"])
    r = redis_server.client()
    wait_until(lambda: r.exists("herald:history:envttl"), 10, what="the message to be stored")
    assert 0 < r.ttl("herald:history:envttl") <= 40
    assert 40 < r.ttl("herald:meta:envttl") <= 80
    # With 127.0.0.1 trusted, two clients forwarded for different addresses each get their own
    # per-address limit of 1; with the variable ignored both would be 127.0.0.1 and the second refused.
    from conftest import Client
    a = Client(h.ws_url(), additional_headers={"X-Forwarded-For": "198.51.100.1"})
    b = Client(h.ws_url(), additional_headers={"X-Forwarded-For": "198.51.100.2"})
    a.close(), b.close()


def test_a_bad_value_in_a_variable_fails_as_on_the_command_line():
    for variable, flag, value in [("HERALD_LOG_LEVEL", "--log-level", "loud"),
                                  ("HERALD_HISTORY_TTL", "--history-ttl", "soon"),
                                  ("HERALD_TRUSTED_PROXIES", "--trusted-proxies", "10.0.0.0/33")]:
        from_env = run(["serve"], {variable: value})
        from_flag = run(["serve", flag, value], {})
        assert from_env.returncode != 0 and from_env.returncode == from_flag.returncode, variable
        assert from_env.stderr == from_flag.stderr, variable
        assert flag in from_env.stderr, from_env.stderr
    assert "--log-level must be one of trace, debug, info, notice, warning, error, critical" in run(["serve"], {"HERALD_LOG_LEVEL": "loud"}).stderr
    flag = run(["bench", "latency"], {"HERALD_PEER": "maybe"})
    assert flag.returncode != 0 and "HERALD_PEER=maybe: --peer is a flag; use true or false" in flag.stderr


def test_bench_reads_its_exchange_and_amqp_url_from_the_environment(herald, exchange):
    # Nothing on the command line names the exchange: only HERALD_EXCHANGE does. Were it
    # ignored, the bench would publish to "herald" and its clients would receive nothing.
    out = run(["bench", "latency", "--url", herald.ws_url(), "--clients", "20", "--rate", "50",
               "--duration", "2", "--json", "--quiet"],
              {"HERALD_EXCHANGE": exchange, "HERALD_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/"}, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["published"] >= 50 and result["deliveries"] == result["published"] * 20
    assert (result["lost"], result["duplicated"]) == (0, 0)
    bad = run(["bench", "latency", "--url", herald.ws_url(), "--clients", "2", "--duration", "1", "--json", "--quiet"],
              {"HERALD_EXCHANGE": exchange, "HERALD_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}, timeout=60)
    assert bad.returncode != 0, "HERALD_AMQP_URL pointing nowhere must make the bench fail"


def test_publish_and_token_read_their_variables(herald, exchange):
    out = run(["publish", "envpub", "hello", "--id", "e-1"], {"HERALD_EXCHANGE": exchange})
    assert out.returncode == 0, out.stderr
    wait_until(lambda: herald.metrics()["herald_messages_in_total"] == 1, 10, what="the message on the env exchange")
    token = run(["token", "--sub", "u", "--channels", "a"], {"HERALD_TOKEN_SECRET": "0123456789abcdef0123"})
    assert token.returncode == 0 and token.stdout.count(".") == 2, token.stderr
    missing = run(["token", "--sub", "u"], {"HERALD_TOKEN_SECRET": ""})
    assert missing.returncode != 0 and "--token-secret or HERALD_TOKEN_SECRET" in missing.stderr


def test_json_logs_version_and_build_info(herald_factory):
    h = herald_factory(env={"HERALD_LOG_FORMAT": "json", "HERALD_NODE_ID": "node-7"}).start()
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{h.port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    version = run(["--version"], {}).stdout.strip()
    assert version and version[0].isdigit()
    assert f'herald_build_info{{version="{version}"}} 1' in metrics
    h.stop()
    lines = [line for line in h.log().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) == len(lines) >= 3
    listening = next(r for r in records if r["message"] == "listening")
    assert listening["level"] == "info" and listening["node"] == "node-7" and listening["port"] == str(h.port)
    assert listening["time"].endswith("Z") and "T" in listening["time"]
    assert any(r["message"] == "stopped" for r in records)
    assert run(["serve", "--log-format", "xml"], {}).stderr.startswith('Error: --log-format must be text or json, not "xml"')
