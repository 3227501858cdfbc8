import CRabbitMQ
#if canImport(Glibc)
import Glibc
#endif

/// Between rabbitmq-c's C structures and Herald's Swift values: strings, bytes, message
/// properties, argument tables and status texts.
enum AMQPCodec {
    static func statusString(_ status: Int32) -> String {
        guard let s = amqp_error_string2(status) else { return "status \(status)" }
        return String(cString: s)
    }

    static func string(_ b: amqp_bytes_t) -> String { String(decoding: bytes(b), as: UTF8.self) }

    static func bytes(_ b: amqp_bytes_t) -> [UInt8] {
        guard b.len > 0, let p = b.bytes else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: b.len))
    }

    static func properties(_ p: amqp_basic_properties_t) -> AMQPProperties {
        var out = AMQPProperties()
        if p._flags & UInt32(AMQP_BASIC_CONTENT_TYPE_FLAG) != 0 { out.contentType = string(p.content_type) }
        if p._flags & UInt32(AMQP_BASIC_MESSAGE_ID_FLAG) != 0 { out.messageID = string(p.message_id) }
        if p._flags & UInt32(AMQP_BASIC_DELIVERY_MODE_FLAG) != 0 { out.persistent = p.delivery_mode == 2 }
        if p._flags & UInt32(AMQP_BASIC_REPLY_TO_FLAG) != 0 { out.replyTo = string(p.reply_to) }
        if p._flags & UInt32(AMQP_BASIC_CORRELATION_ID_FLAG) != 0 { out.correlationID = string(p.correlation_id) }
        if p._flags & UInt32(AMQP_BASIC_EXPIRATION_FLAG) != 0 { out.expiration = string(p.expiration) }
        if p._flags & UInt32(AMQP_BASIC_HEADERS_FLAG) != 0, p.headers.num_entries > 0, let entries = p.headers.entries {
            for i in 0..<Int(p.headers.num_entries) {
                let e = entries[i]
                let kind = e.value.kind
                if kind == UInt8(AMQP_FIELD_KIND_UTF8.rawValue) || kind == UInt8(AMQP_FIELD_KIND_BYTES.rawValue) {
                    out.headers.append((string(e.key), string(e.value.value.bytes)))
                }
            }
        }
        return out
    }

    /// Builds an `amqp_table_t` whose memory lives for the duration of `body`.
    static func withTable<R>(_ entries: [(String, AMQPArgument)], _ body: (amqp_table_t) -> R) -> R {
        if entries.isEmpty { return body(amqp_empty_table) }
        var allocations: [UnsafeMutablePointer<CChar>] = []
        defer { allocations.forEach { free($0) } }
        let table = UnsafeMutablePointer<amqp_table_entry_t>.allocate(capacity: entries.count)
        defer { table.deallocate() }
        for (i, (key, value)) in entries.enumerated() {
            let k = strdup(key)!
            allocations.append(k)
            var entry = amqp_table_entry_t()
            entry.key = amqp_cstring_bytes(k)
            switch value {
            case .bool(let b):
                entry.value.kind = UInt8(AMQP_FIELD_KIND_BOOLEAN.rawValue)
                entry.value.value.boolean = b ? 1 : 0
            case .string(let s):
                let v = strdup(s)!
                allocations.append(v)
                entry.value.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
                entry.value.value.bytes = amqp_cstring_bytes(v)
            case .int(let n):
                entry.value.kind = UInt8(AMQP_FIELD_KIND_I64.rawValue)
                entry.value.value.i64 = n
            }
            table[i] = entry
        }
        return body(amqp_table_t(num_entries: Int32(entries.count), entries: table))
    }
}
