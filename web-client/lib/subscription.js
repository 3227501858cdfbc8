// One channel's subscription: its position ({seq, epoch}), its state, and the rules that keep
// the feed free of gaps and duplicates (PROTOCOL.md, "What the server sends").
//
// States: "unsubscribed" -> "subscribing" -> "subscribed"; back to "subscribing" while the
// connection is down or a live gap is being repaired.
//
// Events: "state" ({from, to}), "subscribing", "subscribed" (the server's subscribed frame:
// {channel, epoch, seq, replay, recovered?, missed?}), "message" (frame, {replayed}),
// "gap" ({channel, from, to, missed, reason}), "error" (error frame), "unsubscribed".
//
// With presence (subscribe(channel, { presence: true })): `members` is the channel's member list
// (a Map of client id -> {client, user, node, info?}), `self` this connection's client id, and
// the events "members" ({members, recovered, missed}: the whole list arrived), "join" and
// "leave" (members, frame) as they happen. Across reconnects the list is resumed from the
// changes missed (PROTOCOL.md, "Presence"), so it always ends equal to the server's.

import { Emitter } from "./emitter.js";

export class Subscription extends Emitter {
  #client;
  #requested = null; // the position sent with the pending subscribe op
  #replayLeft = 0;

  #presenceReplayLeft = 0;

  constructor(client, channel, position, presence = false) {
    super();
    /** Whether this subscription follows the channel's members. */
    this.presence = presence;
    /** The member list, kept from the server's presence, join and leave frames. */
    this.members = new Map();
    /** This connection's client id in `members` (changes with each connection). */
    this.self = null;
    /** The last presence change applied ({seq, epoch}), or null before the first list. */
    this.presencePosition = null;
    this.#client = client;
    this.channel = channel;
    /** The last seq delivered to the handlers and its epoch, or null before the first one. */
    this.position = position;
    this.state = "unsubscribed";
    /** Messages dropped because their seq was already delivered. */
    this.duplicates = 0;
    /** Made by the server (the server API), not by subscribe(): it lasts for one connection. */
    this.server = false;
    /** (channel) => subscription token, for channels that need one. */
    this.getToken = null;
    this._refreshTimer = null;
  }

  unsubscribe() {
    this.#client._unsubscribe(this);
  }

  _setState(to) {
    if (this.state === to) return;
    const from = this.state;
    this.state = to;
    this.emit("state", { from, to });
    this.emit(to, { channel: this.channel });
  }

  /** The client is about to send a subscribe op carrying `position` (null: the whole history). */
  _subscribing() {
    this.#requested = this.position ? { ...this.position } : null;
    this._setState("subscribing");
  }

  /** The server's `subscribed` frame. */
  _onSubscribed(frame) {
    if (this.state !== "subscribing") return;
    const firstReplayed = frame.seq - frame.replay + 1;
    const sent = this.#requested;
    const sameEpoch = sent !== null && sent.epoch === frame.epoch;
    if (sent !== null && frame.recovered === false) {
      const epochChanged = !sameEpoch || frame.missed === null || frame.missed === undefined;
      this.emit("gap", {
        channel: this.channel,
        reason: epochChanged ? "epoch" : "expired",
        from: epochChanged ? null : sent.seq + 1,
        to: epochChanged ? null : firstReplayed - 1,
        missed: epochChanged ? null : frame.missed,
      });
    }
    // The next seq the feed accepts: right after our own position when the server replays from
    // there, or the first replayed message when some were lost or the epoch changed.
    const base = sameEpoch ? Math.max(sent.seq, firstReplayed - 1) : firstReplayed - 1;
    this.position = { seq: base, epoch: frame.epoch };
    this.#replayLeft = frame.replay;
    this.state = "subscribed";
    this.emit("state", { from: "subscribing", to: "subscribed" });
    const info = { channel: frame.channel, epoch: frame.epoch, seq: frame.seq, replay: frame.replay };
    if ("recovered" in frame) info.recovered = frame.recovered;
    if ("missed" in frame) info.missed = frame.missed;
    this.emit("subscribed", info);
  }

  /** The server's `presence` frame: the whole list, or the announcement of a replay of changes. */
  _onPresence(frame) {
    if (!this.presence) return;
    this.self = frame.client;
    if (Array.isArray(frame.members)) {
      this.members = new Map(frame.members.map((m) => [m.client, m]));
      this.presencePosition = { seq: frame.presence_seq, epoch: frame.presence_epoch };
      this.#presenceReplayLeft = 0;
      const info = { channel: this.channel, members: this.members };
      if ("recovered" in frame) info.recovered = frame.recovered;
      if ("missed" in frame) info.missed = frame.missed;
      this.emit("members", info);
    } else {
      this.#presenceReplayLeft = frame.replay;
    }
  }

  /**
   * A `join` or `leave` frame. Returns "applied", "duplicate", "ignored" (no list yet), or "gap"
   * (the caller subscribes again from `presencePosition`).
   */
  _onPresenceChange(frame) {
    if (!this.presence || this.presencePosition === null || !Array.isArray(frame.members)) return "ignored";
    const at = this.presencePosition;
    if (frame.presence_epoch !== at.epoch || frame.presence_seq > at.seq + 1) return "gap";
    if (frame.presence_seq <= at.seq) return "duplicate";
    for (const m of frame.members) {
      if (frame.type === "join") this.members.set(m.client, m);
      else this.members.delete(m.client);
    }
    this.presencePosition = { seq: frame.presence_seq, epoch: at.epoch };
    const replayed = this.#presenceReplayLeft > 0;
    if (replayed) this.#presenceReplayLeft -= 1;
    this.emit(frame.type, frame.members, { replayed, frame });
    return "applied";
  }

  /**
   * A `message` frame. Returns "delivered", "duplicate", "ignored" (not subscribed yet: a frame
   * that was in flight before our subscribe op), or "gap" (the caller resubscribes with since).
   */
  _onMessage(frame) {
    if (this.state !== "subscribed") return "ignored";
    if (typeof frame.seq !== "number") return "ignored";
    if (frame.seq <= this.position.seq) {
      this.duplicates += 1;
      return "duplicate";
    }
    if (frame.seq > this.position.seq + 1) return "gap";
    this.position = { seq: frame.seq, epoch: this.position.epoch };
    const replayed = this.#replayLeft > 0;
    if (replayed) this.#replayLeft -= 1;
    this.emit("message", frame, { replayed });
    return "delivered";
  }
}
