// Herald from Node: the same client, with the `ws` package's WebSocket (Debian: node-ws).
//   node examples/node.mjs ws://127.0.0.1:8080/ws demo 10   # print 10 messages of "demo", then exit
import { createRequire } from "node:module";
import { HeraldClient } from "../herald.js";

const WebSocket = createRequire(import.meta.url)("ws");
const [url = "ws://127.0.0.1:8080/ws", channel = "demo", count = "0"] = process.argv.slice(2);
const client = new HeraldClient(url, { WebSocket, storage: "none" });
let received = 0;
client.subscribe(channel, {
  message: (m, { replayed }) => {
    console.log(JSON.stringify({ channel: m.channel, seq: m.seq, replayed, data: m.data }));
    if (++received === Number(count)) client.close();
  },
  gap: (g) => console.error(`gap on ${g.channel}: ${g.missed ?? "unknown"} missed`),
});
client.on("error", (e) => console.error(`error ${e.code}: ${e.message}`));
client.connect();
