"""The Redis scripts as files (Sources/HeraldServer/Lua/*.lua), run with `redis-cli --eval` on a real
Redis: each loads, and the sequencing, history read, occupancy and lease scripts do what
Scripts.swift documents. `--#include NAME.lua` lines are expanded as the LuaEmbed build tool does."""
import os
import subprocess

import pytest

from conftest import ROOT

LUA = os.path.join(ROOT, "Sources", "HeraldServer", "Lua")


def expanded(name, tmp_path):
    lines = []
    for line in open(os.path.join(LUA, name)).read().split("\n"):
        if line.startswith("--#include "):
            lines.append(open(os.path.join(LUA, line.split(" ", 1)[1].strip())).read().rstrip("\n"))
        else:
            lines.append(line)
    path = tmp_path / name
    path.write_text("\n".join(lines))
    return str(path)


def cli_eval(redis_server, path, keys, args):
    out = subprocess.run(["redis-cli", "-p", str(redis_server.port), "--raw", "--eval", path, *keys, ",", *map(str, args)],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "ERR" not in out.stdout, out.stdout + out.stderr
    text = out.stdout[:-1] if out.stdout.endswith("\n") else out.stdout  # the last line's end only: '' may be a value
    return text.split("\n")


SCRIPTS = sorted(f for f in os.listdir(LUA) if f.endswith(".lua") and not f.startswith("_"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_loads(redis_server, tmp_path, name):
    sha = redis_server.client().script_load(open(expanded(name, tmp_path)).read())
    assert len(sha) == 40


def test_sequence_numbers_stores_trims_and_deduplicates(redis_server, tmp_path):
    path = expanded("sequence.lua", tmp_path)
    keys = ["herald:meta:c", "herald:history:c", "herald:id:c#m1"]
    head = '{"type":"message","seq":'
    # history size 2, dedupe 60 s, epoch candidate e1, no TTLs, no watermarks; two messages, the second with id key 3.
    first = cli_eval(redis_server, path, keys, [2, 60, "e1", 0, 0, "", head, ',"n":1}', 0, head, ',"n":2}', 3])
    assert first == ["e1", "-1", "", "1", "", "2", ""]
    again = cli_eval(redis_server, path, keys, [2, 60, "e9", 0, 0, "", head, ',"n":3}', 0, head, ',"n":2}', 3])
    assert again == ["e1", "-1", "", "3", "", "2", head + '2,"n":2}'], "the id seen before keeps its seq and frame"
    r = redis_server.client()
    assert r.lrange("herald:history:c", 0, -1) == [(head + '3,"n":3}').encode(), (head + '2,"n":2}').encode()]  # trimmed to 2
    # Redis behind this node's watermark (e1 reached 5): a new epoch, and it says what it held.
    behind = cli_eval(redis_server, path, keys[:2], [2, 60, "e2", 0, 0, "e1 5", head, "}", 0])
    assert behind == ["e2", "3", "e1", "1", ""]


def test_read_gives_epoch_seq_and_newest_frames(redis_server, tmp_path):
    seq = expanded("sequence.lua", tmp_path)
    cli_eval(redis_server, seq, ["herald:meta:r", "herald:history:r"], [10, 60, "ep", 0, 0, "", '{"seq":', "}", 0, '{"seq":', "}", 0])
    out = cli_eval(redis_server, expanded("read.lua", tmp_path), ["herald:meta:r", "herald:history:r"], ["other", 1, 0, 300])
    assert out == ["ep", "2", '{"seq":2}']


def test_occupancy_versions_its_transitions(redis_server, tmp_path):
    path = expanded("occupancy.lua", tmp_path)
    keys = ["herald:occupancy:ch", "herald:lifecycle-held:i1", "herald:occupancy-version"]
    assert cli_eval(redis_server, path, keys, ["i1", "ch", 1]) == ["1"]
    assert cli_eval(redis_server, path, ["herald:occupancy:ch", "herald:lifecycle-held:i2", "herald:occupancy-version"], ["i2", "ch", 1]) == ["0"]
    assert cli_eval(redis_server, path, keys, ["i1", "ch", 0]) == ["0"]
    assert cli_eval(redis_server, path, ["herald:occupancy:ch", "herald:lifecycle-held:i2", "herald:occupancy-version"], ["i2", "ch", 0]) == ["2"]


def test_a_lease_that_ran_out_is_reaped_and_claimed_until_released(redis_server, tmp_path):
    path = expanded("lifecycle_heartbeat.lua", tmp_path)
    keys = ["herald:lifecycle-nodes", "herald:occupancy-version", "herald:lifecycle-reaping"]
    args = lambda instance: [instance, 60000, "herald:lifecycle-clients:", "herald:lifecycle-held:", "herald:occupancy:",
                             "herald:lifecycle-vacated:"]
    r = redis_server.client()
    assert cli_eval(redis_server, path, keys, args("dead")) == ["1"]  # a first lease
    r.zadd("herald:lifecycle-nodes", {"dead": 0})  # ran out
    r.hset("herald:lifecycle-clients:dead", "dead.1", "{}")
    r.sadd("herald:lifecycle-held:dead", "lonely")
    r.sadd("herald:occupancy:lonely", "dead")
    out = cli_eval(redis_server, path, keys, args("alive"))
    assert out[0] == "1" and out[1] == "dead" and out[2:4] == ["dead.1", "{}"] and out[4:] == ["lonely", "1"]
    assert r.hget("herald:lifecycle-reaping", "dead") == b"alive"
    assert cli_eval(redis_server, path, keys, args("alive")) == ["0"], "a live claimer's claim is not handed out again"
    # A third instance takes the claim over once the claimer's own lease has run out.
    r.zadd("herald:lifecycle-nodes", {"alive": 0})
    out = cli_eval(redis_server, path, keys, args("third"))
    assert "dead" in out and r.hget("herald:lifecycle-reaping", "dead") == b"third"
