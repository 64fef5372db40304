import NIOCore

/// Whether the client uses STARTTLS (RFC 3207) on a connection.
public enum TLSRequirement: String, Sendable, Hashable, Codable {
    /// Never.
    case disabled
    /// When the server offers it; a server without it gets the mail in plaintext.
    case opportunistic
    /// Always; a server without it (or a failed handshake) defers the mail.
    case required
}

/// One recipient of an outbound transaction, with its RFC 3461 parameters.
public struct OutboundRecipient: Sendable, Hashable {
    public var address: String
    public var notify: DSNNotify?
    /// RFC 3461 `ORCPT`, passed on to a server that offers DSN.
    public var originalRecipient: OriginalRecipient?

    public init(address: String, notify: DSNNotify? = nil, originalRecipient: OriginalRecipient? = nil) {
        self.address = address
        self.notify = notify
        self.originalRecipient = originalRecipient
    }
}

/// The envelope of one outbound message.
public struct OutboundEnvelope: Sendable, Hashable {
    /// Empty for the null reverse path.
    public var sender: String
    public var recipients: [OutboundRecipient]
    public var size: Int
    /// The body has 8-bit octets (needs 8BITMIME).
    public var eightBit: Bool
    /// The envelope or headers need SMTPUTF8 (RFC 6531).
    public var smtpUTF8: Bool
    public var ret: DSNReturn?
    public var envelopeID: String?

    public init(
        sender: String, recipients: [OutboundRecipient], size: Int, eightBit: Bool = false, smtpUTF8: Bool = false,
        ret: DSNReturn? = nil, envelopeID: String? = nil
    ) {
        self.sender = sender
        self.recipients = recipients
        self.size = size
        self.eightBit = eightBit
        self.smtpUTF8 = smtpUTF8
        self.ret = ret
        self.envelopeID = envelopeID
    }
}

/// What became of one recipient: the remote's reply (or Mailflow's own, for a local decision).
public struct RecipientResult: Sendable, Hashable {
    public enum Disposition: String, Sendable, Hashable {
        case delivered
        case deferred
        case failed
    }

    public var index: Int
    public var disposition: Disposition
    public var reply: SMTPReply

    public init(index: Int, disposition: Disposition, reply: SMTPReply) {
        self.index = index
        self.disposition = disposition
        self.reply = reply
    }

    /// The disposition a reply implies: 2xx delivered, 5xx failed, anything else deferred.
    public static func from(_ reply: SMTPReply, index: Int) -> RecipientResult {
        RecipientResult(
            index: index, disposition: reply.code / 100 == 2 ? .delivered : reply.code / 100 == 5 ? .failed : .deferred,
            reply: reply)
    }
}

/// The extensions a server announced in its EHLO reply.
public struct ServerCapabilities: Sendable, Hashable {
    public var pipelining = false
    /// SIZE was announced (RFC 1870), with or without a limit: the client may send `SIZE=`.
    public var announcesSize = false
    /// The announced fixed limit; nil for `SIZE`, `SIZE 0` (no fixed limit) or no SIZE at all.
    public var size: Int?
    public var eightBitMIME = false
    public var smtpUTF8 = false
    public var chunking = false
    public var startTLS = false
    public var dsn = false
    public var enhancedStatusCodes = false

    public init() {}

    public init(ehloReply: SMTPReply) {
        for line in ehloReply.lines.dropFirst() {
            let parts = line.split(separator: " ")
            guard let kw = parts.first?.uppercased() else { continue }
            switch kw {
            case "PIPELINING": pipelining = true
            case "SIZE":
                announcesSize = true
                size = parts.count > 1 ? Int(parts[1]).flatMap { $0 > 0 ? $0 : nil } : nil
            case "8BITMIME": eightBitMIME = true
            case "SMTPUTF8": smtpUTF8 = true
            case "CHUNKING": chunking = true
            case "STARTTLS": startTLS = true
            case "DSN": dsn = true
            case "ENHANCEDSTATUSCODES": enhancedStatusCodes = true
            default: break
            }
        }
    }
}

/// The protocol a `ClientSession` speaks: SMTP (RFC 5321) or LMTP (RFC 2033), its local twin for
/// handing mail to a mailbox server (Dovecot, Cyrus) that can answer for each recipient.
public enum ClientProtocol: String, Sendable, Hashable {
    case smtp
    /// RFC 2033: `LHLO` instead of `EHLO` (no `HELO` fallback, §4.1), and after the final dot (or
    /// `BDAT LAST`) one reply per recipient that RCPT accepted, in RCPT order (§4.2).
    case lmtp
}

