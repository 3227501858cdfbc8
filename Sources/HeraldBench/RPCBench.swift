import HeraldAMQP
import HeraldCore
import HeraldLoadClients
import HeraldRuntime
#if canImport(Glibc)
import Glibc
#endif

/// `herald bench rpc`: client RPCs through Herald and RabbitMQ, end to end. `clients` WebSocket
/// connections send `{"op":"rpc"}` calls, round-robin, at a fixed total rate; an echo worker in
/// this process answers each one from `<exchange>.rpc` (as an application's worker would, with
/// direct reply-to); the round trip of every call is timed from its send to its `rpc_result`.
/// The server needs `--rpc-methods 'bench.*'` (or `*`).
public final class RPCBench: WebSocketClientHandler, @unchecked Sendable {
    public struct Options: Sendable {
        public var url = "ws://127.0.0.1:8080/ws"
        public var amqpURL = "amqp://guest:guest@127.0.0.1:5672/"
        public var exchange = "herald"
        public var clients = 50
        public var rate = 1_000.0
        public var duration = 10.0
        public var size = 100
        public var quiet = false
        public init() {}
    }

    public struct Result: Sendable {
        public var sent = 0
        public var answered = 0
        /// Answers that were `rpc_error`, by code.
        public var errors: [String: Int] = [:]
        /// Calls with no answer when the run ended (5 s after the last call).
        public var unanswered = 0
        public var duplicates = 0
        public var latency = Histogram()
        public var seconds = 0.0

