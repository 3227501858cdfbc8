import CWebSockets

/// Writing WebSocket frames through the one scratch buffer (with lws's `LWS_PRE` headroom).
extension WebSocketServer {
    func writeText(_ wsi: OpaquePointer, frames: [[UInt8]]) -> Bool {
        var total = frames.count > 0 ? frames.count - 1 : 0
        for f in frames { total += f.count }
        if scratch.count < pre + total { scratch = [UInt8](repeating: 0, count: pre + Swift.max(total, 65_536)) }
        return scratch.withUnsafeMutableBufferPointer { buffer -> Bool in
            var offset = pre
            for (i, f) in frames.enumerated() {
                if i > 0 { buffer[offset] = 0x0A; offset += 1 }
                f.withUnsafeBufferPointer { src in
                    if let base = src.baseAddress { (buffer.baseAddress! + offset).update(from: base, count: src.count) }
                }
                offset += f.count
            }
            wireBytes?.plain.add(total, ordering: .relaxed)
            let n = lws_write(wsi, buffer.baseAddress! + pre, total, LWS_WRITE_TEXT)
            return n >= 0
        }
    }

    func write(_ wsi: OpaquePointer, message: [UInt8], binary: Bool) -> Bool {
        if scratch.count < pre + message.count { scratch = [UInt8](repeating: 0, count: pre + Swift.max(message.count, 65_536)) }
        return scratch.withUnsafeMutableBufferPointer { buffer -> Bool in
            message.withUnsafeBufferPointer { src in
                if let base = src.baseAddress { (buffer.baseAddress! + pre).update(from: base, count: src.count) }
            }
            wireBytes?.plain.add(message.count, ordering: .relaxed)
            return lws_write(wsi, buffer.baseAddress! + pre, message.count, binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) >= 0
        }
    }
}
