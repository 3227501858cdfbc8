// Checked by `tsc --noEmit --strict` in the tests: the hand-written herald.d.ts describes
// what a typed application uses.
import { HeraldClient, type Message, type Member, type Gap } from "../herald.js";

const client = new HeraldClient("/ws", {
  transports: ["websocket", "sse"],
  token: async () => (await fetch("/my-backend/herald-token")).text(),
  backoff: { initial: 250, max: 10000 },
});

const seen: number[] = [];
const sub = client.subscribe("room:1", {
  presence: true,
  message: (m: Message, { replayed }) => { if (!replayed) seen.push(m.seq); },
  gap: (g: Gap) => console.warn(`${g.channel}: ${g.missed ?? "unknown"} missed`),
  join: (members: Member[]) => console.log("joined:", members.map((m) => m.user ?? m.client)),
});
const stop: () => void = client.on("disconnected", (d) => { if (!d.willReconnect) console.log("gone", d.code); });
client.connect();
const who: string[] = [...sub.members.values()].map((m) => m.client);
const where: number | undefined = sub.position?.seq;
console.log(client.transport, client.state, who, where, stop);

// The server API: subscriptions the server makes, and subscription tokens.
const withTokens = new HeraldClient("/ws", {
  getSubscriptionToken: async (channel: string) => (await fetch(`/subscription-token?channel=${channel}`)).text(),
});
withTokens.on("serverSubscribed", ({ channel, subscription }) => {
  subscription.on("message", (m) => console.log(channel, m.seq, subscription.server));
});
withTokens.on("serverUnsubscribed", ({ channel, reason }) => console.log(channel, reason));
withTokens.subscribe("private:1", { getToken: () => "token-from-the-app" });
withTokens.on("disconnected", (d) => { if (d.code === 4003) console.log("kicked: not coming back"); });
