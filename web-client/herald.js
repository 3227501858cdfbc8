// Herald's browser client. Served by every Herald node at /herald.js:
//   import { HeraldClient } from "/herald.js";
export { HeraldClient } from "./lib/client.js";
export { Subscription } from "./lib/subscription.js";
export { Backoff } from "./lib/backoff.js";
export { PositionStore } from "./lib/positions.js";
export { CHANNEL_PATTERN, parseFrames } from "./lib/frames.js";
export { EventStreamSocket, parseEventID } from "./lib/eventstream.js";
export { HeraldRequestError } from "./lib/requests.js";