/// The client side of an SMTP session as a state machine, free of I/O (RFC 5321 §3, §4.1; RFC 2920
/// PIPELINING, RFC 3030 CHUNKING, RFC 3207 STARTTLS, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531
/// SMTPUTF8, RFC 3461 DSN), or of an LMTP session (RFC 2033) with `protocol: .lmtp`.
///
/// One connection may carry several messages (`send(_:)` when `isReady`). Every recipient of a
/// message ends with a `RecipientResult`: `2xx` delivered, `4xx` deferred, `5xx` failed. A `421`, a
/// dropped connection or a TLS requirement the server cannot meet defers everything still pending.
///
/// Every command goes through `SMTPCommandEncoder`, so what reaches the wire is what the envelope
/// holds, or nothing: an address or parameter the encoder refuses (a CR or LF that would start a
/// second command, a malformed path) settles its recipients with the encoder's `5xx` reply instead
/// of being sent.
public struct ClientSession: Sendable {
    public enum Action: Equatable, Sendable {
        /// Write these bytes: one or more encoded command lines (several when pipelining), each
        /// ending in CRLF.
        case send(ByteBuffer)
        /// Begin the TLS handshake; answer with `tlsEstablished` or `tlsFailed`.
        case startTLS
        /// Write the body dot-stuffed, then `CRLF.CRLF`.
        case sendData
        /// Write these bytes (the encoded `BDAT <size> LAST`, RFC 3030 §2) and then the body as it is.
        case sendChunk(ByteBuffer)
        /// The current message is finished; the session may be `isReady` for another.
        case finished([RecipientResult])
        /// The connection is of no further use: close it. `results` settles a message in flight.
        case close(results: [RecipientResult], reason: SMTPReply?)
        case none
    }

    enum Phase: Equatable, Sendable {
        case greeting
        case ehlo
        case helo
        case startTLS
        case tlsHandshake
        case ready
        /// MAIL and RCPTs (and maybe DATA) are out; `expected` replies remain, in order.
        case envelope
        case data
        case body
        case rset
        case quit
        case closed
    }

    enum Expected: Equatable, Sendable {
        case mail
        case rcpt(Int)
        case data
    }

    public let heloName: String
    public let tls: TLSRequirement
    public let clientProtocol: ClientProtocol
    public private(set) var capabilities = ServerCapabilities()
    public private(set) var tlsActive = false
    public private(set) var remoteGreeting: SMTPReply?
    var phase: Phase = .greeting
    var expected: [Expected] = []
    var envelope: OutboundEnvelope?
    var results: [Int: RecipientResult] = [:]
    var accepted: [Int] = []
    var mailReply: SMTPReply?
    var afterRset: [RecipientResult]?
    /// The encoded RCPT commands of the message in flight that are not yet written, by recipient.
    var unsentRecipients: [Int: ByteBuffer] = [:]

    public init(heloName: String, tls: TLSRequirement, protocol clientProtocol: ClientProtocol = .smtp) {
        self.heloName = heloName
        self.tls = tls
        self.clientProtocol = clientProtocol
    }

    public var isReady: Bool { phase == .ready }
    public var isClosed: Bool { phase == .closed }

    /// What the session waits for from the remote, one case per class of RFC 5321 §4.5.3.2 timeout
    /// (5 minutes for the greeting, MAIL and RCPT, 2 for the reply to DATA, 10 for the reply to the
    /// end of the data; RFC 3207 sets none for the handshake, Postfix's `smtp_starttls_timeout` is 5
    /// minutes). The raw value is how the trace names it: "No reply from the remote within 5 s
    /// waiting for the reply to DATA".
    public enum Awaiting: String, Sendable, Hashable, CaseIterable {
        case greeting = "the greeting"
        case hello = "the reply to EHLO"
        case startTLS = "the reply to STARTTLS"
        case tlsHandshake = "the TLS handshake"
        case mail = "the reply to MAIL"
        case recipient = "the reply to RCPT"
        case dataInitiation = "the reply to DATA"
        /// The reply to the final dot (or to `BDAT LAST`), once the body is written.
        case dataTermination = "the reply to the end of the data"
        case reset = "the reply to RSET"
        case quit = "the reply to QUIT"
    }

