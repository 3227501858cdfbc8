import ArgumentParser
import HeraldAMQP
import HeraldCore
import HeraldRuntime
#if canImport(Glibc)
import Glibc
#endif

struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish one message to a channel through RabbitMQ, with a publisher confirm.")

    @Argument(help: "The channel (the routing key).") var channel: String
    @Argument(help: "The message; standard input when omitted.") var text: String?
    @Flag(help: "Send as application/json (the body must be valid JSON).") var json = false
    @Option(help: "The message_id (publishing the same id again is stored once). Default: a fresh random id, so a retry on another node is stored once too.") var id: String?
    @Option(help: "RabbitMQ URL (default \(HeraldConfig.defaultAMQPURL)); repeat it with the nodes of a cluster: the first that answers is used, and a publish that fails there is retried on the next. (HERALD_AMQP_URL, comma-separated)") var amqpURL: [String] = []
    @Option(help: "The exchange. (HERALD_EXCHANGE)") var exchange = "herald"

    func run() throws {
        guard ChannelName.isValid(channel) else {
            throw ValidationError("\(ChannelName.problem(channel) ?? "bad channel")")
        }
        var body: [UInt8]
        if let text {
            body = Array(text.utf8)
        } else {
            body = []
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let n = read(0, &buffer, buffer.count)
                if n <= 0 { break }
                body.append(contentsOf: buffer[0..<n])
            }
        }
        if json {
            do { _ = try JSON.minify(body) } catch { throw ValidationError("body is not valid JSON: \(error.message)") }
        }
        let cluster = try AMQPCluster(urls: amqpURL.isEmpty ? [HeraldConfig.defaultAMQPURL] : amqpURL)
        let messageID = id ?? "cli-\(randomHex(bytes: 8))"
        let properties = AMQPProperties(contentType: json ? "application/json" : "text/plain; charset=utf-8",
                                        messageID: messageID, persistent: true)
        // A node lost between the publish and its confirm: the same message (same id, stored
        // once) goes to the next node; every node gets one try.
        var failures: [String] = []
        for _ in 0..<cluster.endpoints.count {
            let refused: Bool
            do throws(AMQPError) {
                let connection = try cluster.connect()
                defer { connection.close() }
                try connection.declareExchange(exchange, type: "fanout", durable: true)
                try connection.confirmSelect()
                try connection.publish(exchange: exchange, routingKey: channel, body: body, properties: properties)
                refused = !(try connection.waitForConfirms(timeoutMillis: 10_000)).isEmpty
            } catch {
                failures.append("\(error)")
                cluster.lost()
                continue
            }
            if refused {
                print("RabbitMQ refused the message")
                throw ExitCode(1)
            }
            print("published to \(channel) (id \(messageID))")
            return
        }
        throw ValidationError("not published: \(failures.joined(separator: "; "))")
    }
}

