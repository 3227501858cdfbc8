// The demo page: one channel's feed, replay then live, with the client's view of what happened.
import { HeraldClient } from "./herald.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const MAX_ROWS = 2000;

const client = new HeraldClient("/ws", {
  backoff: { initial: Number(params.get("backoff") ?? 500), max: Number(params.get("maxBackoff") ?? 20000) },
  // Behind a proxy that strips the WebSocket upgrade, the same page works over Server-Sent Events.
  transports: ["websocket", "sse"],
});
const counts = { received: 0, replayed: 0, missed: 0, reconnects: 0 };
let subscription = null;
let replayLeft = 0;

function render() {
  for (const [k, v] of Object.entries(counts)) $(`count-${k}`).textContent = String(v);
  $("count-missed").toggleAttribute("data-zero", counts.missed === 0);
}

function row(className, text) {
  const li = document.createElement("li");
  li.className = className;
  if (text !== undefined) li.textContent = text;
  const feed = $("feed");
  const atBottom = feed.scrollTop + feed.clientHeight >= feed.scrollHeight - 8;
  feed.append(li);
  while (feed.children.length > MAX_ROWS) feed.firstElementChild.remove();
  if (atBottom) feed.scrollTop = feed.scrollHeight;
  return li;
}

function showData(message) {
  if (message.encoding === "base64") return `(binary, base64) ${message.data}`;
  const d = message.data;
  if (d && typeof d === "object" && d.kind === "chat" && typeof d.text === "string") return `${d.from || "someone"}: ${d.text}`;
  return typeof message.data === "string" ? message.data : JSON.stringify(message.data);
}

function liveDivider() {
  row("divider", "live");
}

function onMessage(message, { replayed }) {
  counts.received += 1;
  const li = row(replayed ? "message replayed" : "message");
  li.dataset.seq = String(message.seq);
  li.dataset.replayed = String(replayed);
  const time = new Date(message.time);
  li.innerHTML = `<span class="seq">#${message.seq}</span><span class="time"></span><span class="data"></span>`;
  li.querySelector(".time").textContent = time.toLocaleTimeString([], { hour12: false });
  li.querySelector(".data").textContent = showData(message);
  $("last-seq").textContent = `last seq ${message.seq}`;
  if (replayed) {
    counts.replayed += 1;
    replayLeft -= 1;
    if (replayLeft === 0) liveDivider();
  }
  render();
}

function onSubscribed(s) {
  replayLeft = s.replay;
  let text = `subscribed to ${s.channel} at seq ${s.seq}`;
  if (s.recovered === true) text = `resumed ${s.channel}: ${s.replay} missed message(s) recovered`;
  else if (s.recovered === false) text = `resumed ${s.channel} at seq ${s.seq}: replaying the ${s.replay} still in history`;
  else if (s.replay > 0) text += `, replaying ${s.replay} from history`;
  row("note", text);
  if (s.replay === 0) liveDivider();
}

function who(member) {
  const name = member.info?.name ?? member.user ?? "anonymous";
  return `${name} (${member.client})`;
}

function renderMembers() {
  const list = $("members");
  const members = [...subscription.members.values()].sort((a, b) => a.client.localeCompare(b.client));
  list.replaceChildren(...members.map((m) => {
    const li = document.createElement("li");
    li.dataset.client = m.client;
    li.dataset.you = String(m.client === subscription.self);
    li.textContent = who(m) + (m.client === subscription.self ? " · you" : "") + ` on ${m.node}`;
    return li;
  }));
  $("member-count").textContent = `${members.length}`;
  $("presence-state").textContent = "";
}

function onPresenceChange(kind) {
  return (members) => {
    const li = row(`presence ${kind}`, `${members.map(who).join(", ")} ${kind === "join" ? "joined" : "left"}`);
    li.dataset.kind = kind;
    li.dataset.clients = members.map((m) => m.client).join(" ");
    renderMembers();
  };
}

function onError(e) {
  if (e.code === "presence_unavailable") {
    $("presence-state").textContent = "presence is off for this channel (--presence-channels)";
    return;
  }
  row("gap", `error ${e.code}: ${e.message}`);
}

function onGap(g) {
  const li = row("gap");
  li.dataset.missed = g.missed === null ? "unknown" : String(g.missed);
  if (g.missed === null) {
    li.textContent = "⚠ the channel's history was reset: earlier messages cannot be recovered";
  } else {
    counts.missed += g.missed;
    li.textContent = `⚠ ${g.missed} message(s) missed: #${g.from}–#${g.to} are no longer in history`;
  }
  render();
}

function follow(channel) {
  subscription?.unsubscribe();
  $("feed").replaceChildren();
  $("feed-channel").textContent = channel;
  $("last-seq").textContent = "no messages yet";
  Object.assign(counts, { received: 0, replayed: 0, missed: 0 });
  render();
  $("members").replaceChildren();
  $("member-count").textContent = "";
  subscription = client.subscribe(channel, { presence: true, message: onMessage, subscribed: onSubscribed, gap: onGap,
    error: onError, members: renderMembers, join: onPresenceChange("join"), leave: onPresenceChange("leave") });
  const url = new URL(location.href);
  url.searchParams.set("channel", channel);
  history.replaceState(null, "", url);
}

client.on("state", ({ to }) => {
  $("state").dataset.state = to;
  $("state").textContent = to;
  $("transport").textContent = to === "connected" ? `over ${client.transport === "sse" ? "Server-Sent Events" : "WebSocket"}` : "";
  $("transport").dataset.transport = client.transport;
});
client.on("disconnected", (d) => {
  if (!d.willReconnect) return;
  counts.reconnects += 1;
  render();
  row("note", `connection lost (${d.code}); retrying in ${(d.delay / 1000).toFixed(1)} s`);
});

$("channel-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const channel = $("channel").value.trim();
  if (channel !== subscription?.channel) follow(channel);
});

$("publish-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value;
  const asJSON = $("as-json").checked;
  const result = $("publish-result");
  try {
    if (asJSON) JSON.parse(text);
  } catch (err) {
    result.textContent = `not valid JSON: ${err.message}`;
    return;
  }
  try {
    const r = await fetch(`/api/publish/${encodeURIComponent(subscription.channel)}`, {
      method: "POST",
      headers: { "Content-Type": asJSON ? "application/json" : "text/plain; charset=utf-8",
                 "Idempotency-Key": crypto.randomUUID?.() ?? String(Math.random()).slice(2) },
      body: text,
    });
    const body = await r.json().catch(() => ({}));
    result.textContent = r.ok ? `accepted (${r.status}) as ${body.id}` : `refused (${r.status}): ${body.message ?? body.error ?? ""}`;
    if (r.ok) $("text").value = "";
  } catch (err) {
    result.textContent = `could not reach Herald: ${err.message}`;
  }
});

$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("chat-text").value.trim();
  const result = $("chat-result");
  if (!text || !subscription) return;
  const from = $("chat-name").value.trim();
  result.textContent = "sending…";
  try {
    const sent = await client.publish(subscription.channel, { kind: "chat", from, text });
    result.textContent = `sent (${sent.messageId})`;
    result.dataset.outcome = "published";
    $("chat-text").value = "";
  } catch (err) {
    result.textContent = `not sent: ${err.code}: ${err.message}`;
    result.dataset.outcome = err.code;
  }
});

const initial = params.get("channel") ?? "demo";
$("channel").value = initial;
follow(initial);
client.connect();
window.heraldDemo = { client, counts };
