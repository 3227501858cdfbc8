/// Writing: what a writable connection sends next, from its control queue and its channels'
/// rings, with the shared compressed pieces for a connection that compresses.
extension FanOut {
    /// Runs `body` on a connection's session in place (nil: no such session). Reading a session
    /// through the dictionary's getter copies the whole struct, retaining everything it holds:
    /// on the write path that was a few per cent of a busy thread.
    @inline(__always)
    mutating func withSession<R>(_ id: ConnectionID, _ body: (inout ClientSession) -> R) -> R? {
        guard let i = sessions.index(forKey: id) else { return nil }
        return body(&sessions.values[i])
    }

    /// What a writable connection sends next, without building an action list: the hot path
    /// (`.writable` through `handle` gives the same answer as actions).
    public enum Write {
        case nothing
        /// `pieces`: each frame's shared compressed piece, for a connection that compresses
        /// (empty for one that does not).
        case frames([[UInt8]], pieces: [[UInt8]?], more: Bool)
        /// The connection must resume instead (4008): carry these out.
        case actions([Action])
    }

    public mutating func writeNext(_ id: ConnectionID) -> Write {
        var actions: [Action] = []
        write(id, into: &actions)
        guard actions.count == 1, case let .write(_, frames, pieces, more) = actions[0] else {
            return actions.isEmpty ? .nothing : .actions(actions)
        }
        return .frames(frames, pieces: pieces, more: more)
    }

    mutating func write(_ id: ConnectionID, into actions: inout [Action]) {
        guard !closing.contains(id) else { return }
        let rings = self.rings
        let (maxFrames, maxBytes) = (settings.maxBatchFrames, settings.maxBatchBytes)
        var pieces: [[UInt8]?]? = compressing.contains(id) ? [] : nil
        guard let (batch, hasControl) = withSession(id, { s -> (Outbox.Batch, Bool) in
            let batch = s.outbox.nextBatch(maxFrames: maxFrames, maxBytes: maxBytes, pieces: &pieces, ring: { rings[$0] })
            return (batch, s.outbox.hasControl)
        }) else { return }
        switch batch {
        case .nothing:
            return
        case let .frames(frames):
            let full = frames.count >= settings.maxBatchFrames || frames.reduce(0, { $0 + $1.count }) >= settings.maxBatchBytes
            actions.append(.write(id, frames: frames, pieces: pieces ?? [], more: full || hasControl))
        case let .resume(reason):
            closeSlow(id, reason: reason, into: &actions)
        }
    }
}
