import Testing
@testable import HeraldCore

/// Which keys Herald writes where: unchanged on one Redis, hash-tagged by channel on a Redis
/// Cluster (so each channel's store script runs on one shard), shared keys under `{herald}`.
@Suite struct ClusterKeysTests {
    static func config(cluster: Bool) -> HeraldConfig {
        var config = HeraldConfig()
        if cluster { config.redisClusterSeeds = ["127.0.0.1:7000"] }
        return config
    }

    @Test func oneRedisKeepsTheKeysExistingDeploymentsHave() {
        let config = Self.config(cluster: false)
        #expect([config.historyKey("room:1"), config.metaKey("room:1"), config.idKey("room:1", "m:1"), config.liveTopic("room:1")]
                == ["herald:history:room:1", "herald:meta:room:1", "herald:id:room:1#m:1", "herald:live:room:1"])
        #expect([config.nodesKey, config.partitionsKey, config.presenceMembersKey("room:1"), config.revokedKey, config.occupancyPrefix]
                == ["herald:nodes", "herald:partitions", "herald:presence:room:1", "herald:revoked", "herald:occupancy:"])
        #expect(config.metaKey(PresenceStream.name(of: "room:1")) == "herald:meta:~p:room:1")
        #expect((config.liveTopicHead, config.liveTopicTail, config.livePublish) == ("herald:live:", "", "PUBLISH"))
        #expect(config.channel(ofLiveTopic: "herald:live:room:1") == "room:1")
        #expect(config.channel(ofLiveTopic: "herald:live:~p:room:1") == "~p:room:1")
        #expect(config.channel(ofLiveTopic: "other:live:room:1") == nil)
        #expect(config.keyBatches(["a", "b", "c"], size: 2) == [["a", "b"], ["c"]])
    }

    @Test func everyKeyOfAChannelSharesItsSlotOnACluster() {
        let config = Self.config(cluster: true)
        #expect(config.historyKey("room:1") == "herald:history:{room:1}")
        #expect(config.idKey("room:1", "m:1") == "herald:id:{room:1}#m:1")
        #expect((config.liveTopicHead, config.liveTopicTail, config.livePublish) == ("herald:live:{", "}", "SPUBLISH"))
        // A channel name cannot hold a brace, so the tag is always exactly the channel.
        #expect(!ChannelName.isValid("a}b") && !ChannelName.isValid("{x}") && !ChannelName.isValid("}"))
        for channel in ["room:1", "a.b@c-d_e", "x", "user:42:inbox"] {
            let slots = Set([config.historyKey(channel), config.metaKey(channel), config.idKey(channel, "i"),
                             config.idKey(channel, "{j}"), config.liveTopic(channel)].map { ClusterSlot.of($0) })
            #expect(slots.count == 1, "\(channel)")
            #expect(config.liveTopic(channel) == config.liveTopicHead + channel + config.liveTopicTail)
            #expect(config.channel(ofLiveTopic: config.liveTopic(channel)) == channel)
        }
        #expect(ClusterSlot.of(config.historyKey("room:1")) == ClusterSlot.of("room:1"))
        #expect(ClusterSlot.of(config.historyKey("room:1")) != ClusterSlot.of(config.historyKey("room:2")))
    }

    @Test func sharedKeysAndPresenceStreamsCarryTheControlTagOnACluster() {
        let config = Self.config(cluster: true)
        let stream = PresenceStream.name(of: "room:1")
        let control = [config.nodesKey, config.nodeKey("n1"), config.nodeChannelsKey("n1"), config.partitionsKey, config.revokedKey,
                       config.presenceLeasesKey, config.presenceNodePrefix + "i1", config.presenceMembersKey("room:1"),
                       config.lifecycleLeasesKey, config.lifecycleClientsPrefix + "i1", config.lifecycleHeldPrefix + "i1",
                       config.lifecycleReapingKey, config.lifecycleVacatedPrefix + "i1", config.occupancyPrefix + "room:1",
                       config.occupancyVersionKey, config.metaKey(stream), config.historyKey(stream), config.liveTopic(stream)]
        #expect(Set(control.map { ClusterSlot.of($0) }) == [ClusterSlot.of("herald")])
        #expect(config.metaKey(stream) == "{herald}:meta:~p:room:1")
        #expect(config.channel(ofLiveTopic: config.liveTopic(stream)) == stream)
    }

    @Test func scriptBatchesHoldOneSlotEachOnACluster() {
        let config = Self.config(cluster: true)
        let channels = (0..<50).map { "c\($0)" } + ["c1", "c1"]
        let batches = config.keyBatches(channels, size: 3)
        #expect(batches.flatMap { $0 }.sorted() == channels.sorted())
        for batch in batches {
            #expect(batch.count <= 3)
            #expect(Set(batch.map { ClusterSlot.of(config.metaKey($0)) }).count == 1)
        }
    }
}
