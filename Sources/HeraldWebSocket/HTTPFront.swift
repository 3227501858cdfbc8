import CSocket
import HeraldCore
import HeraldRuntime

/// The front thread's loop (see `Acceptor`): an epoll set of the listening socket, the reply
/// eventfd and every HTTP connection not handed to libwebsockets. Confined to its thread.
final class HTTPFront {
    final class Connection {
        let id: UInt64
        let fd: Int32
        let peer: String
        let inlet: Int
        var reader: HTTPRequestReader
        var out: [UInt8] = []
        var sent = 0
        /// Requests whose answers have not been written yet (with a service thread, with the
        /// thread a diversion took them to, or answered early and held for their turn).
        var inFlight = 0
        /// Tickets number the requests in the order read; answers go out in that order.
        var issued: UInt64 = 0
        var nextAnswer: UInt64 = 0
        var early: [UInt64: [UInt8]] = [:]
        /// The request a service thread has: nothing more is read until its answer (only
        /// diverted requests are read ahead of their answers, up to `maxAhead`).
        var waitingFor: UInt64?
        /// The request whose answer ends the connection.
        var closeAfter: UInt64?
        /// A request for a service thread read while earlier ones were still unanswered: it is
        /// posted once they are, so it sees what they did (a history read after publishes).
        var deferred: Acceptor.Request?
        /// The peer sent its end of file: answer what it sent, then close.
        var peerDone = false
        /// The bytes for libwebsockets, once every earlier answer is written.
        var handOff: [UInt8]?
        /// What a screening attached (connect proxy), handed on with the socket.
        var attachment: [UInt8]?
        /// An upgrade waiting for the screening's verdict: its bytes, and its ticket.
        var screened: (bytes: [UInt8], ticket: UInt64)?
        /// The last answer ends the connection: after it is written, shut down and linger.
        var closing = false
        var lingering = false
        var answeredAny = false
        var deadline: UInt64
        var deadlineKind = DeadlineKind.firstRequest
        var events: UInt32 = 0

        init(id: UInt64, fd: Int32, peer: String, inlet: Int, limits: HTTPLimits, deadline: UInt64) {
            self.id = id
            self.fd = fd
            self.peer = peer
            self.inlet = inlet
            self.deadline = deadline
            reader = HTTPRequestReader(limits: limits)
        }
    }

    enum DeadlineKind {
        /// The first request did not come: close without a word (counted as incomplete).
        case firstRequest
        /// A request started and did not finish: 408.
        case request
        /// A keep-alive connection waits for its next request, or an answer is not being read.
        case idle
        /// Shut down for writing after the last answer; reading what the peer still sends.
        case linger
        /// An answer is on its way from a service thread.
        case none
    }

    private let acceptor: Acceptor
    private let options: Acceptor.Options
    private let listener: Int32
    private let wakeFD: Int32
    private let epoll: Int32
    private var connections: [UInt64: Connection] = [:]
    private var nextID: UInt64 = 2 // 0: the listener, 1: the eventfd
    private var nextInlet = 0
    private var toWake = Set<Int>()
    private var scratch = [UInt8](repeating: 0, count: 65_536)
    private var nextSweep: UInt64 = 0
    private var listenerPaused = false
    /// A client pipelining far ahead of its answers is not read further until they catch up.
    private let maxUnread: Int
    static let lingerMicros: UInt64 = 2_000_000
    /// Diverted requests (HTTP publishes) of one connection taken before their answers: a
    /// pipelining publisher's requests are stored together, and answered in order.
    static let maxAhead = 64

    init(acceptor: Acceptor, listener: Int32, wakeFD: Int32) {
        self.acceptor = acceptor
        options = acceptor.options
        self.listener = listener
        self.wakeFD = wakeFD
        epoll = herald_epoll_create()
        maxUnread = options.limits.maxHeadBytes + options.limits.maxBodyBytes + 65_536
    }

