/// One compressed WebSocket message carrying several frames (Herald's coalesced batches: frames
/// joined by newlines), built from pieces compressed once per node.
///
/// The body is a sequence of independent deflate pieces: a frame's shared piece where it has one
/// (made by `Deflater.piece`), a piece compressed here for a frame large enough to gain
/// (`minBytes`), and stored (uncompressed) blocks for the rest and for the newlines between
/// frames. Every piece ends byte-aligned and not final, so the concatenation is one valid raw
/// deflate stream; the last `00 00 ff ff` is stripped (RFC 7692 §7.2.1).
extension Deflater {
    /// The compressed body of `frames` joined by newlines, or nil when nothing in it gains from
    /// compression (the batch then goes out as a plain text message, at no cost).
    ///
    /// - Parameters:
    ///   - pieces: the shared piece of each frame (nil where there is none); a piece made with a
    ///     larger window than this deflater's is used only for frames no longer than this window
    ///     (a fresh stream never reaches back further than its own input).
    ///   - minBytes: frames below this are stored, not compressed; 0 compresses every frame,
    ///     even where that does not make it smaller.
    public func batchBody(_ frames: [[UInt8]], pieces: [[UInt8]?], minBytes: Int) -> [UInt8]? {
        var out: [UInt8] = []
        return batchBody(frames, pieces: pieces, minBytes: minBytes, into: &out) ? out : nil
    }

    /// The same into `out` (emptied first, its capacity kept: a service thread reuses one
    /// buffer for every write); false when the batch should go out plain.
    public func batchBody(_ frames: [[UInt8]], pieces: [[UInt8]?], minBytes: Int, into out: inout [UInt8]) -> Bool {
        out.removeAll(keepingCapacity: true)
        var stored = StoredRun()
        var compressed = false
        let window = 1 << Int(windowBits)
        for (i, frame) in frames.enumerated() {
            if i > 0 { stored.append(0x0A, to: &out) }
            var piece = i < pieces.count ? pieces[i] : nil
            if windowBits < 15, frame.count > window { piece = nil }
            if piece == nil { piece = worthwhilePiece(frame, minBytes: minBytes) }
            if let piece {
                stored.close(in: &out)
                out.append(contentsOf: piece)
                compressed = true
            } else {
                stored.append(frame, to: &out)
            }
        }
        guard compressed else { return false }
        if stored.isOpen {
            stored.close(in: &out)
            // An empty stored block ends the body byte-aligned, as a sync flush would.
            out.append(contentsOf: [0x00, 0x00, 0x00, 0xFF, 0xFF])
        }
        if out.count >= 4, out[out.count - 4] == 0x00, out[out.count - 3] == 0x00,
           out[out.count - 2] == 0xFF, out[out.count - 1] == 0xFF {
            out.removeLast(4)
        }
        return true
    }

    /// `frame`'s piece if it is at least `minBytes` long and the piece is smaller than the frame
    /// stored (uncompressed) would be; with `minBytes` 0, always.
    public func worthwhilePiece(_ frame: [UInt8], minBytes: Int) -> [UInt8]? {
        guard frame.count >= minBytes else { return nil }
        let made = piece(frame)
        return made.count < frame.count + StoredRun.headerBytes || minBytes == 0 ? made : nil
    }

    /// One message's compressed body, or nil when it would not be smaller.
    public func compressedBody(_ message: [UInt8], minBytes: Int) -> [UInt8]? {
        batchBody([message], pieces: [nil], minBytes: minBytes)
    }
}

/// Uncompressed bytes as stored deflate blocks (RFC 1951 §3.2.4): a header byte (not final,
/// type 00, padded), LEN and its complement, then up to 65,535 bytes.
struct StoredRun {
    static let headerBytes = 5
    /// Where the open block's header is in the output, or nil.
    private var header: Int?

    var isOpen: Bool { header != nil }

    mutating func append(_ byte: UInt8, to out: inout [UInt8]) {
        if header == nil || out.count - header! - Self.headerBytes == 0xFFFF { open(in: &out) }
        out.append(byte)
    }

    mutating func append(_ bytes: [UInt8], to out: inout [UInt8]) {
        var from = 0
        while from < bytes.count {
            if header == nil || out.count - header! - Self.headerBytes == 0xFFFF { open(in: &out) }
            let room = 0xFFFF - (out.count - header! - Self.headerBytes)
            let n = min(room, bytes.count - from)
            out.append(contentsOf: bytes[from..<from + n])
            from += n
        }
    }

    private mutating func open(in out: inout [UInt8]) {
        close(in: &out)
        header = out.count
        out.append(contentsOf: [0, 0, 0, 0, 0])
    }

    mutating func close(in out: inout [UInt8]) {
        guard let h = header else { return }
        let length = out.count - h - Self.headerBytes
        out[h + 1] = UInt8(length & 0xFF)
        out[h + 2] = UInt8(length >> 8)
        out[h + 3] = ~UInt8(length & 0xFF)
        out[h + 4] = ~UInt8(length >> 8)
        header = nil
    }
}
