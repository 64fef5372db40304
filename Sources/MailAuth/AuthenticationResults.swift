/// One `Authentication-Results` header field (RFC 8601) as Mailflow adds it to received mail: the
/// authserv-id, then SPF (RFC 7208 §9.1 properties `smtp.mailfrom`, `smtp.helo`), one DKIM entry per
/// signature (`header.d`, `header.s`, `header.b` — the first 8 characters of the signature, RFC 6008),
/// and DMARC (`header.from`, with the policy as a comment, as RFC 7489 §11.2 examples do).
///
/// Values are written as RFC 2045 tokens where they can be, otherwise as quoted-strings; a
/// `local@domain` value stays unquoted when its local part is a dot-atom (RFC 8601 §2.2 `pvalue`).
///
///     Authentication-Results: mx.example.net;
///      spf=pass smtp.mailfrom=alice@example.org;
///      dkim=pass header.d=example.org header.s=sel1 header.b="abc/12+x";
///      dmarc=pass (p=reject dis=none) header.from=example.org
public struct AuthenticationResults: Sendable, Hashable {
    /// SPF for one identity.
    public struct SPF: Sendable, Hashable {
        public var result: SPFResult.Kind
        /// The MAIL FROM address (or `postmaster@<helo>` for a null path); nil when only HELO was checked.
        public var mailFrom: String?
        public var helo: String?
        public var reason: String?

        public init(result: SPFResult.Kind, mailFrom: String? = nil, helo: String? = nil, reason: String? = nil) {
            self.result = result
            self.mailFrom = mailFrom
            self.helo = helo
            self.reason = reason
        }
    }

    /// One DKIM signature's verdict (RFC 8601 §2.7.1 results: none, pass, fail, policy, neutral,
    /// temperror, permerror).
    public struct DKIM: Sendable, Hashable {
        public var result: String
        public var domain: String?
        public var selector: String?
        /// The `b=` value; the first 8 characters are written (RFC 6008 §4).
        public var signature: String?
        public var reason: String?

        public init(
            result: String, domain: String? = nil, selector: String? = nil, signature: String? = nil,
            reason: String? = nil
        ) {
            self.result = result
            self.domain = domain
            self.selector = selector
            self.signature = signature
            self.reason = reason
        }
    }

    /// The DMARC verdict.
    public struct DMARC: Sendable, Hashable {
        public var result: DMARCResult.Kind
        public var fromDomain: String
        /// The record's requested policy (`p=` or `sp=`), nil without a record.
        public var requestedPolicy: DMARCRecord.Policy?
        /// The disposition applied.
        public var appliedPolicy: DMARCRecord.Policy?

        public init(
            result: DMARCResult.Kind, fromDomain: String, requestedPolicy: DMARCRecord.Policy? = nil,
            appliedPolicy: DMARCRecord.Policy? = nil
        ) {
            self.result = result
            self.fromDomain = fromDomain
            self.requestedPolicy = requestedPolicy
            self.appliedPolicy = appliedPolicy
        }

        /// From a ``DMARCResult``.
        public init(_ result: DMARCResult) {
            self.init(
                result: result.kind, fromDomain: result.fromDomain, requestedPolicy: result.requestedPolicy,
                appliedPolicy: result.requestedPolicy == nil ? nil : result.policy)
        }
    }

    /// This host's authserv-id (RFC 8601 §2.5): usually its host name.
    public var authservID: String
    public var spf: SPF?
    public var dkim: [DKIM]
    public var dmarc: DMARC?

    public init(authservID: String, spf: SPF? = nil, dkim: [DKIM] = [], dmarc: DMARC? = nil) {
        self.authservID = authservID
        self.spf = spf
        self.dkim = dkim
        self.dmarc = dmarc
    }

    /// The field name.
    public static let fieldName = "Authentication-Results"

    /// The field's value (after `Authentication-Results:`), unfolded: `id; spf=pass ...; dkim=...`,
    /// or `id; none` when nothing was evaluated (RFC 8601 §2.2).
    public var value: String { parts.joined(separator: "; ") }

