import HeraldCore
import HeraldDeflate

/// Compresses frames once for every connection of the node that negotiated permessage-deflate:
/// live messages as they arrive (`LiveSubscriber`) and replayed history as it is read
/// (`HistoryReader`). Nothing is compressed while no connection of the node compresses.
///
/// - Important: one per worker thread (a zlib stream is used by one thread at a time).
final class SharedPieces {
    private let config: HeraldConfig
    private let metrics: Metrics
    private lazy var deflater = Deflater()

    init(config: HeraldConfig, metrics: Metrics) {
        self.config = config
        self.metrics = metrics
    }

    /// Some connection of the node compresses (so pieces would be used).
    var wanted: Bool { config.permessageDeflate && metrics.deflateConnections.current > 0 }

    /// A frame's piece, where it is large enough to gain (`--compression-min-bytes`) and
    /// compresses to less than it would take stored.
    func piece(_ frame: [UInt8]) -> [UInt8]? {
        guard let piece = deflater?.worthwhilePiece(frame, minBytes: config.compressionMinBytes) else { return nil }
        metrics.sharedPieces.add()
        return piece
    }

    func compress(_ messages: inout [SequencedMessage]) {
        guard wanted else { return }
        for i in messages.indices { messages[i].piece = piece(messages[i].frame) }
    }

    func compress(_ snapshot: inout HistorySnapshot) {
        guard wanted, snapshot.members == nil, !snapshot.frames.isEmpty else { return }
        snapshot.pieces = snapshot.frames.map(piece)
    }
}
