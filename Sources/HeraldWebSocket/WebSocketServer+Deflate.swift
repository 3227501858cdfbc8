import CWebSockets
import HeraldCore
import HeraldDeflate
import Synchronization

/// Bytes of WebSocket messages written, by encoding: what `/metrics` reports as
/// `herald_ws_bytes_total{encoding="plain|deflate"}` (payload bytes on the wire, frame headers
/// left out) and `herald_ws_deflate_input_bytes_total` (what the compressed ones held before
/// compression). Any thread may read them; service threads add.
public final class WireBytes: Sendable {
    public let plain = Atomic<Int>(0)
    public let deflated = Atomic<Int>(0)
    public let deflateInput = Atomic<Int>(0)
    public init() {}
}

/// permessage-deflate (RFC 7692) in Herald's own frame layer. lws negotiates nothing itself:
/// a pass-through extension (`herald_extensions` in the C shim) only makes it accept frames
/// with RSV1; Herald picks the offer (`PerMessageDeflate`), writes the answer, inflates what
/// clients send and writes compressed frames itself (header built here, bytes sent raw).
extension WebSocketServer {
    // MARK: Handshake

    /// `LWS_CALLBACK_CONFIRM_EXTENSION_OKAY`: 0 takes the offer, 1 declines it (the connection
    /// then goes on uncompressed).
    func confirmExtension(_ wsi: OpaquePointer) -> Int32 {
        guard options.permessageDeflate, let header = LWSRequest.header(wsi, WSI_TOKEN_EXTENSIONS),
              let accepted = PerMessageDeflate.negotiate(header) else { return 1 }
        negotiating[wsi] = accepted
        return 0
    }

    /// `LWS_CALLBACK_ADD_HEADERS` of a WebSocket handshake: Herald's answer replaces the line lws
    /// wrote. Nonzero fails the handshake (lws's line was not where lws 4.1.6 puts it).
    func addHeaders(_ wsi: OpaquePointer, _ args: UnsafeMutableRawPointer?) -> Int32 {
        guard let accepted = negotiating[wsi], let args else { return 0 }
        let line = "Sec-WebSocket-Extensions: \(accepted.response)\r\n"
        return herald_replace_extensions_header(args, line, 96) == 0 ? 0 : 1
    }

    // MARK: Writing

    /// Frames as one compressed text message where that gains, else as a plain one.
    func writeCompressed(_ wsi: OpaquePointer, frames: [[UInt8]], pieces: [[UInt8]?], window: Int) -> Bool {
        // The common case, one live message the node already compressed: its piece is the body
        // (without the 00 00 ff ff a sync flush ends with), written straight from the ring.
        if frames.count == 1, pieces.count == 1, let piece = pieces[0], piece.count >= 4,
           piece[piece.count - 1] == 0xFF, piece[piece.count - 2] == 0xFF, piece[piece.count - 3] == 0, piece[piece.count - 4] == 0,
           window == 15 || frames[0].count <= 1 << window {
            wireBytes?.deflateInput.add(frames[0].count, ordering: .relaxed)
            return writeRaw(wsi, opcode: 0x1, body: piece, count: piece.count - 4)
        }
        guard let d = deflater(window), d.batchBody(frames, pieces: pieces, minBytes: options.compressionMinBytes, into: &body) else {
            return writeText(wsi, frames: frames)
        }
        var plain = frames.count > 0 ? frames.count - 1 : 0
        for f in frames { plain += f.count }
        wireBytes?.deflateInput.add(plain, ordering: .relaxed)
        return writeRaw(wsi, opcode: 0x1, body: body, count: body.count)
    }

    func writeCompressed(_ wsi: OpaquePointer, message: [UInt8], binary: Bool, window: Int) -> Bool {
        guard let body = deflater(window)?.compressedBody(message, minBytes: options.compressionMinBytes) else {
            return write(wsi, message: message, binary: binary)
        }
        wireBytes?.deflateInput.add(message.count, ordering: .relaxed)
        return writeRaw(wsi, opcode: binary ? 0x2 : 0x1, body: body, count: body.count)
    }

    /// One whole frame with FIN and RSV1 set, its header built here, sent through lws as raw
    /// bytes (lws keeps any part the kernel did not take, as for its own frames).
    /// The frame's payload is `body[0..<count]`.
    private func writeRaw(_ wsi: OpaquePointer, opcode: UInt8, body: [UInt8], count: Int) -> Bool {
        let headerBytes = count < 126 ? 2 : count <= 0xFFFF ? 4 : 10
        let total = headerBytes + count
        if scratch.count < pre + total { scratch = [UInt8](repeating: 0, count: pre + Swift.max(total, 65_536)) }
        wireBytes?.deflated.add(count, ordering: .relaxed)
        return scratch.withUnsafeMutableBufferPointer { buffer -> Bool in
            let base = buffer.baseAddress! + pre
            base[0] = 0xC0 | opcode  // FIN, RSV1
            switch headerBytes {
            case 2: base[1] = UInt8(count)
            case 4: base[1] = 126; base[2] = UInt8(count >> 8); base[3] = UInt8(count & 0xFF)
            default:
                base[1] = 127
                for i in 0..<8 { base[2 + i] = UInt8(truncatingIfNeeded: count >> (56 - 8 * i)) }
            }
            body.withUnsafeBufferPointer { if let b = $0.baseAddress { (base + headerBytes).update(from: b, count: count) } }
            return lws_write(wsi, base, total, LWS_WRITE_HTTP) >= 0
        }
    }

    /// This thread's compressor for a window size (each connection's `server_max_window_bits`).
    private func deflater(_ window: Int) -> Deflater? {
        if let d = deflaters[window] { return d }
        let d = Deflater(level: options.compressionLevel, windowBits: Int32(window), memLevel: 8)
        deflaters[window] = d
        return d
    }
}