        public func summary(_ o: Options) -> String {
            let ms = { (p: Double) in fmt(Double(latency.value(atPercentile: p)) / 1000, 2) }
            var lines = ["herald bench rpc: \(o.clients) clients, \(Int(o.rate)) calls/s for \(o.duration) s, \(o.size)-byte data, through \(o.exchange).rpc",
                         "  sent \(sent) in \(fmt(seconds, 1)) s (\(fmt(Double(sent) / max(seconds, 0.001), 0)) calls/s), answered \(answered), unanswered \(unanswered), duplicates \(duplicates)",
                         "  round trip ms: p50 \(ms(50))  p90 \(ms(90))  p99 \(ms(99))  p99.9 \(ms(99.9))  max \(ms(100))"]
            if !errors.isEmpty { lines.append("  errors: " + errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")) }
            if errors["connection rate_limited"] != nil {
                lines.append("  calls were dropped by the server's --max-client-ops (\(fmt(o.rate / Double(o.clients), 1)) calls/s per client): use more --clients")
            }
            return lines.joined(separator: "\n")
        }

        public func json(_ o: Options) -> String {
            let us = { (p: Double) in latency.value(atPercentile: p) }
            let errs = errors.sorted { $0.key < $1.key }.map { "\(JSON.quoted($0.key)):\($0.value)" }.joined(separator: ",")
            return "{\"scenario\":\"rpc\",\"clients\":\(o.clients),\"rate\":\(o.rate),\"duration\":\(o.duration),\"sent\":\(sent),\"answered\":\(answered),"
                + "\"unanswered\":\(unanswered),\"duplicates\":\(duplicates),\"errors\":{\(errs)},\"seconds\":\(seconds),"
                + "\"p50_us\":\(us(50)),\"p90_us\":\(us(90)),\"p99_us\":\(us(99)),\"p999_us\":\(us(99.9)),\"max_us\":\(us(100))}"
        }
    }

    let options: Options
    private var pool: EpollClientPool!
    private var open = Set<Int>()
    private var sentAt: [Int: UInt64] = [:]
    private var result = Result()
    private var startedMicros: UInt64 = 0
    private var next = 0
    private let padding: String
    private let done = StopFlag()
    private let finished = Mailbox<Result>()

    public init(options: Options) {
        self.options = options
        padding = String(repeating: "x", count: max(0, options.size - 30))
    }

    public func run() throws -> Result {
        guard let target = WebSocketClientPool.Target(url: options.url) else { throw ClientError("bad --url \(options.url)") }
        let workerReady = Mailbox<String?>()
        let worker = OSThread(name: "bench-rpc-worker") { [self] in echoWorker(ready: workerReady) }
        if let failure = workerReady.take(timeoutMillis: 10_000).first ?? "the worker did not start" {
            done.set()
            worker.join()
            throw ClientError("RPC worker: \(failure)")
        }
        pool = EpollClientPool(maxConnections: options.clients, handler: self)
        try pool.start()
        let clients = OSThread(name: "bench-rpc-clients") { [self] in
            for id in 0..<options.clients { pool.connect(id, to: target) }
            pool.run()
        }
        // The pacer wakes the client thread every ms; it sends the calls due by then.
        let pacer = OSThread(name: "bench-rpc-pacer") { [self] in
            while !done.isSet { usleep(1_000); pool.wakeUp() }
        }
        let outcome = finished.take(timeoutMillis: Int((options.duration + 60) * 1000)).first
        done.set()
        pool.requestStop()
        pacer.join()
        clients.join()
        worker.join()
        guard let outcome else { throw ClientError("the run did not finish (were the clients refused?)") }
        return outcome
    }

    // MARK: The clients (their thread)

    public func clientOpened(_ id: Int) {
        open.insert(id)
        if open.count == options.clients && startedMicros == 0 {
            startedMicros = monotonicMicros()
            if !options.quiet { printProgress("\(options.clients) clients connected; calling at \(Int(options.rate))/s") }
        }
    }

    public func clientClosed(_ id: Int, code: UInt16?, error: String?) {
        open.remove(id)
        if startedMicros == 0 && !done.isSet {
            finished.post(result)
            if !options.quiet { printProgress("client \(id) could not connect: \(error ?? "closed \(code ?? 0)")") }
        }
    }

    public func clientPoolWokenUp() {
        guard startedMicros > 0, !done.isSet else { return }
        let now = monotonicMicros()
        let elapsed = Double(now - startedMicros) / 1e6
        if elapsed < options.duration {
            let due = Int(elapsed * options.rate)
            while next < due {
                let id = next
                next += 1
                let client = id % options.clients
                guard open.contains(client) else { continue }
                sentAt[id] = monotonicMicros()
                result.sent += 1
                pool.sendText(client, Array(#"{"op":"rpc","id":"\#(id)","method":"bench.echo","data":{"p":"\#(padding)"}}"#.utf8))
            }
        } else if sentAt.isEmpty || elapsed >= options.duration + 5 {
            result.unanswered = sentAt.count
            result.seconds = min(elapsed, options.duration)
            done.set()
            finished.post(result)
        }
    }

    public func clientReceived(_ id: Int, message: [UInt8]) {
        let now = monotonicMicros()
        for line in message.split(separator: UInt8(ascii: "\n")) {
            guard let frame = try? JSON.parse(Array(line)), let type = frame["type"]?.stringValue else { continue }
            guard let key = frame["id"]?.stringValue, let call = Int(key) else {
                // An error about the connection, not one call: frames over --max-client-ops are
                // dropped with one rate_limited notice a second.
                if type == "error" { result.errors["connection " + (frame["code"]?.stringValue ?? "error"), default: 0] += 1 }
                continue
            }
            guard let at = sentAt.removeValue(forKey: call) else {
                result.duplicates += 1
                continue
            }
            if type == "rpc_result" {
                result.answered += 1
                result.latency.record(now - at)
            } else {
                result.errors[frame["code"]?.stringValue ?? type, default: 0] += 1
            }
        }
    }

    // MARK: The echo worker (its thread)

    private func echoWorker(ready: Mailbox<String?>) {
        let amqp: AMQPConnection
        do {
            amqp = AMQPConnection(endpoint: try AMQPEndpoint(url: options.amqpURL))
            try amqp.connect()
            try amqp.declareExchange(options.exchange + ".rpc", type: "topic", durable: true)
            let queue = try amqp.declareQueue("", durable: false, exclusive: true, autoDelete: true)
            try amqp.bindQueue(queue, exchange: options.exchange + ".rpc", routingKey: "bench.*")
            try amqp.consume(queue: queue, noAck: true)
        } catch {
            ready.post("\(error)")
            return
        }
        ready.post(nil)
        do throws(AMQPError) {
            while !done.isSet {
                guard case let .delivery(d) = try amqp.nextEvent(timeoutMillis: 100), let replyTo = d.properties.replyTo else { continue }
                try amqp.publish(exchange: "", routingKey: replyTo, body: d.body,
                                 properties: AMQPProperties(contentType: "application/json", correlationID: d.properties.correlationID))
            }
        } catch {
            if !options.quiet { printProgress("RPC worker: \(error)") }
        }
        amqp.close()
    }

    private func printProgress(_ line: String) {
        printError("herald bench rpc: \(line)")
    }
}