    /// What the remote owes this session now; nil while Mailflow is the one to act (a ready session
    /// between messages, a closed one).
    public var awaiting: Awaiting? {
        switch phase {
        case .greeting: return .greeting
        case .ehlo, .helo: return .hello
        case .startTLS: return .startTLS
        case .tlsHandshake: return .tlsHandshake
        case .ready, .closed: return nil
        case .envelope:
            switch expected.first {
            case .mail?: return .mail
            case .rcpt?: return .recipient
            case .data?: return .dataInitiation
            case nil: return nil
            }
        case .data: return .dataInitiation
        case .body: return .dataTermination
        case .rset: return .reset
        case .quit: return .quit
        }
    }

    // MARK: events

    public mutating func replyReceived(_ reply: SMTPReply) -> Action {
        if reply.code == 421 && phase != .quit {
            // RFC 5321 §3.8: the server is closing; everything pending is deferred.
            return closeDeferringPending(reply)
        }
        switch phase {
        case .greeting:
            remoteGreeting = reply
            guard reply.code == 220 else { return closeDeferringPending(reply) }
            phase = .ehlo
            return hello()
        case .ehlo:
            if reply.code / 100 == 2 {
                capabilities = ServerCapabilities(ehloReply: reply)
                return afterHello()
            }
            if reply.code / 100 == 5 && !tlsActive && clientProtocol == .smtp {
                phase = .helo
                return write(.helo(heloName))
            }
            return closeDeferringPending(reply)
        case .helo:
            guard reply.code / 100 == 2 else { return closeDeferringPending(reply) }
            capabilities = ServerCapabilities()
            return afterHello()
        case .startTLS:
            if reply.code == 220 {
                phase = .tlsHandshake
                return .startTLS
            }
            if tls == .required {
                return closeDeferringPending(
                    SMTPReply(451, .init(4, 7, 10), "TLS is required, but the remote refused STARTTLS: \(reply)"))
            }
            phase = .ready
            return .none
        case .tlsHandshake, .closed:
            return .none
        case .ready:
            // An unsolicited reply: the server is confused; give up on this connection.
            return closeDeferringPending(
                SMTPReply(451, .init(4, 5, 0), "Unexpected reply from the remote: \(reply)"))
        case .envelope:
            return envelopeReply(reply)
        case .data:
            guard envelope != nil else { return .none }
            if reply.code == 354 {
                if accepted.isEmpty {
                    // Pipelined DATA after every RCPT failed: an empty message the server throws away.
                    phase = .body
                    return .send(ByteBuffer(string: DotStuffer().terminator))
                }
                phase = .body
                return .sendData
            }
            for i in accepted { results[i] = RecipientResult.from(reply, index: i) }
            accepted = []
            return finishWithRset()
        case .body:
            if clientProtocol == .lmtp && !accepted.isEmpty {
                // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
                let i = accepted.removeFirst()
                results[i] = RecipientResult.from(reply, index: i)
                return accepted.isEmpty ? finish() : .none
            }
            for i in accepted { results[i] = RecipientResult.from(reply, index: i) }
            accepted = []
            return finish()
        case .rset:
            phase = .ready
            let r = afterRset ?? []
            afterRset = nil
            if reply.code / 100 != 2 { return .close(results: r, reason: reply) }
            return .finished(r)
        case .quit:
            phase = .closed
            return .close(results: [], reason: nil)
        }
    }

    mutating func afterHello() -> Action {
        if !tlsActive && tls != .disabled && capabilities.startTLS {
            phase = .startTLS
            return write(.startTLS)
        }
        if !tlsActive && tls == .required {
            return closeDeferringPending(
                SMTPReply(451, .init(4, 7, 10), "TLS is required, but the remote does not offer STARTTLS"))
        }
        phase = .ready
        return .none
    }

    public mutating func tlsEstablished() -> Action {
        guard phase == .tlsHandshake else { return .none }
        tlsActive = true
        // RFC 3207 §4.2: forget what was learnt before TLS and ask again.
        capabilities = ServerCapabilities()
        phase = .ehlo
        return hello()
    }

    /// `EHLO`, or for LMTP `LHLO` (RFC 2033 §4.1), which takes the same argument: it is encoded as
    /// EHLO (so the name is checked the same way) and the verb swapped.
    mutating func hello() -> Action {
        let action = write(.ehlo(heloName))
        guard clientProtocol == .lmtp, case .send(var bytes) = action else { return action }
        bytes.setString("LHLO", at: bytes.readerIndex)
        return .send(bytes)
    }

    public mutating func tlsFailed(_ why: String) -> Action {
        closeDeferringPending(SMTPReply(451, .init(4, 7, 5), "TLS handshake with the remote failed: \(why)"))
    }

