/// Options that differ by kind of channel (`namespaces:` in the config file, PROTOCOL.md
/// "Namespaces"): each namespace names channel patterns and overrides some of the server-wide
/// settings for the channels they match. What it leaves unset keeps the server-wide value.
///
/// A channel belongs to its most specific matching namespace: an exact name beats any pattern,
/// a longer `prefix*` beats a shorter one, and `*` (if a namespace has it) is the default. Two
/// namespaces may not claim the same pattern, so the choice is never ambiguous.
public struct ChannelNamespace: Equatable, Sendable {
    public var name: String
    public var patterns: [String]
    /// Messages kept in the channel's Redis list (`--history-size`).
    public var historySize: Int?
    /// Seconds the history is kept after its last message, 0: until trimmed (`--history-ttl`).
    public var historyTTLSeconds: Int?
    /// Readable without a token (`--anonymous-channels`).
    public var anonymous: Bool?
    /// Subscribers are members of the channel's presence (`--presence-channels`).
    public var presence: Bool?
    /// Messages a subscriber may fall behind before it is closed with 4008 (`--client-backlog`).
    public var clientBacklog: Int?
    /// Whether `POST /api/publish/{channel}` is accepted at all (publishing through RabbitMQ is
    /// not affected). Default true.
    public var httpPublish: Bool?
    /// The API keys that may publish to these channels over HTTP (instead of every `--api-key`).
    public var publishKeys: [String]?
    /// Subscribing needs a subscription token (`required`), or may carry one (`optional`).
    public var subscribeToken: SubscribeTokenRule?
    /// `notify:{sub}`: the channel whose name has the connection token's `sub` in place of
    /// `{sub}` is readable by that connection alone, with no channel in the token.
    public var userChannel: String?
    /// Subscribing asks the application (`POST` there with the user, client and channel): 200
    /// allows it, 401/403 refuses it.
    public var subscribeProxyURL: String?
    /// Who may publish to these channels from a WebSocket (`--client-publish`).
    public var clientPublish: ClientPublishRule?

    public enum SubscribeTokenRule: String, Equatable, Sendable { case required, optional }

    /// Whether `channel` is the user channel of `sub`.
    public func isUserChannel(_ channel: String, of sub: String) -> Bool {
        guard let template = userChannel, !sub.isEmpty, let range = template.firstRange(of: "{sub}") else { return false }
        return template[..<range.lowerBound] + sub + template[range.upperBound...] == channel
    }

    public init(name: String, patterns: [String]) {
        self.name = name
        self.patterns = patterns
    }

    /// The settings a namespace may set, as the config file spells them.
    public static let settingNames = ["history-size", "history-ttl", "anonymous", "presence", "client-backlog",
                                      "http-publish", "publish-keys", "subscribe-token", "user-channel", "subscribe-proxy-url", "client-publish"]

    /// The most specific namespace with a pattern matching `channel`, or nil.
    public static func of(_ channel: String, in namespaces: [ChannelNamespace]) -> ChannelNamespace? {
        var best: ChannelNamespace?
        var bestRank = -1
        for namespace in namespaces {
            for pattern in namespace.patterns where ChannelPattern.matches(pattern, channel) {
                let rank = specificity(pattern)
                if rank > bestRank { best = namespace; bestRank = rank }
            }
        }
        return best
    }

    /// Higher is more specific: an exact name above every pattern, then the longer prefix.
    static func specificity(_ pattern: String) -> Int {
        pattern.hasSuffix("*") ? pattern.utf8.count - 1 : Int.max
    }

    /// Why `namespaces` cannot be used together (or with the server's `--history-meta-ttl`),
    /// or nil.
    public static func problem(_ namespaces: [ChannelNamespace], historyMetaTTLSeconds: Int) -> String? {
        var owner: [String: String] = [:]
        for namespace in namespaces {
            if namespace.patterns.isEmpty { return "namespace \(namespace.name): no pattern" }
            for pattern in namespace.patterns {
                if let p = ChannelPattern.problem(pattern) { return "namespace \(namespace.name): pattern \(pattern): \(p)" }
                if let other = owner[pattern] { return "namespace \(namespace.name): pattern \(pattern) is also in namespace \(other)" }
                owner[pattern] = namespace.name
            }
            if let n = namespace.historySize, n < 1 { return "namespace \(namespace.name): history-size must be at least 1" }
            if let n = namespace.historyTTLSeconds {
                if n < 0 { return "namespace \(namespace.name): history-ttl must not be negative" }
                if historyMetaTTLSeconds != 0 && (n == 0 || n > historyMetaTTLSeconds) {
                    return "namespace \(namespace.name): history-ttl must be 1 to --history-meta-ttl (\(historyMetaTTLSeconds)): a history must not outlive its epoch"
                }
            }
            if let n = namespace.clientBacklog, n < 1 { return "namespace \(namespace.name): client-backlog must be at least 1" }
            if let template = namespace.userChannel {
                let parts = template.components("{sub}")
                guard parts.count == 2 else { return "namespace \(namespace.name): user-channel must hold {sub} once (notify:{sub})" }
                let sample = parts[0] + "u" + parts[1]
                guard ChannelName.isValid(sample), namespace.patterns.contains(where: { ChannelPattern.matches($0, sample) }) else {
                    return "namespace \(namespace.name): user-channel \(template) must name channels of its own patterns"
                }
            }
            if let url = namespace.subscribeProxyURL, !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                return "namespace \(namespace.name): subscribe-proxy-url must be an http:// or https:// URL"
            }
            if let keys = namespace.publishKeys, keys.contains(where: \.isEmpty) {
                return "namespace \(namespace.name): publish-keys must not be empty strings"
            }
        }
        return nil
    }
}

extension HeraldConfig {
    /// The namespace of `channel`, if any (see `ChannelNamespace.of`).
    public func namespace(of channel: String) -> ChannelNamespace? {
        namespaces.isEmpty ? nil : ChannelNamespace.of(channel, in: namespaces)
    }

    public func historySize(of channel: String) -> Int { namespace(of: channel)?.historySize ?? historySize }
    public func historyTTLSeconds(of channel: String) -> Int { namespace(of: channel)?.historyTTLSeconds ?? historyTTLSeconds }
    public func clientBacklog(of channel: String) -> Int { namespace(of: channel)?.clientBacklog ?? clientBacklog }

    /// Readable without a token: the namespace says so, else `anonymousPatterns`.
    public func isAnonymous(_ channel: String) -> Bool {
        namespace(of: channel)?.anonymous ?? ChannelPattern.matches(any: anonymousPatterns, channel)
    }

    /// The largest history any channel keeps (for sizing what a ring may hold).
    public var largestHistorySize: Int { namespaces.compactMap(\.historySize).reduce(historySize, max) }
    /// The largest backlog any channel allows.
    public var largestClientBacklog: Int { namespaces.compactMap(\.clientBacklog).reduce(clientBacklog, max) }
    /// Whether some channel may have presence (the presence worker runs only then).
    public var anyPresence: Bool { !presencePatterns.isEmpty || namespaces.contains { $0.presence == true } }
}

extension String {
    /// The parts between the occurrences of `separator`.
    func components(_ separator: String) -> [String] {
        var out: [String] = []
        var rest = Substring(self)
        while let r = rest.firstRange(of: separator) {
            out.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        out.append(String(rest))
        return out
    }
}
