/// One client's subscriptions and what it still has to receive: the subscription state machine.
///
/// Control frames (`subscribed`, replayed history, errors) go out first, in order; live frames
/// are read from each channel's ring at the subscription's cursor. Per channel the client
/// therefore sees seqs strictly increasing by one across the replay/live boundary.
///
/// - Important: not thread-safe; owned by one WebSocket service thread.
public struct Outbox {
    public enum SubscriptionState: Equatable {
        /// Waiting for the history read `request`.
        case pending(request: UInt64, resume: ResumePosition?, previous: LivePosition?)
        case live(LivePosition)
    }

    public struct LivePosition: Equatable {
        public var epoch: String
        /// The next seq this client gets.
        public var next: UInt64
    }

    public enum Batch: Equatable {
        case frames([[UInt8]])
        case nothing
        /// Too far behind, or the channel's sequence broke: close 4008 so the client resumes.
        case resume(reason: String)
    }

    /// What the control queue may hold on top of the replays it is sending: a client that sends
    /// requests faster than it reads the answers is closed (4008) past it.
    public let maxControlBytes: Int
    public private(set) var subscriptions: [String: SubscriptionState] = [:]
    private var control: [[UInt8]] = []
    /// Beside `control`: each frame's shared compressed piece (replayed history), or nil.
    private var controlPieces: [[UInt8]?] = []
    private var controlHead = 0
    private var controlBytes = 0
    /// The bytes of the replays queued since the queue was last empty. A replay is history the
    /// operator chose to keep (bounded by the channel's history size), so it goes out whole, in
    /// batches, however large; the budget applies to what comes on top of it.
    private var replayAllowance = 0
    private var overflowed = false
    /// Set when a replay arrived while the queue was already past its budget: what is queued goes
    /// out, then the connection resumes (4008) from the positions it reached. Every resume so
    /// takes at least one replay whole, and a client far behind on several channels catches up
    /// over a few reconnects instead of asking for the same replay forever.
    private var resumeWhenDrained: String?
    private var order: [String] = []
    private var turn = 0

    public init(maxControlBytes: Int = 4 << 20) {
        self.maxControlBytes = maxControlBytes
    }

    public var subscriptionCount: Int { subscriptions.count }
    /// True while control frames (or a resume after them) are still to go out.
    public var hasControl: Bool { controlHead < control.count || resumeWhenDrained != nil }

    public mutating func enqueue(_ frame: [UInt8]) {
        control.append(frame)
        controlPieces.append(nil)
        controlBytes += frame.count
        if controlBytes > maxControlBytes + replayAllowance { overflowed = true }
    }

    /// Starts (or replaces) a subscription; the caller reads history for `request`.
    public mutating func subscribe(channel: String, resume: ResumePosition?, request: UInt64) {
        var previous: LivePosition?
        switch subscriptions[channel] {
        case .live(let position): previous = position
        case .pending(_, _, let p): previous = p
        case nil: order.append(channel)
        }
        subscriptions[channel] = .pending(request: request, resume: resume, previous: previous)
    }

    /// Applies a history read. Returns nil when the answer is for an older request (ignored), or
    /// when the queue is past its budget: the subscription then stays pending, and the client's
    /// resume after what is queued asks for it again.
    /// A presence stream's read (`snapshot.members` set) is answered with `PresencePlanner`'s
    /// `presence` frame, naming the connection as `client`.
    public mutating func apply(channel: String, request: UInt64, snapshot: HistorySnapshot, client: String = "") -> ReplayPlan? {
        guard case let .pending(pendingRequest, resume, previous) = subscriptions[channel],
              pendingRequest == request else { return nil }
        if resumeWhenDrained != nil || controlBytes > maxControlBytes {
            // Left pending: no live frame goes out for it, and the resume asks again.
            resumeWhenDrained = resumeWhenDrained ?? "too far behind: replays over \(maxControlBytes) bytes, resume to continue"
            return nil
        }
        var alreadyQueued: UInt64?
        if let previous, previous.epoch == snapshot.epoch, previous.next > 0 { alreadyQueued = previous.next - 1 }
        let plan: ReplayPlan
        if let watched = PresenceStream.channel(of: channel) {
            // A list replaces what the connection knew: changes continue right after it.
            plan = PresencePlanner.plan(channel: watched, client: client,
                                        snapshot: PresenceSnapshot(stream: snapshot, members: snapshot.members ?? []), resume: resume)
            alreadyQueued = nil
        } else {
            plan = ReplayPlanner.plan(channel: channel, snapshot: snapshot, resume: resume, alreadyQueued: alreadyQueued)
        }
        // The subscribed frame and its replay: counted, and allowed on top of the budget.
        let bytes = plan.replay.reduce(plan.subscribed.count) { $0 + $1.count }
        control.append(plan.subscribed)
        control.append(contentsOf: plan.replay)
        controlPieces.append(nil)
        if let pieces = snapshot.pieces, pieces.count == snapshot.frames.count, PresenceStream.channel(of: channel) == nil {
            controlPieces.append(contentsOf: plan.replay.indices.map { pieces[$0] })
        } else {
            controlPieces.append(contentsOf: repeatElement(nil, count: plan.replay.count))
        }
        controlBytes += bytes
        replayAllowance += bytes
        let next = Swift.max(plan.seq, alreadyQueued ?? 0) + 1
        subscriptions[channel] = .live(LivePosition(epoch: plan.epoch, next: next))
        return plan
    }

