import CWebSockets
import HeraldCore
import HeraldDeflate

/// Receiving: a client's frames gathered into whole messages (within the endpoint's limit),
/// inflated when they came compressed (permessage-deflate), checked for UTF-8 when text, and
/// handed to the endpoint's handler; or the close the RFCs name for what went wrong.
extension WebSocketServer {
    /// `LWS_CALLBACK_RECEIVE`: part of a frame.
    func receive(_ wsi: OpaquePointer, _ connection: WebSocketConnection, _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        heard(connection)
        let messageEnds = lws_is_final_fragment(wsi) != 0 && lws_remaining_packet_payload(wsi) == 0
        if connection.closeCode == nil, let (code, reason) = noteFrame(wsi, connection) {
            return failNow(wsi, connection, code: code, reason: reason)
        }
        if connection.closeCode != nil {
            if connection.incomingTooLarge && messageEnds { connection.requestWritable() }
            return 0
        }
        let limit = connection.maxMessageBytes
        if !connection.incomingTooLarge, let input, len > 0 {
            if connection.incoming.count + len > limit {
                connection.incomingTooLarge = true
                connection.incoming = []
            } else {
                let chunk = UnsafeRawBufferPointer(start: input, count: len)
                connection.incoming.append(contentsOf: chunk)
                // A plain text message is refused at its first invalid byte (RFC 6455 §8.1's
                // "fail fast"), whatever its fragments; a compressed one once inflated.
                if !connection.incomingCompressed, lws_frame_is_binary(wsi) == 0, !connection.utf8.feed(chunk) {
                    return failNow(wsi, connection, code: 1007, reason: "invalid UTF-8")
                }
            }
        }
        if connection.incomingTooLarge {
            // The 1009 goes out once the rest of the oversize message has been read and
            // dropped (or after the grace, for a peer that never ends it): see close().
            connection.close(code: 1009, reason: "message over \(limit) bytes", graceSeconds: 5,
                             afterIncomingMessage: !messageEnds)
            connection.handler.webSocketOversize(connection)
            return 0
        }
        if messageEnds {
            let binary = lws_frame_is_binary(wsi) != 0
            let message = connection.incoming
            connection.incoming = []
            switch decode(message, connection, binary: binary) {
            case let .success(decoded):
                connection.handler.webSocketReceived(connection, message: decoded, binary: binary)
            case let .failure(close):
                if close.code == 1009 { connection.handler.webSocketOversize(connection) }
                return failNow(wsi, connection, code: close.code, reason: close.reason)
            }
        }
        return 0
    }

    /// Notes whether a message arrives compressed; nil, or the close (code, reason) the frame
    /// calls for: RSV1 on a continuation frame is a protocol error (RFC 7692 §6.1).
    func noteFrame(_ wsi: OpaquePointer, _ connection: WebSocketConnection) -> (UInt16, String)? {
        let frameEnds = lws_remaining_packet_payload(wsi) == 0
        defer { connection.atFrameStart = frameEnds }
        guard connection.atFrameStart else { return nil }
        let rsv1 = lws_get_reserved_bits(wsi) & 0x40 != 0
        if lws_is_first_fragment(wsi) != 0 {
            connection.incomingCompressed = rsv1
            connection.utf8 = UTF8Validator()
        } else if rsv1 {
            return (1002, "RSV1 set on a continuation frame")
        }
        return nil
    }

    /// A whole received message as the handler gets it: inflated if it came compressed, and for
    /// text, valid UTF-8. Failure is the close (code, reason).
    func decode(_ message: [UInt8], _ connection: WebSocketConnection, binary: Bool) -> Result<[UInt8], CloseReason> {
        var text = message
        var valid = binary || connection.utf8.isComplete
        if connection.incomingCompressed {
            connection.incomingCompressed = false
            if inflater == nil { inflater = Inflater() }
            guard let inflater else { return .failure(CloseReason(code: 1011, reason: "cannot inflate")) }
            switch inflater.inflate(message, cap: connection.maxMessageBytes) {
            case let .success(plain):
                text = plain
                valid = binary || UTF8Validator.isValid(plain)
            case .failure(.tooLarge): return .failure(CloseReason(code: 1009, reason: "message over \(connection.maxMessageBytes) bytes once inflated"))
            case .failure(.corrupt): return .failure(CloseReason(code: 1007, reason: "invalid compressed data"))
            }
        }
        if !valid { return .failure(CloseReason(code: 1007, reason: "invalid UTF-8")) }
        return .success(text)
    }

    struct CloseReason: Error {
        let code: UInt16
        let reason: String
    }

    /// Closes at once from a receive callback, as lws does for its own protocol errors: the
    /// close frame carries `code`, and the callback then returns -1.
    func failNow(_ wsi: OpaquePointer, _ connection: WebSocketConnection, code: UInt16, reason: String) -> Int32 {
        connection.closeCode = code
        connection.closeReason = reason
        connection.incoming = []
        reason.withCString { r in
            lws_close_reason(wsi, lws_close_status(rawValue: UInt32(code)),
                             UnsafeMutableRawPointer(mutating: r).assumingMemoryBound(to: UInt8.self), strlen(r))
        }
        return -1
    }
}