    /// The connection dropped. Mid-transaction that is Exchange's `SuspiciousRemoteServerError`.
    public mutating func connectionClosed() -> Action {
        guard phase != .closed else { return .none }
        if phase == .quit {
            phase = .closed
            return .close(results: [], reason: nil)
        }
        return closeDeferringPending(Self.abruptClose)
    }

    /// What a dropped connection is recorded as.
    public static let abruptClose = SMTPReply(
        451, .init(4, 4, 0), "remote server disconnected abruptly (SuspiciousRemoteServerError)")

    /// Starts a message on a ready session.
    public mutating func send(_ env: OutboundEnvelope) -> Action {
        guard phase == .ready else {
            return .finished(
                env.recipients.indices.map {
                    RecipientResult(
                        index: $0, disposition: .deferred, reply: SMTPReply(451, .init(4, 3, 0), "session not ready"))
                })
        }
        func failAll(_ r: SMTPReply) -> Action {
            .finished(env.recipients.indices.map { RecipientResult.from(r, index: $0) })
        }
        if env.smtpUTF8 && !capabilities.smtpUTF8 {
            return failAll(
                SMTPReply(
                    553, .init(5, 6, 7),
                    "The message needs SMTPUTF8 (a UTF-8 address or header) and the remote does not support it"))
        }
        if env.eightBit && !capabilities.eightBitMIME {
            return failAll(
                SMTPReply(554, .init(5, 6, 3), "The message has 8-bit content and the remote does not support 8BITMIME")
            )
        }
        if let limit = capabilities.size, env.size > limit {
            return failAll(
                SMTPReply(552, .init(5, 3, 4), "Message size \(env.size) exceeds the remote's limit of \(limit) octets")
            )
        }
        var out = ByteBuffer()
        do {
            try SMTPCommandEncoder.encode(mailCommand(env), into: &out)
        } catch {
            return failAll(error.reply)
        }
        // A recipient the encoder refuses is settled now and never written.
        var refused: [Int: RecipientResult] = [:]
        var sendable: [Int] = []
        unsentRecipients = [:]
        for (i, r) in env.recipients.enumerated() {
            do {
                unsentRecipients[i] = try SMTPCommandEncoder.encode(rcptCommand(r))
                sendable.append(i)
            } catch {
                refused[i] = RecipientResult.from(error.reply, index: i)
            }
        }
        guard !sendable.isEmpty else {
            unsentRecipients = [:]
            return .finished(refused.values.sorted { $0.index < $1.index })
        }
        envelope = env
        results = refused
        accepted = []
        mailReply = nil
        expected = [.mail] + sendable.map { .rcpt($0) }
        if !capabilities.chunking { expected.append(.data) }
        phase = .envelope
        if capabilities.pipelining {
            // RFC 2920 §3.1: MAIL, the RCPTs and DATA go in one batch.
            for i in sendable {
                if let rcpt = unsentRecipients.removeValue(forKey: i) { out.writeImmutableBuffer(rcpt) }
            }
            if !capabilities.chunking {
                do {
                    try SMTPCommandEncoder.encode(.data, into: &out)
                } catch {
                    return closeDeferringPending(error.reply)
                }
            }
        }
        return .send(out)
    }

    /// MAIL with the parameters the server announced, and only those (RFC 5321 §4.1.1.11): SIZE (RFC
    /// 1870 §6), BODY (RFC 6152), SMTPUTF8 (RFC 6531), RET and ENVID (RFC 3461 §4.3, §4.4). A server
    /// that announces PIPELINING without SIZE may refuse the parameter: Dovecot's LMTP answers
    /// `555 5.5.4 Unsupported parameters`.
    func mailCommand(_ env: OutboundEnvelope) -> SMTPCommand {
        var p = MailParameters()
        if capabilities.announcesSize { p.size = env.size }
        if env.eightBit { p.body = .eightBitMIME }
        p.smtpUTF8 = env.smtpUTF8
        if capabilities.dsn {
            p.ret = env.ret
            p.envelopeID = env.envelopeID
        }
        return .mail(env.sender.isEmpty ? .null : .mailbox(Mailbox(splitting: env.sender)), p)
    }

    /// RCPT with NOTIFY and ORCPT (RFC 3461 §4.1, §4.2) for a DSN server.
    func rcptCommand(_ r: OutboundRecipient) -> SMTPCommand {
        var p = RecipientParameters()
        if capabilities.dsn {
            p.notify = r.notify
            p.originalRecipient = r.originalRecipient
        }
        // RFC 5321 §4.1.1.3: the bare, domainless Postmaster.
        if !r.address.contains("@") && r.address.lowercased() == "postmaster" {
            return .rcpt(.postmaster, p)
        }
        return .rcpt(.mailbox(Mailbox(splitting: r.address)), p)
    }

