import ArgumentParser
import HeraldBench
#if canImport(Glibc)
import Glibc
#endif

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load-test fan-out: many WebSocket clients, a paced publisher, latency and correctness.",
        discussion: """
        Presets: latency (fixed load), throughput (rising rate until loss or p99 over --p99-bound), \
        connections (idle clients; memory per connection with --server-pid), storm (history for clients \
        joining at once, then every client drops and resumes), sequencer (RabbitMQ → Redis alone: the \
        server is paused with SIGSTOP while --count messages queue, then timed as it drains them). Every message carries its send time and a \
        number; each client checks lost, duplicated and out-of-order messages. --peer drives any WebSocket \
        server that sends the published body as the message (Nchan), with --url containing {channel}. \
        Every option also reads HERALD_<OPTION> (HERALD_AMQP_URL, HERALD_EXCHANGE, ...); the command line wins.
        """)

    @Argument(help: "latency, throughput, connections, storm or sequencer.") var scenario: String = "latency"
    @Option(help: "WebSocket URL of a node (repeat for a cluster). Herald: ws://host:port/ws. Peer: with {channel}.") var url: [String] = ["ws://127.0.0.1:8080/ws"]
    @Flag(help: "Drive a peer server (Nchan): numbers and send times are read from the message body.") var peer = false
    @Option(help: "Client connections.") var clients = 1_000
    @Option(help: "Channels the clients are spread over.") var channels = 1
    @Option(help: "Connections opened per second (default: all at once).") var ramp: Int?
    @Option(help: "Messages per second (the starting rate for throughput).") var rate = 100.0
    @Option(help: "Highest rate the throughput preset tries.") var maxRate = 5_000.0
    @Option(help: "Message body size in bytes.") var size = 100
    @Option(help: "Seconds of publishing (latency; live phase of storm).") var duration = 10.0
    @Option(help: "Seconds per step of the throughput preset.") var stepSeconds = 4.0
    @Option(help: "p99 bound in ms for a clean throughput step.") var p99Bound = 50.0
    @Option(help: "Messages of history per channel before the storm.") var history = 100
    @Option(help: "RabbitMQ URL the publisher uses.") var amqpURL = "amqp://guest:guest@127.0.0.1:5672/"
    @Option(help: "Exchange the publisher sends to.") var exchange = "herald"
    @Option(help: "Publish over HTTP instead of AMQP: http://host:port/api/publish/{channel} (Nchan: its publisher location).") var publishURL: String?
    @Option(help: "API key for --publish-url.") var apiKey: String?
    @Option(help: "PID of the server, for its CPU and resident memory.") var serverPID: Int32?
    @Option(help: "Channel name prefix.") var channelPrefix = "bench"
    @Option(help: "Herald: websocket, or sse (each client a Server-Sent Events stream on the node's /sse; epoll engine).") var transport = "websocket"
    @Flag(help: "Subscribe with presence (the server needs --presence-channels for the channels): report when every client's member list was complete and how many presence/join/leave frames each got.") var presence = false
    @Flag(help: "Print one JSON object with the results on standard output.") var json = false
    @Option(help: "Write a self-contained HTML report (latency plot, throughput over time).") var report: String?
    @Flag(help: "No progress lines.") var quiet = false
    @Option(help: "sequencer preset: messages to queue while the server is paused.") var count = 100_000
    @Option(help: "sequencer preset: how many drains of --count to measure; the result is their median.") var drains = 1
    @Option(help: "Herald's metrics, http://host:port/metrics: the sequencer preset times its drain with them; the others report the server's writes per second, messages per write and coalescing window.") var metricsURL: String?
    @Option(help: "The generator's WebSocket client: epoll (Herald's own, reads each frame in one copy) or lws (libwebsockets 4.1's client on poll(), which parses payload a byte at a time).") var clientEngine = "epoll"
    @Option(help: "epoll engine: read in rounds at most every this many µs, so the clients' wake-ups do not tax the server's sends on a shared machine; adds at most this to a latency. 0: wake for every ready socket.") var readRoundUs = 500

    func validate() throws {
        guard Scenario(rawValue: scenario) != nil else { throw ValidationError("scenario must be latency, throughput, connections, storm or sequencer") }
        guard clients >= 1, channels >= 1, channels <= clients else { throw ValidationError("need clients >= channels >= 1") }
        guard drains >= 1 else { throw ValidationError("--drains must be at least 1") }
        guard rate > 0, size >= 40 else { throw ValidationError("--rate must be > 0 and --size at least 40 bytes") }
        if peer { guard url.allSatisfy({ $0.contains("{channel}") }) else { throw ValidationError("--peer needs --url with {channel}") } }
        if peer && publishURL == nil { throw ValidationError("--peer needs --publish-url") }
        guard transport == "websocket" || transport == "sse" else { throw ValidationError("--transport must be websocket or sse") }
        if transport == "sse" && (peer || clientEngine != "epoll" || !url.allSatisfy({ $0.hasPrefix("ws://") })) {
            throw ValidationError("--transport sse needs Herald, ws:// URLs (their /ws becomes /sse) and --client-engine epoll")
        }
        if presence && (peer || scenario != Scenario.latency.rawValue) { throw ValidationError("--presence needs Herald and the latency preset") }
        guard ClientEngine(rawValue: clientEngine) != nil else { throw ValidationError("--client-engine must be epoll or lws") }
    }

    func run() throws {
        var o = BenchOptions()
        o.scenario = Scenario(rawValue: scenario)!
        o.kind = peer ? .peer : .herald
        o.urls = url
        o.clients = clients
        o.channels = channels
        o.ramp = ramp
        o.rate = rate
        o.maxRate = maxRate
        o.size = size
        o.duration = duration
        o.stepSeconds = stepSeconds
        o.p99BoundMillis = p99Bound
        o.history = history
        o.route = publishURL.map { .http(url: $0, apiKey: apiKey) } ?? .amqp(url: amqpURL, exchange: exchange)
        o.serverPID = serverPID
        o.channelPrefix = channelPrefix
        o.quiet = quiet
        o.count = count
        o.drains = drains
        o.metricsURL = metricsURL
        o.engine = ClientEngine(rawValue: clientEngine)!
        o.presence = presence
        o.eventStream = transport == "sse"
        o.readRoundMicros = UInt32(clamping: max(0, readRoundUs))
        raiseFileLimit()
        let result: BenchResult
        do {
            result = try BenchRunner(options: o).run()
        } catch {
            printError("herald bench: \(error)")
            throw ExitCode(1)
        }
        if let report {
            guard let f = fopen(report, "w") else { throw ValidationError("cannot write \(report)") }
            fputs(result.html(), f)
            fclose(f)
        }
        if json { print(result.json()) } else { print(result.summary()) }
    }
}

