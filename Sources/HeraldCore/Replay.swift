/// What Redis holds for a channel at one moment: the answer to a subscriber's history read.
public struct HistorySnapshot: Equatable, Sendable {
    public let epoch: String
    /// The newest seq of the channel (0: no message yet).
    public let seq: UInt64
    /// Retained frames, oldest first, with consecutive seqs ending at `seq`.
    public let frames: [[UInt8]]
    /// For a presence stream: the member list at `seq` (member objects, compact JSON).
    public let members: [[UInt8]]?
    /// Each frame as a shared permessage-deflate piece (nil where not worth it), made once by
    /// the node that read the history when any of its clients compresses; nil: none made.
    public var pieces: [[UInt8]?]?

    public init(epoch: String, seq: UInt64, frames: [[UInt8]], members: [[UInt8]]? = nil) {
        self.epoch = epoch
        self.seq = seq
        self.frames = frames
        self.members = members
    }

    /// Builds a snapshot from an `LRANGE` answer (newest first, as stored).
    public init(epoch: String, seq: UInt64, newestFirst: [[UInt8]], members: [[UInt8]]? = nil) {
        self.init(epoch: epoch, seq: seq, frames: Array(newestFirst.reversed()), members: members)
    }

    /// The seq of `frames[0]`, if any frame is retained.
    public var oldestSeq: UInt64? {
        frames.isEmpty ? nil : seq - UInt64(frames.count) + 1
    }
}

/// The answer to one subscribe: the `subscribed` frame and the frames to replay after it.
public struct ReplayPlan: Equatable, Sendable {
    public let subscribed: [UInt8]
    public let replay: ArraySlice<[UInt8]>
    public let epoch: String
    /// The seq the client has after the replay (live messages continue at `seq + 1`).
    public let seq: UInt64
    public let recovery: ServerFrame.Recovery?
}

public enum ReplayPlanner {
    /// Applies PROTOCOL.md's subscribe rules to a snapshot.
    ///
    /// - Parameters:
    ///   - resume: the client's `since`/`epoch`, if it sent one.
    ///   - alreadyQueued: for a re-subscribe on the same connection, the newest seq this connection
    ///     already got in `snapshot.epoch`; the replay starts after it so no seq is sent twice.
    public static func plan(channel: String, snapshot: HistorySnapshot, resume: ResumePosition?,
                            alreadyQueued: UInt64? = nil) -> ReplayPlan {
        var recovery: ServerFrame.Recovery?
        var after: UInt64 = 0 // replay frames with seq > after
        if let resume {
            let sameEpoch = resume.epoch == nil || resume.epoch == snapshot.epoch
            if sameEpoch && resume.since <= snapshot.seq {
                let missed: UInt64
                if let oldest = snapshot.oldestSeq {
                    missed = oldest > resume.since + 1 ? oldest - resume.since - 1 : 0
                } else {
                    missed = snapshot.seq - resume.since
                }
                recovery = .init(recovered: missed == 0, missed: missed)
                after = resume.since
            } else {
                recovery = .init(recovered: false, missed: nil)
            }
        }
        if let alreadyQueued, alreadyQueued <= snapshot.seq { after = Swift.max(after, alreadyQueued) }

        var replay = snapshot.frames[...]
        if let oldest = snapshot.oldestSeq, after >= oldest {
            let skip = Int(Swift.min(after - oldest + 1, UInt64(replay.count)))
            replay = replay.dropFirst(skip)
        }
        let subscribed = ServerFrame.subscribed(channel: channel, epoch: snapshot.epoch, seq: snapshot.seq,
                                                replay: replay.count, recovery: recovery)
        return ReplayPlan(subscribed: subscribed, replay: replay, epoch: snapshot.epoch, seq: snapshot.seq,
                          recovery: recovery)
    }
}
