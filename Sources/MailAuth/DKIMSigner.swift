import Crypto
import Foundation

/// Signs a message for one domain and selector (RFC 6376 §5; RFC 8463 for Ed25519), relaxed/relaxed
/// by default. It never writes `l=` (a body length lets anyone append content under the signature).
///
/// The header list: every field in ``signedHeaderNames`` the message has, once per instance, and the
/// ``oversignedHeaderNames`` (From among them) once more than present, so that adding such a field
/// after signing breaks the signature (RFC 6376 §8.15).
///
/// ```swift
/// let signer = DKIMSigner(domain: "example.org", selector: "s1", key: .ed25519(Curve25519.Signing.PrivateKey()))
/// let signed = try signer.sign(messageBytes, now: Date())   // a DKIM-Signature field, then the message
/// ```
public struct DKIMSigner: Sendable {
    /// Fields signed when present.
    public static let signedHeaderNames: [String] = [
        "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version", "content-type",
        "content-transfer-encoding", "content-id", "content-description", "in-reply-to", "references",
        "list-id", "list-help", "list-unsubscribe", "list-unsubscribe-post", "list-subscribe", "list-post",
        "list-owner", "list-archive", "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc",
        "resent-message-id",
    ]
    /// Fields signed once more than present (an added instance would be seen by a reader).
    public static let oversignedHeaderNames: Set<String> = ["from", "reply-to", "subject", "date", "to", "cc"]
    /// Lines of the signature field are folded before this many characters.
    static let lineWidth = 76

    public enum SignError: Error, Sendable, Hashable, CustomStringConvertible {
        case message(DKIMMessage.ParseError)
        case noFrom
        case badDomain(String)
        case crypto(String)

        public var description: String {
            switch self {
            case .message(let e): "the message cannot be signed: \(e)"
            case .noFrom: "the message has no From field (RFC 6376 §5.4: From must be signed)"
            case .badDomain(let what): "\(what) is not a domain name"
            case .crypto(let e): "signing failed: \(e)"
            }
        }
    }

    public var domain: String
    public var selector: String
    public var key: DKIMPrivateKey
    public var headerCanonicalization: DKIMCanonicalization
    public var bodyCanonicalization: DKIMCanonicalization
    /// `i=`, when set (must be in `domain`).
    public var identity: String?
    /// `x=` is `t=` plus this many seconds, when set.
    public var expiresAfter: Int64?

    public init(
        domain: String, selector: String, key: DKIMPrivateKey,
        headerCanonicalization: DKIMCanonicalization = .relaxed,
        bodyCanonicalization: DKIMCanonicalization = .relaxed, identity: String? = nil, expiresAfter: Int64? = nil
    ) {
        self.domain = domain.lowercased()
        self.selector = selector.lowercased()
        self.key = key
        self.headerCanonicalization = headerCanonicalization
        self.bodyCanonicalization = bodyCanonicalization
        self.identity = identity
        self.expiresAfter = expiresAfter
    }

    /// `message` (CRLF, or LF lines read as CRLF) with a DKIM-Signature field put first.
    public func sign(_ message: [UInt8], now: Date) throws(SignError) -> [UInt8] {
        let parsed: DKIMMessage
        do {
            parsed = try DKIMMessage(normalizing: message)
        } catch {
            throw .message(error)
        }
        return Array(try signatureField(for: parsed, now: now).utf8) + parsed.bytes
    }

    /// The header list this signer uses for `message`.
    public func headerNames(for message: DKIMMessage) -> [String] {
        var counts: [String: Int] = [:]
        for f in message.headerFields { counts[f.lowercasedName, default: 0] += 1 }
        var names: [String] = []
        for name in Self.signedHeaderNames {
            let n = (counts[name] ?? 0) + (Self.oversignedHeaderNames.contains(name) ? 1 : 0)
            names += Array(repeating: name, count: n)
        }
        return names
    }

    /// The complete `DKIM-Signature:` field, folded, ending in CRLF.
    public func signatureField(for message: DKIMMessage, now: Date) throws(SignError) -> String {
        guard DKIMSignature.isDomainName(domain) else { throw .badDomain("d=\(domain)") }
        guard DKIMSignature.isDomainName(selector) else { throw .badDomain("s=\(selector)") }
        guard message.headerFields.contains(where: { $0.lowercasedName == "from" }) else { throw .noFrom }
        let names = headerNames(for: message)
        let bodyHash = SHA256.hash(data: bodyCanonicalization.body(message.body))
        let t = Int64(now.timeIntervalSince1970)
        var field = FoldedField(name: "DKIM-Signature:")
        field.append("v=1;")
        field.append("a=\(key.algorithm.rawValue);")
        field.append("c=\(headerCanonicalization.rawValue)/\(bodyCanonicalization.rawValue);")
        field.append("d=\(domain);")
        field.append("s=\(selector);")
        if let identity { field.append("i=\(identity);") }
        field.append("t=\(t);")
        if let expiresAfter { field.append("x=\(t + expiresAfter);") }
        // h= may break after any colon (FWS is allowed around them, §3.5).
        var pieces: [String] = []
        for (i, name) in names.enumerated() {
            let piece = (i == 0 ? "h=" : "") + name + (i == names.count - 1 ? ";" : ":")
            pieces.append(piece)
        }
        field.appendJoined(pieces)
        field.append("bh=\(Data(bodyHash).base64EncodedString());")
        field.append("b=")
        let template = Array(field.text.utf8)
        let colon = template.firstIndex(of: UInt8(ascii: ":"))!
        let selected = DKIMHash.selectHeaders(message.headerFields, names: names)
        let input = DKIMHash.headerHashInput(
            selected: selected, signatureField: template[...], colon: colon, canonicalization: headerCanonicalization)
        let signature: [UInt8]
        do {
            signature = try key.sign(input)
        } catch {
            throw .crypto("\(error)")
        }
        field.appendUnbroken(Data(signature).base64EncodedString())
        return field.text + "\r\n"
    }
}

/// A header field built piece by piece, folded (CRLF TAB) before ``DKIMSigner/lineWidth``.
struct FoldedField {
    var text: String
    var column: Int

    init(name: String) {
        text = name
        column = name.count
    }

    /// A piece after a space, or on a new line when it would not fit.
    mutating func append(_ piece: String) {
        if column + 1 + piece.count > DKIMSigner.lineWidth {
            text += "\r\n\t"
            column = 1
        } else {
            text += " "
            column += 1
        }
        text += piece
        column += piece.count
    }

    /// Pieces that may be separated by folding white space but need no space when on one line.
    mutating func appendJoined(_ pieces: [String]) {
        for (i, piece) in pieces.enumerated() {
            if i == 0 {
                append(piece)
            } else if column + piece.count > DKIMSigner.lineWidth {
                text += "\r\n\t"
                column = 1
                text += piece
                column += piece.count
            } else {
                text += piece
                column += piece.count
            }
        }
    }

    /// A base64 value straight after the text so far, broken into line-filling chunks.
    mutating func appendUnbroken(_ value: String) {
        var rest = Substring(value)
        while !rest.isEmpty {
            let room = max(DKIMSigner.lineWidth - column, 0)
            if room == 0 {
                text += "\r\n\t"
                column = 1
                continue
            }
            let chunk = rest.prefix(room)
            text += chunk
            column += chunk.count
            rest = rest.dropFirst(chunk.count)
        }
    }
}
