import ArgumentParser
import HeraldAMQP
import HeraldCore
#if canImport(Glibc)
import Glibc
#endif

struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish one message to a channel through RabbitMQ, with a publisher confirm.")

    @Argument(help: "The channel (the routing key).") var channel: String
    @Argument(help: "The message; standard input when omitted.") var text: String?
    @Flag(help: "Send as application/json (the body must be valid JSON).") var json = false
    @Option(help: "The message_id (publishing the same id again is stored once).") var id: String?
    @Option(help: "RabbitMQ URL. (HERALD_AMQP_URL)") var amqpURL = "amqp://guest:guest@127.0.0.1:5672/"
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
        let connection = AMQPConnection(endpoint: try AMQPEndpoint(url: amqpURL))
        try connection.connect()
        defer { connection.close() }
        try connection.declareExchange(exchange, type: "fanout", durable: true)
        try connection.confirmSelect()
        try connection.publish(exchange: exchange, routingKey: channel, body: body,
                               properties: AMQPProperties(contentType: json ? "application/json" : "text/plain; charset=utf-8",
                                                          messageID: id, persistent: true))
        let refused = try connection.waitForConfirms(timeoutMillis: 10_000)
        if !refused.isEmpty {
            print("RabbitMQ refused the message")
            throw ExitCode(1)
        }
        print("published to \(channel)" + (id.map { " (id \($0))" } ?? ""))
    }
}

