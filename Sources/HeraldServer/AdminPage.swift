/// The admin page the admin listener serves at `/`: one self-contained file, shipped in the
/// binary so it never depends on a web root. It polls `/api/overview` every second with the
/// admin token (typed in, or given as `#token=...` in the address, which never leaves the
/// browser) and writes every value with `textContent`: channel names and dead-letter reasons
/// come from publishers and are never parsed as HTML.
enum AdminPage {
    static let html = Array(#"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Herald admin</title>
<style>
  :root { --bg:#0f1419; --panel:#171d24; --line:#263040; --text:#d8dee6; --dim:#8b96a5; --ok:#3fb950; --bad:#f85149; --warn:#d29922; --accent:#58a6ff; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; align-items:center; gap:16px; padding:12px 20px; border-bottom:1px solid var(--line); }
  header h1 { font-size:18px; margin:0; }
  #status { padding:2px 8px; border-radius:10px; background:var(--line); font-size:12px; }
  #status.ok { background:#1f3d2a; color:var(--ok); } #status.unauthorized, #status.error { background:#3d1f1f; color:var(--bad); }
  #auth { margin-left:auto; display:flex; gap:6px; }
  #auth input { background:var(--panel); color:var(--text); border:1px solid var(--line); padding:4px 8px; border-radius:4px; width:220px; }
  #auth button { background:var(--accent); color:#000; border:0; border-radius:4px; padding:4px 10px; cursor:pointer; }
  main { padding:16px 20px; display:grid; gap:16px; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); }
  section { background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:12px 14px; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size:13px; text-transform:uppercase; letter-spacing:.05em; color:var(--dim); margin:0 0 10px; }
  .tiles { display:flex; gap:22px; flex-wrap:wrap; }
  .tile b { display:block; font-size:24px; font-variant-numeric: tabular-nums; }
  .tile span { color:var(--dim); font-size:12px; }
  table { width:100%; border-collapse:collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
  td.wrap { white-space:normal; word-break:break-word; }
  th { color:var(--dim); font-weight:500; font-size:12px; }
  .up { color:var(--ok); } .lost, .down { color:var(--bad); }
  .badge { background:#1d2d44; color:var(--accent); border-radius:8px; padding:1px 7px; font-size:11px; }
  dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 14px; margin:0; }
  dt { color:var(--dim); } dd { margin:0; }
  .empty { color:var(--dim); }
</style>
</head>
<body>
<header>
  <h1>Herald</h1>
  <span id="status">connecting</span>
  <span id="served-by" class="empty"></span>
  <form id="auth"><input id="token" type="password" placeholder="admin token" autocomplete="off"><button>Use token</button></form>
</header>
<main>
  <section class="wide">
    <h2>Deployment</h2>
    <div class="tiles">
      <div class="tile"><b id="nodes-up">–</b><span>nodes up</span></div>
      <div class="tile"><b id="nodes-lost">–</b><span>nodes lost</span></div>
      <div class="tile"><b id="connections">–</b><span>connections</span></div>
      <div class="tile"><b id="subscriptions">–</b><span>subscriptions</span></div>
      <div class="tile"><b id="rate-in">–</b><span>messages in / s</span></div>
      <div class="tile"><b id="rate-out">–</b><span>deliveries / s</span></div>
      <div class="tile"><b id="sequencer">–</b><span>sequencer</span></div>
    </div>
  </section>
  <section class="wide">
    <h2>Nodes</h2>
    <table><thead><tr><th>node</th><th>state</th><th>role</th><th>listen</th><th>version</th><th>connections</th><th>subscriptions</th><th>in / s</th><th>deliveries / s</th><th>RabbitMQ</th><th>Redis</th><th>last seen</th></tr></thead>
    <tbody id="nodes"></tbody></table>
  </section>
  <section>
    <h2>Busiest channels</h2>
    <table><thead><tr><th>channel</th><th>messages / s</th></tr></thead><tbody id="channels"></tbody></table>
  </section>
  <section>
    <h2>Redis</h2>
    <dl id="redis"></dl>
  </section>
  <section>
    <h2>RabbitMQ</h2>
    <dl id="rabbitmq"></dl>
  </section>
  <section class="wide">
    <h2>Dead letters</h2>
    <dl><dt>in <span id="dead-queue-name">.dead</span></dt><dd id="dead-depth">–</dd></dl>
    <table><thead><tr><th>when</th><th>node</th><th>channel</th><th>reason</th></tr></thead><tbody id="dead-letters"></tbody></table>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("herald-admin-token") || "";
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) { token = fromHash; sessionStorage.setItem("herald-admin-token", token); history.replaceState(null, "", location.pathname); }
$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("herald-admin-token", token);
  $("token").value = "";
  poll();
});

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}
function ago(ms) { return ms < 1500 ? "now" : Math.round(ms / 1000) + " s ago"; }
function when(at) { return new Date(at).toLocaleTimeString(); }
function fill(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v === null || v === undefined ? "–" : String(v);
    dd.dataset.field = k;
    dl.append(dt, dd);
  }
}
function setStatus(text, cls) { const s = $("status"); s.textContent = text; s.className = cls; }

