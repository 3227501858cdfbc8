import CZlib

/// Raw DEFLATE as permessage-deflate (RFC 7692) uses it, built so that a message is compressed
/// once and its bytes reused for every connection and inside batches: each piece is a whole,
/// independent raw deflate stream ended by a sync flush (`00 00 ff ff`), so pieces concatenate
/// into one message body that any RFC 7692 endpoint inflates to the concatenated texts.
///
/// - Important: a `Deflater` or `Inflater` is used by one thread at a time (each keeps a zlib
///   stream, reset for every piece or message).
public final class Deflater {
    private let stream: UnsafeMutablePointer<z_stream>
    private var output = [UInt8](repeating: 0, count: 64 * 1024)
    public let windowBits: Int32

    /// `windowBits` 9...15 (a client's `server_max_window_bits`); zlib treats 8 as 9 for raw streams.
    public init?(level: Int32 = 6, windowBits: Int32 = 15, memLevel: Int32 = 8) {
        guard (9...15).contains(windowBits), let s = herald_z_new() else { return nil }
        guard herald_deflate_init(s, level, windowBits, memLevel) == Z_OK else { herald_z_free(s); return nil }
        stream = s
        self.windowBits = windowBits
    }

    deinit {
        deflateEnd(stream)
        herald_z_free(stream)
    }

    /// `bytes` as one independent piece: a fresh stream (no context from earlier pieces), sync
    /// flushed, so it ends with `00 00 ff ff`.
    public func piece(_ bytes: [UInt8]) -> [UInt8] {
        deflateReset(stream)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count / 2 + 16)
        bytes.withUnsafeBufferPointer { input in
            stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.pointee.avail_in = UInt32(input.count)
            repeat {
                output.withUnsafeMutableBufferPointer { buffer in
                    stream.pointee.next_out = buffer.baseAddress
                    stream.pointee.avail_out = UInt32(buffer.count)
                    _ = deflate(stream, Z_SYNC_FLUSH)
                    out.append(contentsOf: buffer.prefix(buffer.count - Int(stream.pointee.avail_out)))
                }
            } while stream.pointee.avail_out == 0
        }
        stream.pointee.next_in = nil
        stream.pointee.next_out = nil
        return out
    }

    /// A message body from pieces: their concatenation without the last piece's `00 00 ff ff`
    /// (RFC 7692 §7.2.1). Each piece must come from `piece`.
    public static func messageBody(_ pieces: [[UInt8]]) -> [UInt8] {
        var body = pieces.flatMap { $0 }
        if body.count >= 4, Array(body.suffix(4)) == tail { body.removeLast(4) }
        return body
    }

    static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]
}

/// Inflates received messages with a cap, for clients that compress (RFC 7692 §7.2.2): the
/// stream is reset for every message (`client_no_context_takeover`), and inflation stops as soon
/// as the output would pass the cap, so a small frame that inflates to gigabytes costs at most
/// the cap.
public final class Inflater {
    public enum Failure: Error, Equatable {
        /// Would inflate to more than the cap (close 1009).
        case tooLarge
        /// Not valid deflate data (close 1007).
        case corrupt
    }

    private let stream: UnsafeMutablePointer<z_stream>
    private var output = [UInt8](repeating: 0, count: 16 * 1024)

    public init?(windowBits: Int32 = 15) {
        guard let s = herald_z_new() else { return nil }
        guard herald_inflate_init(s, windowBits) == Z_OK else { herald_z_free(s); return nil }
        stream = s
    }

    deinit {
        inflateEnd(stream)
        herald_z_free(stream)
    }

    /// The text of a compressed message body (as received, without the `00 00 ff ff` the sender
    /// stripped), at most `cap` bytes.
    public func inflate(_ body: [UInt8], cap: Int) -> Result<[UInt8], Failure> {
        inflateReset(stream)
        defer {
            stream.pointee.next_in = nil
            stream.pointee.next_out = nil
        }
        var out: [UInt8] = []
        for chunk in [body, Deflater.tail] {
            var failure: Failure?
            chunk.withUnsafeBufferPointer { input in
                stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
                stream.pointee.avail_in = UInt32(input.count)
                while failure == nil {
                    var produced = 0
                    var status: Int32 = Z_OK
                    output.withUnsafeMutableBufferPointer { buffer in
                        stream.pointee.next_out = buffer.baseAddress
                        stream.pointee.avail_out = UInt32(buffer.count)
                        status = CZlib.inflate(stream, Z_SYNC_FLUSH)
                        produced = buffer.count - Int(stream.pointee.avail_out)
                        if out.count + produced > cap { failure = .tooLarge; return }
                        out.append(contentsOf: buffer.prefix(produced))
                    }
                    if failure != nil { break }
                    if status == Z_STREAM_END { break }
                    if status == Z_BUF_ERROR { break }            // no progress possible: input used up
                    if status != Z_OK { failure = .corrupt; break }
                    if stream.pointee.avail_in == 0 && produced < output.count { break }
                }
            }
            if let failure { return .failure(failure) }
        }
        return .success(out)
    }
}
