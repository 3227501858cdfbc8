/// The latest frames of one channel on one service thread: one head, many tails.
///
/// Each frame is stored once, with its compressed piece when the node made one (see
/// `SequencedMessage.piece`); every subscriber keeps only the seq it wants next. Seqs in the
/// ring are consecutive, so a lookup is an index computation. A subscriber whose next seq has
/// left the ring is too far behind and must resume (close 4008).
///
/// - Important: not thread-safe; owned by one WebSocket service thread.
public final class ChannelRing {
    public enum Append: Equatable {
        case appended
        /// Seq already seen in this epoch (a duplicate live copy): ignored.
        case stale
        /// The epoch changed, or a seq was skipped: the ring restarted at this frame.
        case restarted
    }

    public enum Lookup: Equatable {
        case frame([UInt8])
        case notYet
        case evicted
    }

    public private(set) var capacity: Int
    public private(set) var epoch: String?
    private var buffer: [[UInt8]]
    /// Each frame's shared permessage-deflate piece, beside `buffer` (nil: none).
    private var pieces: [[UInt8]?]
    private var start = 0 // index of firstSeq in buffer
    public private(set) var firstSeq: UInt64 = 0
    public private(set) var count = 0

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.buffer = []
        self.pieces = []
    }

    /// The newest seq in the ring, or nil when it holds nothing yet.
    public var lastSeq: UInt64? { count == 0 ? nil : firstSeq + UInt64(count) - 1 }

    public func append(seq: UInt64, epoch: String, frame: [UInt8], piece: [UInt8]? = nil) -> Append {
        if self.epoch == epoch, let last = lastSeq {
            if seq <= last { return .stale }
            if seq == last + 1 {
                push(frame, piece)
                return .appended
            }
        }
        let restarted = self.epoch != nil
        self.epoch = epoch
        buffer.removeAll(keepingCapacity: true)
        pieces.removeAll(keepingCapacity: true)
        start = 0
        count = 0
        firstSeq = seq
        push(frame, piece)
        return restarted ? .restarted : .appended
    }

    private func push(_ frame: [UInt8], _ piece: [UInt8]?) {
        if buffer.count < capacity {
            buffer.append(frame)
            pieces.append(piece)
            count += 1
        } else if count < capacity {
            buffer[(start + count) % capacity] = frame
            pieces[(start + count) % capacity] = piece
            count += 1
        } else {
            buffer[start] = frame
            pieces[start] = piece
            start = (start + 1) % capacity
            firstSeq += 1
        }
    }

    /// Grows the ring so it can hold `minimumCapacity` frames without evicting any it holds now.
    /// A burst (a live gap repaired from Redis, several batches drained at once) must not push
    /// subscribers that were keeping up out of the ring.
    public func reserve(_ minimumCapacity: Int) {
        guard minimumCapacity > capacity else { return }
        if start != 0 {
            buffer = (0..<count).map { buffer[(start + $0) % buffer.count] }
            pieces = (0..<count).map { pieces[(start + $0) % pieces.count] }
            start = 0
        }
        capacity = minimumCapacity
    }

    public func lookup(_ seq: UInt64) -> Lookup {
        guard count > 0 else { return .notYet }
        if seq < firstSeq { return .evicted }
        let offset = seq - firstSeq
        if offset >= UInt64(count) { return .notYet }
        return .frame(buffer[(start + Int(offset)) % buffer.count])
    }

    /// The compressed piece of a frame the ring holds, or nil.
    public func piece(_ seq: UInt64) -> [UInt8]? {
        guard count > 0, seq >= firstSeq, seq - firstSeq < UInt64(count) else { return nil }
        return pieces[(start + Int(seq - firstSeq)) % pieces.count]
    }
}
