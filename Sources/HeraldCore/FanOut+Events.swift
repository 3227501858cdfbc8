/// What `FanOut.handle` is told (events) and what it asks its caller to do (actions).
extension FanOut {
    public enum Event {
        /// `compresses`: the connection negotiated permessage-deflate (its writes then carry
        /// each frame's shared compressed piece).
        /// `refusal`: the connect proxy refused it with this HTTP status (`--connect-proxy-refusal
        /// close`): it is closed with 4001 or 4003 at once.
        case opened(ConnectionID, query: [(String, String)], identity: TokenClaims? = nil, compresses: Bool = false, refusal: Int? = nil)
        case received(ConnectionID, [UInt8], binary: Bool)
        /// The connection may be written: from its writable callback, or at once when nothing is
        /// left unsent for it (the caller decides which, see `Action.writeSoon`).
        case writable(ConnectionID)
        /// The connection is gone, with the close code sent or received (1006: none).
        case closed(ConnectionID, code: UInt16 = 1006)
        /// Sequenced messages of watched channels, in order, gaps already repaired.
        case live([SequencedMessage])
        /// A channel's sequence broke beyond repair: its subscribers resume.
        case broken(channel: String)
        case history(channel: String, requests: [UInt64], snapshot: HistorySnapshot)
        /// The timer asked for with `Action.schedule` fired.
        case timer
        /// A server API command for the connections of this thread (`broadcast` is not one).
        case control(ServerCommand)
        /// A subscribe proxy's answer for a connection's subscribe (nil: it could not be asked).
        case subscribeProxyAnswered(ConnectionID, channel: String, allowed: Bool?)
        /// The talk-back worker's answer to a connection's publish or call.
        case talkBack(ConnectionID, TalkBackAnswer)
    }

    public enum Action: Equatable {
        /// Send these frames (one WebSocket message); `pieces`: their shared compressed pieces
        /// (for a connection that compresses, else empty); `more`: ask for another writable call.
        case write(ConnectionID, frames: [[UInt8]], pieces: [[UInt8]?], more: Bool)
        /// Write as soon as possible: at once if nothing is unsent for the connection (then feed
        /// back `.writable`), else ask for a writable callback.
        case writeSoon(ConnectionID)
        /// Ask for a writable callback (never write from inside this connection's own callback).
        case requestWritable(ConnectionID)
        case close(ConnectionID, code: UInt16, reason: String, label: String, graceSeconds: Int)
        /// A subscribe request: have the channel's live messages come to this thread, then read
        /// its history (the answer comes back as `.history`).
        case readHistory(channel: String, request: UInt64)
        /// No connection of this thread subscribes to the channel any more: its live messages
        /// need not come here.
        case unwatch(channel: String)
        case keepEmptyAlive(channels: [String])
        /// Fire `.timer` at this monotonic time (replaces a later one).
        case schedule(atMicros: UInt64)
        /// A live message reached the ring; it was sequenced at this wall-clock ms.
        case sequencedAt(millis: UInt64)
        case tally(Tally)
        /// A connection became, or stopped being, a member of a presence channel: tell the
        /// node's presence announcer.
        case presence(PresenceEvent)
        /// With `settings.lifecycle`: a connection was accepted, authenticated, subscribed,
        /// unsubscribed or is gone; tell the node's lifecycle worker.
        case lifecycle(LifecycleInput)
        /// Ask `url` whether the connection (its user, client id and info) may subscribe to
        /// `channel`; feed the answer back as `.subscribeProxyAnswered`.
        case askSubscribeProxy(ConnectionID, channel: String, url: String, user: String?, client: String, info: [UInt8]?)
        /// Hand a connection's publish or call to the node's talk-back worker; feed its answer
        /// back as `.talkBack`.
        case talkBack(ConnectionID, TalkBackRequest)
    }
}
