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


def sequence_args(groups, epoch="e1", dedupe=60, prefix="herald:live:"):
    """KEYS and ARGV of one sequence call: groups of (channel, size, marks, messages, id keys),
    a message being (head, tail, id key or None)."""
    keys, args = [], [dedupe, epoch, 0, prefix, "", "PUBLISH"]
    for channel, size, marks, messages in groups:
        keys += [f"herald:meta:{channel}", f"herald:history:{channel}"]
        args += [channel, len(keys) - 1, size, 0, marks, len(messages)]
        for head, tail, id_key in messages:
            if id_key:
                keys.append(id_key)
            args += [head, tail, len(keys) if id_key else 0]
    return keys, args


def test_sequence_numbers_stores_trims_deduplicates_and_publishes(redis_server, tmp_path):
    path = expanded("sequence.lua", tmp_path)
    head = '{"type":"message","seq":'
    r = redis_server.client()
    live = r.pubsub()
    live.subscribe("herald:live:c")
    assert live.get_message(timeout=5)["type"] == "subscribe"
    # history size 2, dedupe 60 s, no TTLs, no watermarks; two messages, the second with an id.
    keys, args = sequence_args([("c", 2, "", [(head, ',"n":1}', None), (head, ',"n":2}', "herald:id:c#m1")])])
    assert cli_eval(redis_server, path, keys, args) == ["e1", "-1", "", "1", "", "2", ""]
    keys, args = sequence_args([("c", 2, "", [(head, ',"n":3}', None), (head, ',"n":2}', "herald:id:c#m1")])], epoch="e9")
    again = cli_eval(redis_server, path, keys, args)
    assert again == ["e1", "-1", "", "3", "", "2", head + '2,"n":2}'], "the id seen before keeps its seq and frame"
    assert r.lrange("herald:history:c", 0, -1) == [(head + '3,"n":3}').encode(), (head + '2,"n":2}').encode()]  # trimmed to 2
    # Each call published its messages on the channel's live topic, duplicates too, as LiveBatch lines.
    first, second = live.get_message(timeout=5), live.get_message(timeout=5)
    assert first["data"] == (f'1\te1\tc\t{head}1,"n":1}}\n2\te1\tc\t{head}2,"n":2}}\n').encode()
    assert second["data"] == (f'3\te1\tc\t{head}3,"n":3}}\n2\te1\tc\t{head}2,"n":2}}\n').encode()
    # Redis behind this node's watermark (e1 reached 5): a new epoch, and it says what it held.
    keys, args = sequence_args([("c", 2, "e1 5", [(head, "}", None)])], epoch="e2")
    assert cli_eval(redis_server, path, keys, args) == ["e2", "3", "e1", "1", ""]
    live.close()


def test_one_call_stores_many_channels_and_a_refused_one_does_not_stop_the_others(redis_server, tmp_path):
    path = expanded("sequence.lua", tmp_path)
    r = redis_server.client()
    r.set("herald:meta:bad", "not a hash")
    keys, args = sequence_args([("a", 10, "", [('{"seq":', "}", None)] * 2), ("bad", 10, "", [('{"seq":', "}", None)]),
                                ("b", 10, "", [('{"seq":', "}", "herald:id:b#x")])])
    out = subprocess.run(["redis-cli", "-p", str(redis_server.port), "--eval", path, *keys, ",", *map(str, args)],
                         capture_output=True, text=True, timeout=10).stdout
    assert "WRONGTYPE" in out, out
    assert r.lrange("herald:history:a", 0, -1) == [b'{"seq":2}', b'{"seq":1}']
    assert r.lrange("herald:history:b", 0, -1) == [b'{"seq":1}'] and r.get("herald:id:b#x") == b'e1 {"seq":1}'
    assert r.get("herald:meta:bad") == b"not a hash"


def test_read_gives_epoch_seq_and_newest_frames(redis_server, tmp_path):
    seq = expanded("sequence.lua", tmp_path)
    cli_eval(redis_server, seq, *sequence_args([("r", 10, "", [('{"seq":', "}", None)] * 2)], epoch="ep"))
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
