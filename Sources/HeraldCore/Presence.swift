/// Presence: who is subscribed to a channel, the same on every node, resumable like messages.
///
/// A presence channel's changes are a Herald channel of their own, the channel's *presence
/// stream* (`~p:` and the channel's name: `~` is outside the name alphabet, so no client can
/// subscribe to it and no publisher's routing key can name it). Its entries are `join` and
/// `leave` frames, sequenced by the sequencer like messages, kept in a capped Redis list and
/// broadcast through the live exchange; so the ring, the replay and the live gap repair of
/// messages serve presence unchanged, and a client that resumes gets the changes it missed.
///
/// Each node's members reach the sequencer as *changes* (`PresenceChange`) that this node's
/// `PresenceAnnouncer` merges per tick; the sequencer applies them to the channel's member hash
/// in Redis in the same script that sequences them.
public enum PresenceStream {
    public static let prefix = "~p:"

    /// The presence stream of `channel`.
    public static func name(of channel: String) -> String { prefix + channel }

    /// The channel whose presence stream `stream` is, or nil for an ordinary channel.
    public static func channel(of stream: String) -> String? {
        stream.hasPrefix(prefix) ? String(stream.dropFirst(prefix.count)) : nil
    }
}

/// One member: one subscribed connection of a presence channel.
public struct PresenceMember: Equatable, Sendable {
    /// Unique in the cluster: the node instance (random per process start) and the connection id.
    public var client: String
    /// The token's `sub`, or nil for an anonymous connection.
    public var user: String?
    /// The node's `--node-id`.
    public var node: String
    /// The token's `info` claim as compact JSON, if it has one.
    public var info: [UInt8]?

    public init(client: String, user: String?, node: String, info: [UInt8]? = nil) {
        (self.client, self.user, self.node, self.info) = (client, user, node, info)
    }

    /// The client id of connection `id` on the node instance `instance`.
    public static func clientID(instance: String, connection: UInt64) -> String { "\(instance).\(connection)" }

    /// The connection a client id names on node instance `instance`, or nil (another node's, or not an id).
    public static func connection(of client: String, instance: String) -> UInt64? {
        guard let dot = client.lastIndex(of: "."), client[..<dot] == instance else { return nil }
        return UInt64(client[client.index(after: dot)...])
    }

    /// The node instance a client id belongs to.
    public static func instance(ofClient client: String) -> Substring? {
        client.firstIndex(of: ".").map { client[..<$0] }
    }

