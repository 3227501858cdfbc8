/// Who is a member where: FanOut reports each connection that becomes, or stops being, a
/// subscriber of a presence channel; the node's `PresenceAnnouncer` tells the cluster.
extension FanOut {
    public enum PresenceEvent: Equatable, Sendable {
        case joined(channel: String, client: String, member: [UInt8])
        case left(channel: String, client: String)
    }

    /// The cluster-wide client id of a connection of this node.
    public func clientID(_ id: ConnectionID) -> String { PresenceMember.clientID(instance: settings.instance, connection: id) }

    /// Whether subscribers of `channel` are members of its presence.
    func hasMembers(_ channel: String) -> Bool {
        PresenceStream.channel(of: channel) == nil && settings.session.hasPresence(channel)
    }
}
