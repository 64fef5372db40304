import Foundation

/// The JSON Lines form of `HealthSignal` that `mailflow health replay` reads and `health export`
/// writes: one flat object per line, `time` (RFC 3339), `kind` (`smtp` or `report`); for `smtp`:
/// `direction`, `forest`, `region`, `tenant`, `client_ip` (inbound), `destination` (outbound),
/// `reply`, optional `latency_ms`; for `report`: `tenant`, `region`, `text`, optional `error`.
///
/// The reader is a small scanner for flat objects rather than a general JSON decoder: replay must
/// read hundreds of thousands of lines a second, and the format has no nesting.
public enum HealthSignalLine {
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var reason: String
        public var description: String { reason }
    }

    /// Parses one line (without its newline).
    public static func parse(_ line: some Collection<UInt8>) throws(ParseError) -> HealthSignal {
        var time: String?
        var kind: String?
        var direction: String?
        var forest = ""
        var region = ""
        var tenant = ""
        var clientIP: String?
        var destination: String?
        var reply: String?
        var latency: Double?
        var text = ""
        var error: String?
        try scan(Array(line)) { (key: ArraySlice<UInt8>, value: Value) throws(ParseError) in
            func str() throws(ParseError) -> String {
                switch value {
                case .string(let v): return v
                case .null: return ""
                default: throw ParseError(reason: "\"\(String(decoding: key, as: UTF8.self))\" must be a string")
                }
            }
            switch key.count {
            case 4 where key == Key.time[...]: time = try str()
            case 4 where key == Key.kind[...]: kind = try str()
            case 9 where key == Key.direction[...]: direction = try str()
            case 6 where key == Key.forest[...]: forest = try str()
            case 6 where key == Key.region[...]: region = try str()
            case 6 where key == Key.tenant[...]: tenant = try str()
            case 9 where key == Key.clientIP[...]: clientIP = try str()
            case 11 where key == Key.destination[...]: destination = try str()
            case 5 where key == Key.reply[...]: reply = try str()
            case 4 where key == Key.text[...]: text = try str()
            case 5 where key == Key.error[...]: error = try str()
            case 10 where key == Key.latencyMS[...]:
                switch value {
                case .number(let n): latency = n
                case .null: latency = nil
                default: throw ParseError(reason: "\"latency_ms\" must be a number")
                }
            default: break  // unknown keys are ignored, so the format can grow
            }
        }
        guard let timeText = time, let t = parseTime(timeText) else {
            throw ParseError(reason: "missing or bad \"time\" (RFC 3339)")
        }
        switch kind {
        case "smtp":
            guard let d = direction, let dir = MailDirection(rawValue: d) else {
                throw ParseError(reason: "\"direction\" must be inbound or outbound")
            }
            guard let reply else { throw ParseError(reason: "missing string field \"reply\"") }
            return HealthSignal(
                time: t,
                kind: .smtp(
                    SMTPOutcome(
                        direction: dir, forest: forest, region: region, tenant: tenant, clientIP: clientIP,
                        destination: destination, reply: reply, latencyMilliseconds: latency)))
        case "report":
            return HealthSignal(
                time: t,
                kind: .report(ProblemReport(tenant: tenant, region: region, text: text, errorText: error)))
        default:
            throw ParseError(reason: "\"kind\" must be smtp or report")
        }
    }

    /// The line for `signal`, without a newline.
    public static func encode(_ signal: HealthSignal) -> String {
        var parts: [String] = ["\"time\":\(quote(formatTime(signal.time)))"]
        switch signal.kind {
        case .smtp(let o):
            parts.append("\"kind\":\"smtp\"")
            parts.append("\"direction\":\"\(o.direction.rawValue)\"")
            parts.append("\"forest\":\(quote(o.forest))")
            parts.append("\"region\":\(quote(o.region))")
            parts.append("\"tenant\":\(quote(o.tenant))")
            if let c = o.clientIP { parts.append("\"client_ip\":\(quote(c))") }
            if let d = o.destination { parts.append("\"destination\":\(quote(d))") }
            parts.append("\"reply\":\(quote(o.reply))")
            if let l = o.latencyMilliseconds { parts.append("\"latency_ms\":\(Int(l.rounded()))") }
        case .report(let r):
            parts.append("\"kind\":\"report\"")
            parts.append("\"tenant\":\(quote(r.tenant))")
            parts.append("\"region\":\(quote(r.region))")
            parts.append("\"text\":\(quote(r.text))")
            if let e = r.errorText { parts.append("\"error\":\(quote(e))") }
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// The field names as bytes (comparing slices of arrays is much faster than against a UTF8View).
    enum Key {
        static let time = Array("time".utf8)
        static let kind = Array("kind".utf8)
        static let direction = Array("direction".utf8)
        static let forest = Array("forest".utf8)
        static let region = Array("region".utf8)
        static let tenant = Array("tenant".utf8)
        static let clientIP = Array("client_ip".utf8)
        static let destination = Array("destination".utf8)
        static let reply = Array("reply".utf8)
        static let text = Array("text".utf8)
        static let error = Array("error".utf8)
        static let latencyMS = Array("latency_ms".utf8)
    }

    // MARK: flat JSON

    enum Value: Equatable {
        case string(String)
        case number(Double)
        case bool(Bool)
        case null
    }

    /// Reads one flat object, handing each key (as bytes) and value to `field`.
    static func scan(
        _ b: [UInt8], field: (ArraySlice<UInt8>, Value) throws(ParseError) -> Void
    ) throws(ParseError) {
        var i = 0
        func skipSpace() {
            while i < b.count, b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x0D || b[i] == 0x0A { i += 1 }
        }
        func expect(_ c: UInt8) throws(ParseError) {
            skipSpace()
            guard i < b.count, b[i] == c else {
                throw ParseError(reason: "expected '\(Character(Unicode.Scalar(c)))' at column \(i + 1)")
            }
            i += 1
        }
        func rawString() throws(ParseError) -> (ArraySlice<UInt8>, Bool) {
            try expect(UInt8(ascii: "\""))
            let start = i
            var simple = true
            while i < b.count, b[i] != UInt8(ascii: "\"") {
                if b[i] == UInt8(ascii: "\\") {
                    simple = false
                    i += 2
                } else {
                    i += 1
                }
            }
            guard i < b.count else { throw ParseError(reason: "unterminated string") }
            let end = i
            i += 1
            return (b[start..<end], simple)
        }
        func string() throws(ParseError) -> String {
            let (bytes, simple) = try rawString()
            return simple ? String(decoding: bytes, as: UTF8.self) : try unescape(bytes)
        }
        try expect(UInt8(ascii: "{"))
        skipSpace()
        if i < b.count, b[i] == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                let (rawKey, simpleKey) = try rawString()
                let key = simpleKey ? rawKey : ArraySlice(Array(try unescape(rawKey).utf8))
                try expect(UInt8(ascii: ":"))
                skipSpace()
                guard i < b.count else { throw ParseError(reason: "missing value") }
                switch b[i] {
                case UInt8(ascii: "\""):
                    try field(key, .string(try string()))
                case UInt8(ascii: "-"), 48...57:
                    let start = i
                    while i < b.count, "0123456789+-.eE".utf8.contains(b[i]) { i += 1 }
                    guard let n = Double(String(decoding: b[start..<i], as: UTF8.self)) else {
                        throw ParseError(reason: "bad number")
                    }
                    try field(key, .number(n))
                case UInt8(ascii: "t") where b[i...].starts(with: "true".utf8):
                    i += 4
                    try field(key, .bool(true))
                case UInt8(ascii: "f") where b[i...].starts(with: "false".utf8):
                    i += 5
                    try field(key, .bool(false))
                case UInt8(ascii: "n") where b[i...].starts(with: "null".utf8):
                    i += 4
                    try field(key, .null)
                default:
                    throw ParseError(
                        reason: "unsupported value for \"\(String(decoding: key, as: UTF8.self))\" (flat objects only)")
                }
                skipSpace()
                guard i < b.count else { throw ParseError(reason: "unterminated object") }
                if b[i] == UInt8(ascii: ",") {
                    i += 1
                    continue
                }
                try expect(UInt8(ascii: "}"))
                break
            }
        }
        skipSpace()
        guard i == b.count else { throw ParseError(reason: "text after the object") }
    }

    static func unescape(_ s: ArraySlice<UInt8>) throws(ParseError) -> String {
        var scalars = String.UnicodeScalarView()
        var bytes: [UInt8] = []
        func flush() {
            if !bytes.isEmpty {
                scalars.append(contentsOf: String(decoding: bytes, as: UTF8.self).unicodeScalars)
                bytes.removeAll()
            }
        }
        var i = s.startIndex
        var pendingHigh: UInt32?
        while i < s.endIndex {
            let c = s[i]
            guard c == UInt8(ascii: "\\") else {
                bytes.append(c)
                i += 1
                continue
            }
            flush()
            guard i + 1 < s.endIndex else { throw ParseError(reason: "bad escape") }
            let e = s[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "\""): scalars.append("\"")
            case UInt8(ascii: "\\"): scalars.append("\\")
            case UInt8(ascii: "/"): scalars.append("/")
            case UInt8(ascii: "b"): scalars.append("\u{8}")
            case UInt8(ascii: "f"): scalars.append("\u{c}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                guard i + 4 <= s.endIndex, let v = UInt32(String(decoding: s[i..<(i + 4)], as: UTF8.self), radix: 16)
                else { throw ParseError(reason: "bad \\u escape") }
                i += 4
                if (0xD800...0xDBFF).contains(v) {
                    pendingHigh = v
                    continue
                }
                if (0xDC00...0xDFFF).contains(v), let h = pendingHigh {
                    let combined = 0x10000 + ((h - 0xD800) << 10) + (v - 0xDC00)
                    scalars.append(Unicode.Scalar(combined) ?? "\u{FFFD}")
                } else {
                    scalars.append(Unicode.Scalar(v) ?? "\u{FFFD}")
                }
                pendingHigh = nil
            default:
                throw ParseError(reason: "bad escape")
            }
        }
        flush()
        return String(scalars)
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20 || u.value == 0x7F: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    // MARK: RFC 3339 time

    /// `2026-06-10T08:00:03Z`, with optional fractional seconds and a `±hh:mm` offset.
    public static func parseTime(_ text: String) -> Date? {
        let u = Array(text.utf8)
        guard u.count >= 20 else { return nil }
        func num(_ a: Int, _ n: Int) -> Int? {
            var v = 0
            for k in a..<(a + n) {
                guard k < u.count, (48...57).contains(u[k]) else { return nil }
                v = v * 10 + Int(u[k] - 48)
            }
            return v
        }
        guard let y = num(0, 4), u[4] == 45, let mo = num(5, 2), u[7] == 45, let d = num(8, 2),
            u[10] == UInt8(ascii: "T") || u[10] == UInt8(ascii: "t") || u[10] == 32, let h = num(11, 2), u[13] == 58,
            let mi = num(14, 2), u[16] == 58, let s = num(17, 2), (1...12).contains(mo), (1...31).contains(d), h < 24,
            mi < 60, s <= 60
        else { return nil }
        var i = 19
        var fraction = 0.0
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            let start = i
            while i < u.count, (48...57).contains(u[i]) {
                fraction += Double(u[i] - 48) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        guard i < u.count else { return nil }
        var offset = 0
        if u[i] == UInt8(ascii: "Z") || u[i] == UInt8(ascii: "z") {
            i += 1
        } else if u[i] == UInt8(ascii: "+") || u[i] == UInt8(ascii: "-") {
            guard let oh = num(i + 1, 2), u.count > i + 3, u[i + 3] == 58, let om = num(i + 4, 2) else { return nil }
            offset = (oh * 60 + om) * 60 * (u[i] == UInt8(ascii: "+") ? 1 : -1)
            i += 6
        } else {
            return nil
        }
        guard i == u.count else { return nil }
        let days = daysFromCivil(y, mo, d)
        let seconds = Double(days * 86400 + h * 3600 + mi * 60 + s - offset) + fraction
        return Date(timeIntervalSince1970: seconds)
    }

    public static func formatTime(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        let whole = Int(t.rounded(.down))
        let millis = Int(((t - Double(whole)) * 1000).rounded())
        var days = whole / 86400
        var rest = whole % 86400
        if rest < 0 {
            rest += 86400
            days -= 1
        }
        let (y, m, d) = civilFromDays(days)
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let base = "\(y)-\(two(m))-\(two(d))T\(two(rest / 3600)):\(two(rest % 3600 / 60)):\(two(rest % 60))"
        if millis == 0 || millis == 1000 { return base + "Z" }
        let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return base + ".\(ms)Z"
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    static func daysFromCivil(_ y0: Int, _ m: Int, _ d: Int) -> Int {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    static func civilFromDays(_ z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp + (mp < 10 ? 3 : -9)
        return (m <= 2 ? y + 1 : y, m, d)
    }
}