    /// The whole field with its CRLF, each result on a folded line of its own.
    public var field: String { Self.fieldName + ": " + parts.joined(separator: ";\r\n\t") + "\r\n" }

    /// The authserv-id, then one `method=result ...` entry per result.
    var parts: [String] {
        var entries: [String] = []
        if let spf {
            var parts = ["spf=\(spf.result.rawValue)"]
            if let reason = spf.reason { parts.append("reason=" + Self.quoted(reason)) }
            if let mailFrom = spf.mailFrom { parts.append("smtp.mailfrom=" + Self.pvalue(mailFrom)) }
            if let helo = spf.helo { parts.append("smtp.helo=" + Self.pvalue(helo)) }
            entries.append(parts.joined(separator: " "))
        }
        for signature in dkim {
            var parts = ["dkim=" + Self.token(signature.result.lowercased())]
            if let reason = signature.reason { parts.append("reason=" + Self.quoted(reason)) }
            if let d = signature.domain { parts.append("header.d=" + Self.pvalue(d)) }
            if let s = signature.selector { parts.append("header.s=" + Self.pvalue(s)) }
            if let b = signature.signature {
                let compact = b.filter { !$0.isWhitespace }
                parts.append("header.b=" + Self.pvalue(String(compact.prefix(8))))
            }
            entries.append(parts.joined(separator: " "))
        }
        if let dmarc {
            var parts = ["dmarc=\(dmarc.result.rawValue)"]
            if let requested = dmarc.requestedPolicy {
                parts.append("(p=\(requested.rawValue) dis=\((dmarc.appliedPolicy ?? .none).rawValue))")
            }
            parts.append("header.from=" + Self.pvalue(dmarc.fromDomain))
            entries.append(parts.joined(separator: " "))
        }
        if entries.isEmpty { entries = ["none"] }
        return [Self.pvalue(authservID)] + entries
    }

    // MARK: Quoting

    /// RFC 2045 `tspecials`, which a token cannot hold.
    static let tspecials: Set<Character> = [
        "(", ")", "<", ">", "@", ",", ";", ":", "\\", "\"", "/", "[", "]", "?", "=",
    ]

    static func isToken(_ text: String) -> Bool {
        !text.isEmpty
            && text.unicodeScalars.allSatisfy { $0.value > 0x20 && $0.value < 0x7F }
            && !text.contains { tspecials.contains($0) }
    }

    /// RFC 5322 dot-atom text.
    static func isDotAtom(_ text: Substring) -> Bool {
        let atext = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
        return !text.isEmpty && !text.hasPrefix(".") && !text.hasSuffix(".") && !text.contains("..")
            && text.allSatisfy { atext.contains($0) || $0 == "." }
    }

    static func token(_ text: String) -> String { isToken(text) ? text : quoted(text) }

    /// RFC 8601 `pvalue`: a token, `local@domain` with a dot-atom local part, or a quoted-string.
    static func pvalue(_ text: String) -> String {
        if isToken(text) { return text }
        if let at = text.lastIndex(of: "@") {
            let local = text[..<at]
            let domain = String(text[text.index(after: at)...])
            if (local.isEmpty || isDotAtom(local)) && isToken(domain) { return text }
        }
        return quoted(text)
    }

    /// An RFC 5322 quoted-string; CR, LF and other controls are dropped.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars where scalar.value >= 0x20 && scalar.value != 0x7F {
            if scalar == "\"" || scalar == "\\" { out += "\\" }
            out.unicodeScalars.append(scalar)
        }
        return out + "\""
    }
}

extension AuthenticationResults.DKIM {
    /// From the DKIM verifier's result; `signature` is the signature's `b=` (for `header.b`).
    public init(_ result: DKIMResult, signature: String? = nil) {
        self.init(
            result: result.status.rawValue, domain: result.domain, selector: result.selector, signature: signature,
            reason: result.reason.map { "\($0)" })
    }
}