    /// One command Mailflow composes from its own settings (EHLO/HELO with the configured name) or
    /// that has no argument. A refusal (a HELO name the encoder cannot send) is a configuration
    /// error: the connection ends and what is pending is deferred.
    mutating func write(_ command: SMTPCommand) -> Action {
        do {
            return .send(try SMTPCommandEncoder.encode(command))
        } catch {
            return closeDeferringPending(SMTPReply(451, .init(4, 3, 5), "\(error)"))
        }
    }

    mutating func envelopeReply(_ reply: SMTPReply) -> Action {
        guard let env = envelope, !expected.isEmpty else { return .none }
        let what = expected.removeFirst()
        switch what {
        case .mail:
            mailReply = reply
        case .rcpt(let i):
            if let m = mailReply, m.code / 100 != 2 {
                results[i] = RecipientResult.from(m, index: i)
            } else if reply.code / 100 == 2 {
                accepted.append(i)
            } else {
                results[i] = RecipientResult.from(reply, index: i)
            }
        case .data:
            phase = .data
            return replyReceived(reply)
        }
        if let m = mailReply, m.code / 100 != 2, !capabilities.pipelining {
            // Not pipelined: nothing more was sent; every recipient shares the MAIL refusal (but one
            // the encoder refused keeps that result).
            for i in env.recipients.indices where results[i] == nil { results[i] = RecipientResult.from(m, index: i) }
            expected = []
            return finishWithRset()
        }
        if !capabilities.pipelining {
            // Send the next command of the envelope one at a time.
            switch expected.first {
            case .rcpt(let i)?:
                guard let rcpt = unsentRecipients.removeValue(forKey: i) else {
                    return closeDeferringPending(
                        SMTPReply(451, .init(4, 3, 0), "RCPT for recipient \(i) was not encoded"))
                }
                return .send(rcpt)
            case .data?:
                if accepted.isEmpty {
                    expected = []
                    return finishWithRset()
                }
                expected = []
                phase = .data
                return write(.data)
            case .mail?, nil:
                break
            }
        }
        guard expected.isEmpty else { return .none }
        // All envelope replies are in (pipelined, or chunking after the last RCPT).
        if let m = mailReply, m.code / 100 != 2 {
            for i in env.recipients.indices where results[i] == nil { results[i] = RecipientResult.from(m, index: i) }
            return finishWithRset()
        }
        if capabilities.chunking {
            if accepted.isEmpty { return finishWithRset() }
            do {
                let bdat = try SMTPCommandEncoder.encode(.bdat(size: env.size, last: true))
                phase = .body
                return .sendChunk(bdat)
            } catch {
                for i in accepted { results[i] = RecipientResult.from(error.reply, index: i) }
                accepted = []
                return finishWithRset()
            }
        }
        return .none
    }

    mutating func finish() -> Action {
        let r = collect()
        phase = .ready
        return .finished(r)
    }

    mutating func finishWithRset() -> Action {
        afterRset = collect()
        phase = .rset
        return write(.rset)
    }

    mutating func collect() -> [RecipientResult] {
        let r = results.values.sorted { $0.index < $1.index }
        envelope = nil
        results = [:]
        accepted = []
        expected = []
        mailReply = nil
        unsentRecipients = [:]
        return r
    }

    mutating func closeDeferringPending(_ reply: SMTPReply) -> Action {
        var pending: [RecipientResult] = []
        if phase == .rset, let r = afterRset {
            pending = r
            afterRset = nil
        } else if let env = envelope {
            // Settled recipients keep their result; the rest take this reply (a 421 or a dropped
            // connection defers them; a 5xx the server gave this transaction fails them).
            for i in env.recipients.indices {
                pending.append(results[i] ?? RecipientResult.from(reply, index: i))
            }
        }
        envelope = nil
        results = [:]
        accepted = []
        expected = []
        unsentRecipients = [:]
        phase = .closed
        return .close(results: pending, reason: reply)
    }

    /// Ends the session politely.
    public mutating func quit() -> Action {
        guard phase == .ready else {
            if phase == .closed { return .none }
            return closeDeferringPending(SMTPReply(451, .init(4, 3, 0), "session abandoned"))
        }
        phase = .quit
        return write(.quit)
    }
}