function render(o) {
  $("served-by").textContent = "served by " + o.served_by;
  $("nodes-up").textContent = o.totals.nodes_up;
  $("nodes-lost").textContent = o.totals.nodes_lost;
  $("connections").textContent = o.totals.connections;
  $("subscriptions").textContent = o.totals.subscriptions;
  $("rate-in").textContent = o.totals.messages_in_per_second;
  $("rate-out").textContent = o.totals.deliveries_per_second;
  $("sequencer").textContent = o.sequencer ?? "none";

  const nodes = $("nodes"); nodes.replaceChildren();
  for (const n of o.nodes) {
    const r = nodes.insertRow();
    r.dataset.node = n.id; r.dataset.state = n.state; r.dataset.sequencer = n.sequencer === true;
    cell(r, n.id);
    cell(r, n.state, n.state);
    const role = r.insertCell();
    if (n.sequencer === true && n.state === "up") { const b = document.createElement("span"); b.className = "badge"; b.textContent = "sequencer"; role.append(b); }
    cell(r, n.listen); cell(r, n.version); cell(r, n.connections); cell(r, n.subscriptions);
    cell(r, n.messages_in_per_second); cell(r, n.deliveries_per_second);
    cell(r, n.amqp, n.amqp); cell(r, n.redis, n.redis); cell(r, ago(n.age_ms));
  }

  const channels = $("channels"); channels.replaceChildren();
  for (const c of o.channels) { const r = channels.insertRow(); r.dataset.channel = c.channel; cell(r, c.channel, "wrap"); cell(r, c.per_second); }
  if (!o.channels.length) { const r = channels.insertRow(); cell(r, "no messages in the last second", "empty"); }

  const mq = o.rabbitmq;
  $("dead-depth").textContent = mq.dead_queue ? mq.dead_queue.messages : "unknown (RabbitMQ " + mq.status + ")";
  if (mq.dead_queue) $("dead-queue-name").textContent = mq.dead_queue.name;
  const dead = $("dead-letters"); dead.replaceChildren();
  for (const d of o.dead_letters) {
    const r = dead.insertRow();
    r.dataset.reason = d.reason; r.dataset.channel = d.channel;
    cell(r, when(d.at_ms)); cell(r, d.node); cell(r, d.channel, "wrap");
    cell(r, d.reason + ": " + d.message, "wrap");
  }
  if (!o.dead_letters.length) { const r = dead.insertRow(); cell(r, "none", "empty"); }

  const rd = o.redis;
  fill($("redis"), [["status", rd.status], ["address", rd.address], ["role", rd.role], ["version", rd.version],
                    ["replicas", rd.replicas], ["memory", rd.used_memory], ["via sentinel", rd.sentinel],
                    ["cluster masters", rd.cluster_masters ? rd.cluster_masters.join(" ") : "not a cluster"]]);
  fill($("rabbitmq"), [["status", mq.status], ["connected to", mq.address], ["nodes configured", mq.nodes],
                       ["waiting to be sequenced", mq.history_queue && mq.history_queue.messages],
                       ["sequencer consumers", mq.history_queue && mq.history_queue.consumers]]);
}

async function poll() {
  try {
    const r = await fetch("/api/overview", { headers: token ? { authorization: "Bearer " + token } : {}, cache: "no-store" });
    if (r.status === 401) { setStatus("unauthorized: enter the admin token", "unauthorized"); return; }
    if (!r.ok) { setStatus("error " + r.status, "error"); return; }
    render(await r.json());
    setStatus("live", "ok");
  } catch (e) {
    setStatus("unreachable", "error");
  }
}
poll();
setInterval(poll, 1000);
</script>
</body>
</html>
"""#.utf8)
}
