/// The generator's WebSocket client.
public enum ClientEngine: String, CaseIterable, Sendable {
    /// Herald's own client on epoll: a frame's payload is taken in one copy.
    case epoll
    /// libwebsockets' client on poll(): parses payload a byte at a time (lws 4.1).
    case lws
}

public enum Scenario: String, CaseIterable, Sendable {
    case latency, throughput, connections, storm, sequencer
    /// The throughput preset's rising rate over many channels with a few subscribers each (by
    /// default every client on its own channel), publishes round-robin over the channels.
    case manyChannels = "many-channels"

    /// Presets that raise the rate step by step until a step is not clean.
    var risesRate: Bool { self == .throughput || self == .manyChannels }
}

public struct BenchOptions: Sendable {
    public var scenario = Scenario.latency
    public var kind = ServerKind.herald
    /// Herald: ws://host:port/ws (several for a cluster). Peer: URLs with `{channel}`.
    public var urls: [String] = ["ws://127.0.0.1:8080/ws"]
    public var clients = 1_000
    public var channels = 1
    /// Connections per second; nil: all at once.
    public var ramp: Int?
    public var rate = 100.0
    public var maxRate = 5_000.0
    public var size = 100
    public var duration = 10.0
    public var stepSeconds = 4.0
    public var p99BoundMillis = 50.0
    public var history = 100
    public var route = LoadPublisher.Route.amqp(url: "amqp://guest:guest@127.0.0.1:5672/", exchange: "herald")
    public var serverPID: Int32?
    public var channelPrefix = "bench"
    /// Channels named `<prefix>-<n>` (no run id), shared with other runs.
    public var sameChannels = false
    public var quiet = false
    /// sequencer preset: messages to queue, and where Herald's /metrics are.
    public var count = 100_000
    /// sequencer preset: drains measured; the result is their median (one 2 s drain is noisy).
    public var drains = 1
    public var metricsURL: String?
    public var engine = ClientEngine.epoll
    /// epoll engine: the clients read in rounds at most this often (µs), so that on a machine
    /// shared with the server their wake-ups do not tax every send; adds at most this to a latency.
    public var readRoundMicros: UInt32 = 500
    /// Clients over Server-Sent Events (`/sse`) instead of WebSocket (epoll engine only).
    public var eventStream = false
    /// Clients offer permessage-deflate and inflate what comes compressed (epoll engine only).
    public var permessageDeflate = false
    /// A JSON object every published body is made from (`Payload`), instead of padding to `size`.
    public var bodyTemplate: [UInt8]?
    /// Subscribe with presence (`&presence=true`): count the member-list frames each client gets.
    public var presence = false
    /// HTTP publishing: keep-alive connections, requests pipelined on each.
    public var publishConnections = 8
    /// Other processes whose CPU each step reports (RabbitMQ, Redis), by name.
    public var watchPIDs: [(name: String, pid: Int32)] = []
    public init() {}
}

/// One step of the throughput preset.
