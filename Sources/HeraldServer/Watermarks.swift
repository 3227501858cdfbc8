import HeraldCore
import Synchronization

/// This node's `ChannelWatermarks`, shared by its live consumer (which sees every message any
/// node's sequencer hands out) and its sequencer (which passes each channel's mark to the
/// `sequence` script). So a node that takes over sequencing already knows how far every
/// channel got, and a Redis that comes back behind is caught, not counted on.
final class Watermarks: Sendable {
    private let marks: Mutex<ChannelWatermarks>

    init(capacity: Int = 200_000) { marks = Mutex(ChannelWatermarks(capacity: capacity)) }

    func record(_ messages: [SequencedMessage]) {
        guard !messages.isEmpty else { return }
        marks.withLock { marks in
            for m in messages { marks.record(m.channel, epoch: m.epoch, seq: m.seq) }
        }
    }

    /// Per channel, its marks (newest epoch first).
    func marks(_ channels: [String]) -> [[ChannelWatermarks.Mark]] {
        marks.withLock { marks in channels.map { marks.marks($0) } }
    }

    /// The `sequence` script's watermark argument: `epoch seq` pairs, separated by spaces.
    static func argument(_ marks: [ChannelWatermarks.Mark]) -> String {
        marks.map { "\($0.epoch) \($0.seq)" }.joined(separator: " ")
    }
}
