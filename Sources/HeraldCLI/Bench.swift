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
        many-channels (throughput over many channels of a few clients each: by default every client on \
        its own channel, 10 s steps from 1,000 msg/s, p99 bound 100 ms, persistent AMQP publishes), \
        connections (idle clients; memory per connection with --server-pid), storm (history for clients \
        joining at once, then every client drops and resumes), sequencer (RabbitMQ → Redis alone: the \
        server is paused with SIGSTOP while --count messages queue, then timed as it drains them), rpc (client RPCs \
        round trip: --clients connections call at --rate through <--exchange>.rpc, answered by an echo worker in \
        this process; the server needs --rpc-methods 'bench.*'). Every message carries its send time and a \
        number; each client checks lost, duplicated and out-of-order messages. --peer drives any WebSocket \
        server that sends the published body as the message (Nchan), with --url containing {channel}. \
        Every option also reads HERALD_<OPTION> (HERALD_AMQP_URL, HERALD_EXCHANGE, ...); the command line wins.
        """)

    @Argument(help: "latency, throughput, many-channels, connections, storm, sequencer or rpc.") var scenario: String = "latency"
    @Option(help: "WebSocket URL of a node (repeat for a cluster). Herald: ws://host:port/ws. Peer: with {channel}.") var url: [String] = ["ws://127.0.0.1:8080/ws"]
    @Flag(help: "Drive a peer server (Nchan): numbers and send times are read from the message body.") var peer = false
    @Option(help: "Client connections.") var clients = 1_000
    @Option(help: "Channels the clients are spread over (default 1; many-channels: one per client).") var channels: Int?
    @Option(help: "Connections opened per second (default: all at once).") var ramp: Int?
    @Option(help: "Messages per second (the starting rate for throughput; default 100, many-channels 1000).") var rate: Double?
    @Option(help: "Highest rate the throughput preset tries.") var maxRate = 5_000.0
    @Option(help: "Message body size in bytes.") var size = 100
    @Option(help: "Seconds of publishing (latency; live phase of storm).") var duration = 10.0
    @Option(help: "Seconds per step of the throughput presets (default 4; many-channels 10).") var stepSeconds: Double?
    @Option(help: "p99 bound in ms for a clean throughput step (default 50; many-channels 100). A clean step also lost nothing and kept the publisher within 100 ms of its schedule.") var p99Bound: Double?
    @Option(help: "Messages of history per channel before the storm.") var history = 100
    @Option(help: "RabbitMQ URL the publisher uses.") var amqpURL = "amqp://guest:guest@127.0.0.1:5672/"
    @Option(help: "Exchange the publisher sends to.") var exchange = "herald"
    @Option(help: "Publish over HTTP instead of AMQP: http://host:port/api/publish/{channel} (Nchan: its publisher location).") var publishURL: String?
    @Option(help: "API key for --publish-url.") var apiKey: String?
    @Option(help: "HTTP publishing: keep-alive connections, requests pipelined on each (a channel always on the same one).") var publishConnections = 8
    @Option(help: "NAME=PID of another process whose CPU each throughput step reports (RabbitMQ's beam.smp, redis-server); repeat.") var watchPid: [String] = []
    @Option(help: "PID of the server, for its CPU and resident memory.") var serverPID: Int32?
    @Option(help: "Channel name prefix.") var channelPrefix = "bench"
    @Flag(help: "Name the channels <prefix>-<n>, without this run's id, so that two runs share them (one publishing on many channels through one node, one watching a few of them on another: the share of live traffic a node receives).") var sameChannels = false
    @Option(help: "Herald: websocket, or sse (each client a Server-Sent Events stream on the node's /sse; epoll engine).") var transport = "websocket"
    @Flag(help: "Subscribe with presence (the server needs --presence-channels for the channels): report when every client's member list was complete and how many presence/join/leave frames each got.") var presence = false
    @Flag(help: "The clients offer permessage-deflate (RFC 7692) and inflate what comes compressed; the report gives the bytes read over the wire per delivery (epoll engine).") var permessageDeflate = false
    @Option(help: "A JSON object file every published body is made from (the bench's \"t\" and \"n\" fields put first), instead of bodies padded to --size: real traffic's shape, for compressed runs (bench/ticker.json is a 1 KB price-ticker update).") var bodyFile: String?
    @Flag(help: "Print one JSON object with the results on standard output.") var json = false
    @Option(help: "Write a self-contained HTML report (latency plot, throughput over time).") var report: String?
    @Flag(help: "No progress lines.") var quiet = false
    @Option(help: "sequencer preset: messages to queue while the server is paused.") var count = 100_000
    @Option(help: "sequencer preset: how many drains of --count to measure; the result is their median.") var drains = 1
    @Option(help: "Herald's metrics, http://host:port/metrics: the sequencer preset times its drain with them; the others report the server's writes per second, messages per write and coalescing window.") var metricsURL: String?
    @Option(help: "The generator's WebSocket client: epoll (Herald's own, reads each frame in one copy) or lws (libwebsockets 4.1's client on poll(), which parses payload a byte at a time).") var clientEngine = "epoll"
    @Option(help: "epoll engine: read in rounds at most every this many µs, so the clients' wake-ups do not tax the server's sends on a shared machine; adds at most this to a latency. 0: wake for every ready socket.") var readRoundUs = 500

    func validate() throws {
        if scenario == "rpc" {
            guard clients >= 1, (rate ?? 1) > 0, duration > 0, size >= 30 else { throw ValidationError("rpc: need --clients >= 1, --rate > 0, --duration > 0, --size >= 30") }
            return
        }
        guard let preset = Scenario(rawValue: scenario) else { throw ValidationError("scenario must be latency, throughput, many-channels, connections, storm, sequencer or rpc") }
        let channels = channels ?? (preset == .manyChannels ? clients : 1)
        guard clients >= 1, channels >= 1, channels <= clients else { throw ValidationError("need clients >= channels >= 1") }
        guard publishConnections >= 1 else { throw ValidationError("--publish-connections must be at least 1") }
        for w in watchPid {
            let parts = w.split(separator: "=")
            guard parts.count == 2, Int32(parts[1]) != nil else { throw ValidationError("--watch-pid takes NAME=PID, not \(w)") }
        }
        guard drains >= 1 else { throw ValidationError("--drains must be at least 1") }
        guard (rate ?? 1) > 0, size >= 40 else { throw ValidationError("--rate must be > 0 and --size at least 40 bytes") }
        if peer { guard url.allSatisfy({ $0.contains("{channel}") }) else { throw ValidationError("--peer needs --url with {channel}") } }
        if peer && publishURL == nil { throw ValidationError("--peer needs --publish-url") }
        guard transport == "websocket" || transport == "sse" else { throw ValidationError("--transport must be websocket or sse") }
        if permessageDeflate && (clientEngine != "epoll" || transport != "websocket") {
            throw ValidationError("--permessage-deflate needs --client-engine epoll and --transport websocket")
        }
        if transport == "sse" && (peer || clientEngine != "epoll" || !url.allSatisfy({ $0.hasPrefix("ws://") })) {
            throw ValidationError("--transport sse needs Herald, ws:// URLs (their /ws becomes /sse) and --client-engine epoll")
        }
        if presence && (peer || scenario != Scenario.latency.rawValue) { throw ValidationError("--presence needs Herald and the latency preset") }
        guard ClientEngine(rawValue: clientEngine) != nil else { throw ValidationError("--client-engine must be epoll or lws") }
    }

    func run() throws {
        if scenario == "rpc" { return try runRPC() }
        var o = BenchOptions()
        o.scenario = Scenario(rawValue: scenario)!
        let many = o.scenario == .manyChannels
        o.kind = peer ? .peer : .herald
        o.urls = url
        o.clients = clients
        o.channels = channels ?? (many ? clients : 1)
        o.ramp = ramp
        o.rate = rate ?? (many ? 1_000 : 100)
        o.maxRate = maxRate
        o.size = size
        o.duration = duration
        o.stepSeconds = stepSeconds ?? (many ? 10 : 4)
        o.p99BoundMillis = p99Bound ?? (many ? 100 : 50)
        o.publishConnections = publishConnections
        o.watchPIDs = watchPid.map { w in
            let parts = w.split(separator: "=")
            return (String(parts[0]), Int32(parts[1])!)
        }
        o.history = history
        o.route = publishURL.map { .http(url: $0, apiKey: apiKey) } ?? .amqp(url: amqpURL, exchange: exchange)
        o.serverPID = serverPID
        o.channelPrefix = channelPrefix
        o.sameChannels = sameChannels
        o.quiet = quiet
        o.count = count
        o.drains = drains
        o.metricsURL = metricsURL
        o.engine = ClientEngine(rawValue: clientEngine)!
        o.presence = presence
        o.eventStream = transport == "sse"
        o.permessageDeflate = permessageDeflate
        if let bodyFile {
            let bytes: [UInt8]
            do { bytes = Array(try readTextFile(bodyFile).utf8) } catch { throw ValidationError("--body-file \(bodyFile): \(error)") }
            guard bytes.first(where: { $0 > 0x20 }) == UInt8(ascii: "{"), bytes.last(where: { $0 > 0x20 }) == UInt8(ascii: "}") else {
                throw ValidationError("--body-file \(bodyFile): expected a file holding a JSON object")
            }
            o.bodyTemplate = bytes
            o.size = Payload.make(sentMicros: 0, n: 0, size: 0, template: bytes).count
        }
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

    func runRPC() throws {
        var o = RPCBench.Options()
        o.url = url[0]
        o.amqpURL = amqpURL
        o.exchange = exchange
        o.clients = clients
        o.rate = rate ?? 1_000
        o.duration = duration
        o.size = size
        o.quiet = quiet
        raiseFileLimit()
        let result: RPCBench.Result
        do {
            result = try RPCBench(options: o).run()
        } catch {
            printError("herald bench rpc: \(error)")
            throw ExitCode(1)
        }
        print(json ? result.json(o) : result.summary(o))
    }
}

