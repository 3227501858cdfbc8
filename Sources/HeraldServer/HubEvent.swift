import HeraldAMQP
import HeraldRuntime
import HeraldCore
import HeraldRedis
import Logging

/// What other threads send to a WebSocket service thread.
enum HubEvent: Sendable {
    /// Sequenced messages of channels this thread watches, from Redis PUB/SUB, in order, gaps
    /// already repaired.
    case live([SequencedMessage])
    /// A channel's sequence broke and could not be repaired: its subscribers must resume.
    case broken(channel: String)
    /// A history read answering the subscribe requests `requests`.
    case history(channel: String, requests: [UInt64], snapshot: HistorySnapshot)
    /// An HTTP history read (token of the waiting request).
    case httpHistory(token: UInt64, result: Result<HistorySnapshot, RedisError>, since: UInt64, limit: Int)
    /// An HTTP presence read (token of the waiting request): the member objects.
    case httpPresence(token: UInt64, result: Result<[[UInt8]], RedisError>)
    /// A server API command (from `<exchange>.control`) for this thread's connections.
    case control(ServerCommand)
    /// The node registry asks for this thread's subscribers per channel.
    case reportChannels(Mailbox<[String: Int]>)
    /// A subscribe proxy answered (nil: it could not be asked).
    case subscribeProxyAnswer(connection: UInt64, channel: String, allowed: Bool?)
    /// The talk-back worker's answer to a connection's publish or call.
    case talkBack(connection: UInt64, TalkBackAnswer)
}

/// What every worker thread is given: configuration, where its dependencies are, where to report,
/// and when to stop. Subclasses add the thread's own (thread-confined) connections.
class Worker {
    let config: HeraldConfig
    /// The RabbitMQ nodes; each AMQP connection of the worker picks one (`AMQPCluster`).
    let amqpEndpoints: [AMQPEndpoint]
    let redisEndpoint: RedisEndpoint
    /// Set with `--redis-sentinel`: the master is whichever the sentinels name.
    let redisSentinel: RedisSentinelConfig?
    /// Every WebSocket service thread's inbox.
    let hubs: HubInboxes
    let health: Health
    let metrics: Metrics
    let logger: Logger
    let stop: StopFlag
    /// The newest seq of each channel this node has seen handed out.
    let watermarks: Watermarks

    required init(config: HeraldConfig, amqp: [AMQPEndpoint], redis: RedisEndpoint, sentinel: RedisSentinelConfig?, hubs: HubInboxes, health: Health,
                  metrics: Metrics, logger: Logger, stop: StopFlag, watermarks: Watermarks) {
        self.config = config
        self.amqpEndpoints = amqp
        self.redisEndpoint = redis
        self.redisSentinel = sentinel
        self.hubs = hubs
        self.health = health
        self.metrics = metrics
        self.logger = logger
        self.stop = stop
        self.watermarks = watermarks
    }
}

/// Hands events to one service thread and wakes it.
final class HubInbox: Sendable {
    let mailbox = Mailbox<HubEvent>()
    let wake: @Sendable () -> Void
    init(wake: @escaping @Sendable () -> Void) { self.wake = wake }
    func post(_ event: HubEvent) {
        mailbox.post(event)
        wake()
    }
}

/// The inboxes of the node's WebSocket service threads (`--ws-threads`): live messages and broken
/// channels go to the threads that watch the channel, answers only to the thread that asked.
final class HubInboxes: Sendable {
    let all: [HubInbox]
    init(_ all: [HubInbox]) { self.all = all }
    func post(to hub: Int, _ event: HubEvent) {
        all[hub].post(event)
    }
}
