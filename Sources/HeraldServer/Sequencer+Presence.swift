import HeraldAMQP
import HeraldCore

/// Presence changes as the sequencer takes them: routed to a presence stream, with the header
/// `x-herald-presence` naming the node instance that sent them (PROTOCOL.md, "Presence").
extension Sequencer {
    /// A node's presence change for one channel as a script call, or why it cannot be one
    /// (dead-lettered: a publisher that sets the header on something else gets its reason).
    func presenceCall(_ d: AMQPDelivery, instance: String) -> Result<(keys: [[UInt8]], args: [[UInt8]]), EnvelopeError> {
        guard let channel = PresenceStream.channel(of: d.routingKey), ChannelName.isValid(channel), config.hasPresence(channel) else {
            return .failure(EnvelopeError(code: .badPresence, message: "x-herald-presence on a routing key that is not the presence stream of a presence channel"))
        }
        guard ChannelName.isValid(instance), !instance.contains(".") else {
            return .failure(EnvelopeError(code: .badPresence, message: "bad node instance in x-herald-presence"))
        }
        switch PresenceChange.decode(d.body) {
        case let .success(change):
            if let foreign = (change.joins.map(\.client) + change.leaves).first(where: { PresenceMember.instance(ofClient: $0) != Substring(instance) }) {
                return .failure(EnvelopeError(code: .badPresence, message: "client \(foreign) is not of instance \(instance)"))
            }
            return .success(Scripts.presenceCall(channel: channel, change: change, instance: instance, config: config))
        case let .failure(error):
            return .failure(error)
        }
    }
}