    /// `{"client":"…","user":"…"|null,"node":"…","info":{…}}`, the member object of every frame.
    public var json: [UInt8] {
        var out = Array(#"{"client":"#.utf8)
        JSON.appendString(client.utf8, to: &out)
        out += Array(#","user":"#.utf8)
        if let user { JSON.appendString(user.utf8, to: &out) } else { out += Array("null".utf8) }
        out += Array(#","node":"#.utf8)
        JSON.appendString(node.utf8, to: &out)
        if let info {
            out += Array(#","info":"#.utf8)
            out += info
        }
        out.append(UInt8(ascii: "}"))
        return out
    }
}

/// One node's change to one channel's members, as it travels to the sequencer (the body of an
/// AMQP message routed to the channel's presence stream). Lines, each a kind byte then fields
/// separated by tabs: `=` first when the change is a *sync* (the listed joins are exactly this
/// instance's members, anything else of it goes), `+client TAB member` a join, `-client` a
/// leave, `!instance` a reap of a dead node instance's members. Client ids and instances have no
/// tab or newline, and member JSON is compact, so nothing needs escaping.
public struct PresenceChange: Equatable, Sendable {
    public var sync = false
    public var joins: [(client: String, member: [UInt8])] = []
    public var leaves: [String] = []
    /// Node instances whose members are removed (the instance's lease must have run out).
    public var reaps: [String] = []

    public init(sync: Bool = false, joins: [(client: String, member: [UInt8])] = [], leaves: [String] = [], reaps: [String] = []) {
        (self.sync, self.joins, self.leaves, self.reaps) = (sync, joins, leaves, reaps)
    }

    public static func == (a: PresenceChange, b: PresenceChange) -> Bool {
        a.sync == b.sync && a.leaves == b.leaves && a.reaps == b.reaps
            && a.joins.map(\.client) == b.joins.map(\.client) && a.joins.map(\.member) == b.joins.map(\.member)
    }

    public var isEmpty: Bool { !sync && joins.isEmpty && leaves.isEmpty && reaps.isEmpty }

    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        if sync { out += Array("=\n".utf8) }
        for client in leaves { out.append(UInt8(ascii: "-")); out += Array(client.utf8); out.append(0x0A) }
        for (client, member) in joins {
            out.append(UInt8(ascii: "+")); out += Array(client.utf8); out.append(0x09); out += member; out.append(0x0A)
        }
        for instance in reaps { out.append(UInt8(ascii: "!")); out += Array(instance.utf8); out.append(0x0A) }
        return out
    }

    /// Decodes a body, or says why it is not a presence change (the sequencer dead-letters it).
    public static func decode(_ body: [UInt8]) -> Result<PresenceChange, EnvelopeError> {
        var change = PresenceChange()
        func bad(_ why: String) -> Result<PresenceChange, EnvelopeError> {
            .failure(EnvelopeError(code: .badPresence, message: why))
        }
        for (i, line) in body.split(separator: 0x0A, omittingEmptySubsequences: true).enumerated() {
            let rest = line.dropFirst()
            switch line.first {
            case UInt8(ascii: "="):
                guard i == 0, rest.isEmpty else { return bad("\"=\" (sync) may only be the first line, alone") }
                change.sync = true
            case UInt8(ascii: "-"):
                guard let client = clientID(rest) else { return bad("line \(i + 1): bad client id") }
                change.leaves.append(client)
            case UInt8(ascii: "+"):
                guard let tab = rest.firstIndex(of: 0x09), let client = clientID(rest[..<tab]) else {
                    return bad("line \(i + 1): a join is +client TAB member")
                }
                let member = Array(rest[rest.index(after: tab)...])
                guard case .object? = try? JSON.parse(member) else { return bad("line \(i + 1): the member is not a JSON object") }
                change.joins.append((client, member))
            case UInt8(ascii: "!"):
                guard let instance = token(rest) else { return bad("line \(i + 1): bad node instance") }
                change.reaps.append(instance)
            default:
                return bad("line \(i + 1): unknown kind")
            }
        }
        if change.isEmpty { return bad("an empty presence change") }
        return .success(change)
    }

    /// `instance.connection`, both non-empty tokens.
    private static func clientID(_ bytes: ArraySlice<UInt8>) -> String? {
        guard let s = token(bytes), let dot = s.firstIndex(of: "."), dot != s.startIndex, s.index(after: dot) != s.endIndex else { return nil }
        return s
    }

    /// 1–64 bytes of the channel-name alphabet.
    private static func token(_ bytes: ArraySlice<UInt8>) -> String? {
        guard !bytes.isEmpty, bytes.count <= 64, bytes.allSatisfy(ChannelName.isAllowed) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The frames a presence subscriber gets.
public enum PresenceFrame {
    /// `{"type":"presence","channel":…,"client":…,"presence_epoch":…,"presence_seq":…,…}`: after a
    /// `subscribed` with `presence: true`, and answering `{"op":"presence"}`. With `members` it is
    /// the whole list at `presence_seq`; without (a resume that lost nothing) the `replay` join and
    /// leave frames that follow bring the client's own list up to `presence_seq`.
    public static func presence(channel: String, client: String, epoch: String, seq: UInt64, members: [[UInt8]]?,
                                replay: Int, recovery: ServerFrame.Recovery?) -> [UInt8] {
        var out = Array(#"{"type":"presence","channel":"#.utf8)
        JSON.appendString(channel.utf8, to: &out)
        out += Array(#","client":"#.utf8)
        JSON.appendString(client.utf8, to: &out)
        out += Array(#","presence_epoch":"#.utf8)
        JSON.appendString(epoch.utf8, to: &out)
        out += Array(",\"presence_seq\":\(seq),\"replay\":\(replay)".utf8)
        if let recovery {
            out += Array(",\"recovered\":\(recovery.recovered),\"missed\":".utf8)
            out += Array((recovery.missed.map { String($0) } ?? "null").utf8)
        }
        if let members {
            out += Array(#","members":["#.utf8)
            for (i, m) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out += m
            }
            out.append(UInt8(ascii: "]"))
        }
        out.append(UInt8(ascii: "}"))
        return out
    }
}

/// What Redis holds for a presence stream at one moment: the stream's position and retained
/// changes (as any channel's), and the member list at that position.
public struct PresenceSnapshot: Equatable, Sendable {
    public let stream: HistorySnapshot
    /// Member objects (compact JSON), in Redis's order.
    public let members: [[UInt8]]

    public init(stream: HistorySnapshot, members: [[UInt8]]) { (self.stream, self.members) = (stream, members) }
}

/// The answer to a presence subscribe: the `presence` frame and the changes to replay after it.
public enum PresencePlanner {
    /// A resume in the same epoch that lost nothing replays the retained changes after the
    /// client's `presence_since` and sends no list: the client's list, with them applied, equals
    /// the server's. Anything else (no position, changes no longer retained, another epoch) sends
    /// the whole list, with `recovered: false` and `missed` for a resume, and replays nothing.
    /// After a list the connection's changes continue at `presence_seq + 1` whatever it had
    /// queued before: the list replaces what it knew.
    public static func plan(channel: String, client: String, snapshot: PresenceSnapshot, resume: ResumePosition?) -> ReplayPlan {
        let s = snapshot.stream
        let base = ReplayPlanner.plan(channel: PresenceStream.name(of: channel), snapshot: s, resume: resume)
        if resume != nil, base.recovery?.recovered == true {
            let frame = PresenceFrame.presence(channel: channel, client: client, epoch: s.epoch, seq: s.seq, members: nil,
                                               replay: base.replay.count, recovery: base.recovery)
            return ReplayPlan(subscribed: frame, replay: base.replay, epoch: s.epoch, seq: s.seq, recovery: base.recovery)
        }
        let frame = PresenceFrame.presence(channel: channel, client: client, epoch: s.epoch, seq: s.seq, members: snapshot.members,
                                           replay: 0, recovery: base.recovery)
        return ReplayPlan(subscribed: frame, replay: [], epoch: s.epoch, seq: s.seq, recovery: base.recovery)
    }
}