    func run(stop: StopFlag) {
        guard epoll >= 0 else { return }
        _ = herald_epoll_set(epoll, 1, listener, herald_epollin, 0)
        _ = herald_epoll_set(epoll, 1, wakeFD, herald_epollin, 1)
        var keys = [UInt64](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        while !stop.isSet {
            let n = herald_epoll_wait(epoll, &keys, &events, Int32(keys.count), Acceptor.tickMillis)
            if stop.isSet { break }
            for i in 0..<max(0, Int(n)) {
                switch keys[i] {
                case 0: accept()
                case 1: answer()
                default:
                    guard let c = connections[keys[i]] else { continue }
                    let ev = events[i]
                    // Both directions gone (a reset): nothing more can be read or written.
                    if ev & (herald_epollhup | herald_epollerr) != 0 && c.peerDone { drop(c); continue }
                    if ev & (herald_epollin | herald_epollhup | herald_epollerr) != 0 { readable(c) }
                    if ev & herald_epollout != 0, connections[c.id] != nil { flush(c) }
                }
            }
            let now = monotonicMicros()
            if now >= nextSweep {
                nextSweep = now + UInt64(Acceptor.tickMillis) * 1_000
                sweep(now)
                if listenerPaused {
                    listenerPaused = false
                    _ = herald_epoll_set(epoll, 1, listener, herald_epollin, 0)
                }
                for (i, inlet) in acceptor.inlets.enumerated()
                where inlet.pendingHandshakes.load(ordering: .relaxed) > 0 || inlet.wantsTicks.load(ordering: .relaxed) { toWake.insert(i) }
            }
            for i in toWake { acceptor.inlets[i].wake() }
            toWake.removeAll(keepingCapacity: true)
        }
        for c in Array(connections.values) { drop(c) }
        _ = herald_close(epoll)
    }

    // MARK: Accepting

    private func accept() {
        let now = monotonicMicros()
        for _ in 0..<256 {
            let fd = herald_tcp_accept(listener)
            if fd < 0 {
                // A peer that reset first is skipped; EAGAIN: all taken. Out of descriptors
                // (EMFILE/ENFILE): the connection waits in the backlog, and the listener is
                // left alone until the next tick rather than spin on it.
                if fd == -ECONNABORTED || fd == -EINTR { continue }
                if fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM {
                    _ = herald_epoll_delete(epoll, listener)
                    listenerPaused = true
                }
                return
            }
            _ = herald_set_nonblocking(fd)
            var name = [CChar](repeating: 0, count: 64)
            herald_peer_name(fd, &name, name.count)
            let peer = String(decoding: name.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let c = Connection(id: nextID, fd: fd, peer: peer, inlet: nextInlet, limits: options.limits,
                               deadline: now + UInt64(options.requestTimeoutSeconds) * 1_000_000)
            nextID += 1
            nextInlet = (nextInlet + 1) % acceptor.inlets.count
            connections[c.id] = c
            c.events = herald_epollin
            if herald_epoll_set(epoll, 1, fd, c.events, c.id) != 0 { drop(c) }
        }
    }

    // MARK: Reading

    private func readable(_ c: Connection) {
        var budget = 4
        while budget > 0 && !c.peerDone && c.reader.unreadCount < maxUnread {
            budget -= 1
            let n = scratch.withUnsafeMutableBytes { herald_recv(c.fd, $0.baseAddress, $0.count) }
            if n > 0 {
                if !c.lingering { c.reader.append(scratch[0..<n]) }
                continue
            }
            if n == 0 { c.peerDone = true; break }
            if n == -Int(EAGAIN) || n == -Int(EINTR) { break }
            return drop(c) // reset by the peer
        }
        if c.lingering {
            if c.peerDone { drop(c) }
            return
        }
        process(c)
    }

    /// Reads requests while it may: each is refused here, handed to libwebsockets, taken by a
    /// diversion or posted to a service thread. Only diverted requests are read ahead of their
    /// answers; one for a service thread stops the reading until it is answered.
    private func process(_ c: Connection) {
        while c.waitingFor == nil && c.inFlight < Self.maxAhead && c.closeAfter == nil && !c.closing && c.handOff == nil && c.screened == nil,
              let event = c.reader.next() {
            switch event {
            case let .refused(refusal):
                let ticket = issue(c)
                c.closeAfter = ticket
                ready(c, ticket, HTTPResponse.error(refusal.status, refusal.code, refusal.message).serialized(close: true))
            case let .request(head, body):
                c.answeredAny = true
                let stream = options.eventStreamPath.map { head.method == "GET" && head.path == $0 } ?? false
                if head.isWebSocketUpgrade && options.isAdmin {
                    let closes = c.reader.closesAfterAnswer
                    c.reader.answered()
                    let ticket = issue(c)
                    if closes { c.closeAfter = ticket }
                    ready(c, ticket, HTTPResponse.error(404, "not_found", "the admin listener takes no WebSocket upgrades").serialized(close: closes))
                } else if head.isWebSocketUpgrade || stream {
                    guard let screen = options.screen else {
                        c.handOff = c.reader.takeHandOff()
                        continue
                    }
                    // Asked first (connect proxy): a refusal is its answer and ends the connection.
                    let bytes = c.reader.takeHandOff()
                    let ticket = issue(c)
                    c.closeAfter = ticket
                    c.screened = (bytes, ticket)
                    let request = Acceptor.Request(front: acceptor, connection: c.id, ticket: ticket, head: head, body: [], peer: c.peer,
                                                   closeAfter: true)
                    screen(Acceptor.Screening(request: request.httpRequest(admin: false, trustedProxies: options.trustedProxies),
                                              isStream: stream, front: acceptor, connection: c.id, ticket: ticket))
                } else {
                    let closes = c.reader.closesAfterAnswer
                    let ticket = issue(c)
                    let request = Acceptor.Request(front: acceptor, connection: c.id, ticket: ticket, head: head, body: body, peer: c.peer,
                                                   closeAfter: closes)
                    if let diversion = options.diversions.first(where: { $0.method == head.method && head.path.hasPrefix($0.pathPrefix) }) {
                        c.reader.answered()
                        if closes { c.closeAfter = ticket }
                        diversion.take(request.httpRequest(admin: options.isAdmin, trustedProxies: options.trustedProxies))
                    } else {
                        c.waitingFor = ticket
                        if c.inFlight == 1 { post(c, request) } else { c.deferred = request }
                    }
                }
            }
        }
        flush(c)
    }

    private func issue(_ c: Connection) -> UInt64 {
        c.inFlight += 1
        defer { c.issued += 1 }
        return c.issued
    }

    /// An answer for request `ticket`: written once every earlier one is.
    private func ready(_ c: Connection, _ ticket: UInt64, _ bytes: [UInt8]) {
        c.early[ticket] = bytes
        while let next = c.early.removeValue(forKey: c.nextAnswer) {
            c.inFlight -= 1
            if c.waitingFor == c.nextAnswer {
                c.waitingFor = nil
                c.reader.answered()
                if c.reader.isClosed { c.closing = true }
            }
            if c.closeAfter == c.nextAnswer { c.closing = true }
            c.nextAnswer += 1
            queue(c, next)
        }
        if let d = c.deferred, d.ticket == c.nextAnswer {
            c.deferred = nil
            post(c, d)
        }
    }

    private func post(_ c: Connection, _ request: Acceptor.Request) {
        acceptor.inlets[c.inlet].post(.request(request))
        toWake.insert(c.inlet)
    }

    // MARK: Answering

    /// Answers other threads wrote: each goes out on its connection in its turn, and more
    /// requests are read.
    private func answer() {
        herald_eventfd_drain(wakeFD)
        var touched: [Connection] = []
        for (id, ticket, bytes) in acceptor.takeReplies() {
            guard let c = connections[id], ticket >= c.nextAnswer, ticket < c.issued else { continue }
            if c.screened?.ticket == ticket { c.screened = nil }
            ready(c, ticket, bytes)
            if touched.last !== c { touched.append(c) }
        }
        for (id, ticket, attachment) in acceptor.takeAdmissions() {
            guard let c = connections[id], let screened = c.screened, screened.ticket == ticket else { continue }
            // Admitted: no answer of its own; the socket goes on once earlier answers are out.
            c.screened = nil
            c.closeAfter = nil
            c.handOff = screened.bytes
            c.attachment = attachment
            ready(c, ticket, [])
            if touched.last !== c { touched.append(c) }
        }
        for c in touched where connections[c.id] != nil { process(c) }
    }

    private func queue(_ c: Connection, _ bytes: [UInt8]) {
        if c.sent > 0 && c.sent == c.out.count {
            c.out.removeAll(keepingCapacity: true)
            c.sent = 0
        }
        c.out += bytes
    }

    private func flush(_ c: Connection) {
        while c.sent < c.out.count {
            let n = c.out.withUnsafeBytes { herald_send(c.fd, $0.baseAddress! + c.sent, $0.count - c.sent) }
            if n > 0 { c.sent += n; continue }
            if n == -Int(EAGAIN) || n == -Int(EINTR) { break }
            return drop(c)
        }
        if c.sent == c.out.count {
            c.out.removeAll(keepingCapacity: true)
            c.sent = 0
            if let bytes = c.handOff, c.inFlight == 0 { return handOff(c, bytes) }
            if c.closing && !c.lingering {
                // Shut down and read until the peer closes, so the answer is not destroyed by a
                // reset over bytes it still sends (a body refused unread).
                _ = herald_shutdown_write(c.fd)
                c.lingering = true
                c.deadline = monotonicMicros() + Self.lingerMicros
                c.deadlineKind = .linger
            } else if c.peerDone && c.inFlight == 0 && !c.lingering {
                return drop(c)
            }
        }
        updateDeadline(c)
        updateInterest(c)
    }

    private func handOff(_ c: Connection, _ bytes: [UInt8]) {
        _ = herald_epoll_delete(epoll, c.fd)
        connections.removeValue(forKey: c.id)
        acceptor.inlets[c.inlet].post(.socket(c.fd, bytes, attachment: c.attachment))
        toWake.insert(c.inlet)
    }

    // MARK: Bookkeeping

    private func updateInterest(_ c: Connection) {
        guard connections[c.id] != nil else { return }
        var events: UInt32 = 0
        if c.sent < c.out.count { events |= herald_epollout }
        if !c.peerDone && (c.lingering || c.reader.unreadCount < maxUnread) { events |= herald_epollin }
        if events != c.events {
            c.events = events
            _ = herald_epoll_set(epoll, 0, c.fd, events, c.id)
        }
    }

    private func updateDeadline(_ c: Connection) {
        let now = monotonicMicros()
        switch c.deadlineKind {
        case .linger:
            return
        case _ where c.inFlight > 0:
            c.deadlineKind = .none
        case _ where c.sent < c.out.count:
            // An answer the client does not read.
            if c.deadlineKind != .idle { c.deadlineKind = .idle; c.deadline = now + UInt64(options.idleTimeoutSeconds) * 1_000_000 }
        case .firstRequest:
            return // the first request's deadline runs from the accept
        case _ where c.reader.hasPartialRequest:
            if c.deadlineKind != .request { c.deadlineKind = .request; c.deadline = now + UInt64(options.requestTimeoutSeconds) * 1_000_000 }
        default:
            if c.deadlineKind != .idle { c.deadlineKind = .idle; c.deadline = now + UInt64(options.idleTimeoutSeconds) * 1_000_000 }
        }
    }

    private func sweep(_ now: UInt64) {
        for c in connections.values where c.deadlineKind != .none && c.deadline <= now {
            switch c.deadlineKind {
            case .firstRequest where !c.reader.hasPartialRequest, .idle, .linger, .none:
                drop(c)
            case .firstRequest, .request:
                c.reader = HTTPRequestReader(limits: options.limits) // nothing more of it is read
                c.closing = true
                queue(c, HTTPResponse.error(408, "request_timeout",
                                            "the request did not arrive whole within \(options.requestTimeoutSeconds) s").serialized(close: true))
                flush(c)
            }
        }
    }

    /// Closes a connection. One that never sent a whole request is counted (`incomplete`).
    private func drop(_ c: Connection) {
        guard connections.removeValue(forKey: c.id) != nil else { return }
        _ = herald_epoll_delete(epoll, c.fd)
        _ = herald_close(c.fd)
        if !c.answeredAny {
            acceptor.inlets[c.inlet].incomplete.add(1, ordering: .relaxed)
            toWake.insert(c.inlet)
        }
    }
}