    public mutating func unsubscribe(channel: String) -> Bool {
        guard subscriptions.removeValue(forKey: channel) != nil else { return false }
        order.removeAll { $0 == channel }
        return true
    }

    /// True when the subscription can never continue from this ring: its next seq has already
    /// left the ring (too far behind), or the ring now carries another epoch.
    public func mustResume(channel: String, ring: ChannelRing) -> Bool {
        guard case let .live(position) = subscriptions[channel], let epoch = ring.epoch else { return false }
        if epoch != position.epoch { return true }
        return ring.lookup(position.next) == .evicted
    }

    /// Collects what to send next, up to the limits, as one batch.
    public mutating func nextBatch(maxFrames: Int, maxBytes: Int,
                                   ring: (String) -> ChannelRing?) -> Batch {
        var none: [[UInt8]?]?
        return nextBatch(maxFrames: maxFrames, maxBytes: maxBytes, pieces: &none, ring: ring)
    }

    /// The same, and where `pieces` is not nil, each frame's shared compressed piece beside it
    /// (nil for control frames and frames the node did not compress).
    public mutating func nextBatch(maxFrames: Int, maxBytes: Int, pieces: inout [[UInt8]?]?,
                                   ring: (String) -> ChannelRing?) -> Batch {
        if overflowed { return .resume(reason: "too far behind") }
        var frames = [[UInt8]]()
        var bytes = 0
        while controlHead < control.count, frames.count < maxFrames, bytes < maxBytes {
            let f = control[controlHead]
            control[controlHead] = []
            pieces?.append(controlPieces[controlHead])
            controlPieces[controlHead] = nil
            controlHead += 1
            controlBytes -= f.count
            bytes += f.count + 1
            frames.append(f)
        }
        if controlHead == control.count {
            control.removeAll(keepingCapacity: control.capacity <= 64)
            controlPieces.removeAll(keepingCapacity: controlPieces.capacity <= 64)
            controlHead = 0
            replayAllowance = 0
            if let reason = resumeWhenDrained {
                return frames.isEmpty ? .resume(reason: reason) : .frames(frames)
            }
        } else {
            return .frames(frames)
        }
        if !order.isEmpty {
            // Round-robin over channels so one busy channel cannot starve the others.
            for step in 0..<order.count {
                if frames.count >= maxFrames || bytes >= maxBytes { break }
                let channel = order[(turn + step) % order.count]
                guard case .live(var position) = subscriptions[channel], let r = ring(channel) else { continue }
                // A ring from another epoch holds nothing for this position. The hub closes
                // every subscriber when a ring restarts, so this only waits for new frames.
                if r.epoch != position.epoch { continue }
                loop: while frames.count < maxFrames, bytes < maxBytes {
                    switch r.lookup(position.next) {
                    case .frame(let f):
                        frames.append(f)
                        pieces?.append(r.piece(position.next))
                        bytes += f.count + 1
                        position.next += 1
                    case .notYet:
                        break loop
                    case .evicted:
                        return .resume(reason: "too far behind on channel \(channel)")
                    }
                }
                subscriptions[channel] = .live(position)
            }
            turn = (turn + 1) % Swift.max(order.count, 1)
        }
        return frames.isEmpty ? .nothing : .frames(frames)
    }
}
