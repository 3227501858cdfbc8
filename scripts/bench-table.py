"""Turns bench-results/*.json into the tables of BENCHMARKS.md."""
import json
import os
import sys

out = sys.argv[1]


def load(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path) as f:
        return json.load(f)


def f(v, d=0):
    return "–" if v is None else (f"{v:,.{d}f}" if isinstance(v, (int, float)) else str(v))


def row(label, key, fmt):
    h, n = load("herald-" + key), load("nchan-" + key)
    return f"| {label} | {fmt(h) if h else '–'} | {fmt(n) if n else '–'} |"


def correctness(r):
    return f"lost {r['lost']}, dup {r['duplicated']}, ooo {r['out_of_order']}"


print("| measurement | Herald | Nchan |")
print("| --- | --- | --- |")
print(row("throughput, 1,000 clients, 1 channel, 100 B: highest clean rate (0 lost, p99 < 50 ms)", "throughput",
          lambda r: f"{f(r.get('highest_clean_deliveries_per_sec'))} deliveries/s ({f(r.get('highest_clean_rate'))} msg/s); server CPU {f(r['server_cpu_percent'])}%, bench CPU {f(r['bench_cpu_percent'])}%"))
print(row("1,000 clients × 20 msg/s: latency p50 / p99 / max", "latency-1k",
          lambda r: f"{f(r['latency_ms']['p50'], 1)} / {f(r['latency_ms']['p99'], 1)} / {f(r['latency_ms']['max'], 1)} ms; {correctness(r)}"))
print(row("idle connections: server RSS per connection", "connections",
          lambda r: f"{f(r['memory_per_connection_kb'], 2)} KB × {f(r['connected'])} (connect p99 {f(r['connect_ms']['p99'], 0)} ms)"))
print(row("10,000 clients × 10 msg/s: p50 / p99, loss", "latency-10k",
          lambda r: f"{f(r['latency_ms']['p50'], 1)} / {f(r['latency_ms']['p99'], 1)} ms; {correctness(r)}; {f(r['connected'])} connected"))
print(row("storm: clients joining at once, 100 messages of history: all caught up", "storm",
          lambda r: f"{f(r['join_catch_up_seconds'], 3)} s for {f(r['clients'])}"))
print(row("storm: all drop, 50 more published, all resume: all caught up", "storm",
          lambda r: f"{f(r['reconnect_catch_up_seconds'], 3)} s; recovered {r['recovered']}/{r['resumed']}; {correctness(r)}"))
s = load("herald-sequencer")
if s:
    print(f"| sequencer alone, RabbitMQ → Redis, acked after store | {f(s['sequenced_per_sec'])} msg/s ({f(s['published'])} messages) | n/a |")
print()
for who in ("herald", "nchan"):
    t = load(who + "-throughput")
    if t:
        steps = ", ".join(f"{f(x['rate'])}→{f(x['deliveries_per_sec'])}/s p99 {f(x['p99_ms'], 1)} ms{'' if x['clean'] else ' ✗'}" for x in t["steps"])
        print(f"- {who} throughput steps (msg/s → deliveries/s): {steps}")

for name in ("cluster-1-node", "cluster-3-nodes"):
    c = load(name)
    if c:
        steps = ", ".join(f"{f(x['rate'])} msg/s→{f(x['deliveries_per_sec'])}/s p99 {f(x['p99_ms'], 1)} ms" for x in c["steps"])
        print(f"- {name}: {steps}; highest clean {f(c.get('highest_clean_deliveries_per_sec'))} deliveries/s; lost {c['lost']}")
