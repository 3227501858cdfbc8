import Testing
@testable import HeraldCore

@Suite struct DeadlineQueueTests {
    @Test func keysExpireInTheOrderTheirDeadlinesWereSet() {
        var q = DeadlineQueue<Int>()
        q.set(1, deadline: 100)
        q.set(2, deadline: 150)
        q.set(3, deadline: 150)
        #expect(q.expire(now: 99) == [])
        #expect(q.expire(now: 150) == [1, 2, 3])
        #expect(q.count == 0 && q.next() == nil)
    }

    @Test func aRemovedKeyNeverExpires() {
        var q = DeadlineQueue<String>()
        q.set("a", deadline: 10)
        q.set("b", deadline: 20)
        #expect(q.remove("a") && !q.remove("a"))
        #expect(q.next() == 20)
        #expect(q.expire(now: 30) == ["b"])
    }

    @Test func aKeySetAgainExpiresOnlyAtItsNewDeadline() {
        // A socket address reused by a new connection before the old one's deadline.
        var q = DeadlineQueue<Int>()
        q.set(7, deadline: 10)
        q.set(7, deadline: 40)
        #expect(q.expire(now: 10) == [])
        #expect(q.contains(7) && q.count == 1)
        #expect(q.expire(now: 40) == [7])
    }

    @Test func manyKeysStayConsistentAcrossCompaction() {
        var q = DeadlineQueue<Int>()
        for i in 0..<5_000 { q.set(i, deadline: UInt64(i)) }
        for i in stride(from: 0, to: 5_000, by: 2) { q.remove(i) }
        #expect(q.expire(now: 2_999) == Array(stride(from: 1, to: 3_000, by: 2)))
        for i in 5_000..<5_010 { q.set(i, deadline: UInt64(i)) }
        #expect(q.count == 1_000 + 10)
        #expect(q.expire(now: .max) == Array(stride(from: 3_001, to: 5_000, by: 2)) + Array(5_000..<5_010))
    }
}
