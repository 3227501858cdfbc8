"""Turns bench-results/*.json into the tables of BENCHMARKS.md; with --ws-threads, the runs of
scripts/bench-ws-threads (t<threads>-r<run>-<name>.json) into the --ws-threads table."""
import json
import os
import sys

out = sys.argv[-1]


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


def best_clean(r):
    """The clean step that delivered the most (not the last clean one: a publisher that cannot
    reach a step's rate keeps later steps clean while they deliver less)."""
    clean = [s for s in (r or {}).get("steps", []) if s["clean"]]
    return max(clean, key=lambda s: s["deliveries_per_sec"]) if clean else None


def verdict(ok, miss):
    return "**met**" if ok else f"missed: {miss}"


def targets():
    """One row per target of issue 5: figure, Nchan's figure from the same run, verdict."""
    print("| scenario | target | Herald | Nchan (same run) | verdict |")
    print("| --- | --- | --- | --- | --- |")
    h, n = load("herald-throughput"), load("nchan-throughput")
    if h:
        hb, nb = best_clean(h), best_clean(n)
        hv, nv = hb["deliveries_per_sec"] if hb else 0, nb["deliveries_per_sec"] if nb else 0
        ratio = hv / nv if nv else None
        print(f"| 1,000 clients, 1 channel, 100 B: highest clean rate (0 lost, p99 < 50 ms) | ≥ 300,000 deliveries/s and ≥ 3× Nchan "
              f"| {f(hv)} deliveries/s ({f(hb['rate'] if hb else None)} msg/s) | {f(nv) if n else '–'} deliveries/s "
              f"| {verdict(hv >= 300000 and ratio is not None and ratio >= 3, f'{f(hv)}/s is {f(ratio, 1)}× Nchan')} |")
    h, n = load("herald-latency-1k"), load("nchan-latency-1k")
    if h:
        p99 = h["latency_ms"]["p99"]
        print(f"| 1,000 clients × 20 msg/s, publish → client | p99 ≤ 15 ms | p50 {f(h['latency_ms']['p50'], 1)}, p99 {f(p99, 1)} ms; {correctness(h)} "
              f"| {'p50 ' + f(n['latency_ms']['p50'], 1) + ', p99 ' + f(n['latency_ms']['p99'], 1) + ' ms' if n else '–'} "
              f"| {verdict(p99 <= 15 and h['lost'] == 0, f'by {f(p99 - 15, 1)} ms')} |")
    h, n = load("herald-connections"), load("nchan-connections")
    if h:
        kb = h["memory_per_connection_kb"]
        print(f"| {f(h['connected'])} idle connections: server RSS per connection | ≤ 10 KB | {f(kb, 2)} KB "
              f"| {f(n['memory_per_connection_kb'], 2) + ' KB' if n else '–'} | {verdict(kb is not None and kb <= 10, f'{f(kb, 2)} KB')} |")
    h, n = load("herald-latency-10k"), load("nchan-latency-10k")
    if h:
        p99, lost = h["latency_ms"]["p99"], h["lost"]
        print(f"| {f(h['connected'])} clients × 10 msg/s | 0 lost, p99 ≤ 150 ms | p50 {f(h['latency_ms']['p50'], 1)}, p99 {f(p99, 1)} ms; {correctness(h)} "
              f"| {'p50 ' + f(n['latency_ms']['p50'], 1) + ', p99 ' + f(n['latency_ms']['p99'], 1) + ' ms; ' + correctness(n) if n else '–'} "
              f"| {verdict(p99 <= 150 and h['lost'] == 0, f'p99 {f(p99, 1)} ms, lost {lost}')} |")
    h, n = load("herald-storm"), load("nchan-storm")
    if h:
        hs, ns = h["join_catch_up_seconds"], (n or {}).get("join_catch_up_seconds")
        ok = hs is not None and hs <= 1.5 and ns is not None and hs <= ns / 2
        print(f"| {f(h['clients'])} clients connect at once, 100 messages of history each: all caught up | ≤ 1.5 s and ≤ ½ Nchan "
              f"| {f(hs, 3)} s | {f(ns, 3) + ' s' if ns is not None else '–'} | {verdict(ok, f'{f(hs, 3)} s, {f(hs / ns if ns else None, 2)}× Nchan')} |")
        print(f"| storm: all drop, 50 more published, all resume (issue 4) | | {f(h['reconnect_catch_up_seconds'], 3)} s; recovered {h['recovered']}/{h['resumed']}; {correctness(h)} "
              f"| {f(n['reconnect_catch_up_seconds'], 3) + ' s; ' + correctness(n) if n else '–'} | |")
    h, n = load("herald-throughput-immediate"), load("nchan-throughput-immediate")
    if h:
        hb, nb = best_clean(h), best_clean(n)
        hv, nv = hb["deliveries_per_sec"] if hb else 0, nb["deliveries_per_sec"] if nb else 0
        ratio = hv / nv if nv else None
        hrate = hb["rate"] if hb else 0
        print(f"| immediate-read clients (`--read-round-us 0`), 1,000 clients, 100 B: highest clean rate (issue 15) | ≥ 600 msg/s and ≥ 4× Nchan "
              f"| {f(hb['rate'] if hb else None)} msg/s = {f(hv)} deliveries/s | {f(nb['rate'] if nb else None)} msg/s = {f(nv) if n else '–'} deliveries/s "
              f"| {verdict(hb is not None and hb['rate'] >= 600 and ratio is not None and ratio >= 4, f'{f(hrate)} msg/s, {f(ratio, 1)}× Nchan')} |")
    h, n = load("herald-latency-1k-600-immediate"), load("nchan-latency-1k-600-immediate")
    if h:
        p99, lost = h["latency_ms"]["p99"], h["lost"]
        w = h.get("server_writes") or {}
        print(f"| immediate-read, 1,000 clients × 600 msg/s (past the clean rate: bends, not collapses) | p99 ≤ 150 ms "
              f"| p50 {f(h['latency_ms']['p50'], 1)}, p99 {f(p99, 1)} ms; {correctness(h)}; {f(w.get('writes_per_sec'))} writes/s, "
              f"{f(w.get('messages_per_write'), 1)} msgs/write, window {f(w.get('window_ms'))} ms "
              f"| {'p50 ' + f(n['latency_ms']['p50'], 1) + ', p99 ' + f(n['latency_ms']['p99'], 1) + ' ms; ' + correctness(n) if n else '–'} "
              f"| {verdict(p99 <= 150 and h['lost'] == 0, f'p99 {f(p99, 1)} ms, lost {lost}')} |")
    many_targets()
    compressed_targets()
    s = load("herald-sequencer")
    if s:
        r = s["sequenced_per_sec"]
        b = s.get("broker_alone_per_sec")
        drains = s.get("sequencer_drains_per_sec") or []
        each = f(s["published"] // max(1, len(drains)))
        what = f"median of {len(drains)} drains of {each} messages: " + ", ".join(f(x) for x in drains) if len(drains) > 1 else f"{f(s['published'])} messages"
        print(f"| sequencer alone: RabbitMQ → Redis, acked after store ({what}) | ≥ 50,000 msg/s | {f(r)} msg/s "
              f"| n/a; RabbitMQ alone (a consumer that only acks): {f(b)} msg/s | {verdict(r >= 50000, f'{f(r)} msg/s')} |")


def nchan_bytes(nz, np_):
    """Nchan's bytes per delivery, compressed and plain, at its first step (it may have no clean one)."""
    def first(r):
        return r["steps"][0].get("wire_bytes_per_delivery") if r and r.get("steps") else None
    z, p = first(nz), first(np_)
    return f"{f(z, 1)} / {f(p, 1)} B = {f(z / p * 100, 1) if z and p else chr(8211)} % (at its first step)"


def compressed_targets():
    """Issue 33: the 1 KB ticker body to 1,000 clients, Herald plain and compressed, Nchan compressed."""
    hp, hz, nz, np_ = (load(k) for k in ("herald-ticker-plain", "herald-ticker-deflate", "nchan-ticker-deflate", "nchan-ticker-plain"))
    if not (hp and hz):
        return
    bp, bz, bn = best_clean(hp), best_clean(hz), best_clean(nz)
    # Bytes per delivery and server CPU per delivery at the highest step both Herald runs passed clean.
    common = [r for r in (s["rate"] for s in hp["steps"] if s["clean"]) if any(z["rate"] == r and z["clean"] for z in hz["steps"])]
    at = max(common) if common else None
    sp = next((s for s in hp["steps"] if s["rate"] == at), None)
    sz = next((s for s in hz["steps"] if s["rate"] == at), None)
    if sp and sz and sp.get("wire_bytes_per_delivery") and sz.get("wire_bytes_per_delivery"):
        ratio = sz["wire_bytes_per_delivery"] / sp["wire_bytes_per_delivery"]
        print(f"| 1 KB ticker, 1,000 clients: bytes on the wire per delivery, compressed / plain (at {f(at)} msg/s) | ≤ 35 % "
              f"| {f(sz['wire_bytes_per_delivery'], 1)} / {f(sp['wire_bytes_per_delivery'], 1)} B = {f(ratio * 100, 1)} % "
              f"| {nchan_bytes(nz, np_)} | {verdict(ratio <= 0.35, f'{f(ratio * 100, 1)} %')} |")
        cp = sp["cpu_percent"].get("server") / max(sp["deliveries_per_sec"], 1)
        cz = sz["cpu_percent"].get("server") / max(sz["deliveries_per_sec"], 1)
        print(f"| the same: Herald's CPU per delivery, compressed / plain (at {f(at)} msg/s) | ≤ 1.15× "
              f"| {f(cz * 1e4, 3)} / {f(cp * 1e4, 3)} µs = {f(cz / cp, 2)}× | – | {verdict(cz / cp <= 1.15, f'{f(cz / cp, 2)}×')} |")
    rp, rz, rn = (b["rate"] if b else 0 for b in (bp, bz, bn))
    print(f"| the same: highest clean rate, compressed | ≥ plain ({f(rp)} msg/s) and ≥ 4× Nchan compressed "
          f"| {f(rz)} msg/s = {f(bz['deliveries_per_sec'] if bz else None)} deliveries/s | {f(rn)} msg/s compressed, "
          f"{f(best_clean(np_)['rate'] if best_clean(np_) else None)} plain "
          f"| {verdict(rz >= rp and rn and rz >= 4 * rn, f'{f(rz / rn, 1) if rn else chr(8211)}× Nchan, {f(rz / rp, 2) if rp else chr(8211)}× plain')} |")


def many_targets():
    """Issue 31: many channels of one client each, Herald (AMQP and HTTP) against Nchan (HTTP)."""
    n = best_clean(load("nchan-many-http"))
    nrate = n["rate"] if n else None
    for key, target, ok in (("many-amqp", "≥ Nchan and ≥ 6,000 msg/s (3× 2,000)", lambda r: r >= (nrate or 0) and r >= 6000),
                            ("many-http", "≥ 2× Nchan", lambda r: nrate is not None and r >= 2 * nrate)):
        h = load("herald-" + key)
        if not h:
            continue
        b = best_clean(h)
        rate = b["rate"] if b else 0
        how = "through RabbitMQ (persistent, confirms)" if key == "many-amqp" else "over HTTP (64 pipelined keep-alive connections)"
        ratio = f"{f(rate / nrate, 2)}× Nchan" if nrate else "Nchan –"
        print(f"| {f(h['clients'])} clients, each on its own channel, publishing {how}: highest clean rate (0 lost, p99 < 100 ms, "
              f"publisher on schedule) | {target} | {f(rate)} msg/s | {f(nrate)} msg/s (HTTP) | {verdict(ok(rate), f'{f(rate)} msg/s, {ratio}')} |")


def many_cpu():
    """Per step of the many-channels runs: CPU µs per message of the server, RabbitMQ and Redis."""
    rows = []
    for who in ("herald-many-amqp", "herald-many-http", "nchan-many-http"):
        r = load(who)
        for x in (r or {}).get("steps", []):
            c = x.get("cpu_us_per_message") or {}
            rows.append(f"| {who} | {f(x['rate'])} | {f(x['p99_ms'], 1)} | {x['lost']} | {f(x.get('publisher_lag_ms'))} "
                        f"| {f(c.get('server'), 1)} | {f(c.get('rabbitmq'), 1)} | {f(c.get('redis'), 1)} | {'clean' if x['clean'] else '✗'} |")
    if rows:
        print("| run | msg/s | p99 ms | lost | publisher lag ms | server µs/msg | RabbitMQ µs/msg | Redis µs/msg | |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(rows))


def ws_threads():
    """Per scenario and run: the figure a user compares, and the server's deliveries per
    CPU-second over the measured stretch (the whole process: every thread it has)."""
    import glob
    import re
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "t*-r*-*.json"))):
        m = re.match(r"t(\d+)-r(\d+)-(.+)\.json", os.path.basename(path))
        r = load(os.path.basename(path)[:-5])
        if m and r:
            runs.setdefault(m.group(3), []).append((int(m.group(1)), int(m.group(2)), r))

    def per_cpu(w):
        return f"{f(w.get('deliveries_per_cpu_second'))}/CPU-s" if w and w.get("deliveries_per_cpu_second") else "–"

    def busy(w):
        return " + ".join(f"{f(b * 100)}%" for b in (w or {}).get("ws_threads_busy", [])) or "–"

    print("| scenario | run | --ws-threads | result | correctness | server deliveries per CPU-second | WS threads busy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, rs in runs.items():
        for threads, run, r in sorted(rs, key=lambda x: x[1]):
            if r["scenario"] == "throughput":
                b = best_clean(r)
                res = f"clean to {f(b['rate'] if b else None)} msg/s = {f(b['deliveries_per_sec'] if b else None)}/s"
                w = b.get("server_writes") if b else None
            elif r["scenario"] == "storm":
                res = f"all caught up {f(r['join_catch_up_seconds'], 3)} s, connected {f(r['connect_seconds'], 3)} s"
                w = r.get("server_writes")
            else:
                res = f"p50 {f(r['latency_ms']['p50'], 1)}, p99 {f(r['latency_ms']['p99'], 1)} ms, {f(r['deliveries_per_sec'])}/s"
                w = r.get("server_writes")
            print(f"| {name} ({f(r['clients'])} clients) | {run} | {threads} | {res} | {correctness(r)} | {per_cpu(w)} | {busy(w)} |")


if "--ws-threads" in sys.argv:
    ws_threads()
    sys.exit(0)
targets()
print()
many_cpu()
print()
def writes(x):
    w = x.get("server_writes")
    return f", {f(w['writes_per_sec'])} writes/s × {f(w['messages_per_write'], 1)}, window {f(w['window_ms'])} ms" if w else ""


for who in ("herald", "nchan"):
    for key, label in (("throughput", "throughput steps"), ("throughput-immediate", "immediate-read throughput steps")):
        t = load(f"{who}-{key}")
        if t:
            steps = ", ".join(f"{f(x['rate'])}→{f(x['deliveries_per_sec'])}/s p99 {f(x['p99_ms'], 1)} ms{writes(x)}{'' if x['clean'] else ' ✗'}" for x in t["steps"])
            print(f"- {who} {label} (msg/s → deliveries/s): {steps}")

for name in ("cluster-1-node", "cluster-3-nodes"):
    c = load(name)
    if c:
        steps = ", ".join(f"{f(x['rate'])} msg/s→{f(x['deliveries_per_sec'])}/s p99 {f(x['p99_ms'], 1)} ms" for x in c["steps"])
        print(f"- {name}: {steps}; highest clean {f(c.get('highest_clean_deliveries_per_sec'))} deliveries/s; lost {c['lost']}")
