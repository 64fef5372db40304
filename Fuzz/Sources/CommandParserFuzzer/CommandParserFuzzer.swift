import FuzzSupport
import SMTPCore

/// Feeds one command line (the bytes as UTF-8, invalid sequences replaced) to
/// `SMTPCommandParser.parse` and checks:
///
/// - no crash, no hang (libFuzzer's -timeout), no memory error (ASan);
/// - determinism: the same line parses to the same command or the same error twice, and the same when
///   the line is a slice in the middle of a larger string (non-zero start index);
/// - an error is a 5xx reply with a matching 5.x.x enhanced code and printable-ASCII text (the reply
///   goes to the client as is: a CR or LF in it would inject a reply line);
/// - an accepted MAIL or RCPT path has no CR, LF, NUL or other C0 control or DEL (but see KI-1), a
///   local part of at most 64 octets and a domain of at most 255; a UTF-8 sender only with SMTPUTF8;
/// - an accepted EHLO/HELO name is printable ASCII; ENVID printable ASCII; ORCPT has no control
///   character; SIZE and BDAT sizes are not negative;
/// - (the round trip through `SMTPCommandEncoder`, as ClientSession relays a command, is
///   CommandRoundtripFuzzer's).
///
/// With MAILFLOW_FUZZ_STRICT=1 also (policy, see docs/fuzzing.md): known issues fail; a path of at
/// most 256 octets (the parser counts characters); no C1 control, format character
/// (bidi overrides, zero-width) or line/paragraph separator in an accepted path, and a path read
/// octet by octet (as a byte-oriented next hop reads it) has only the ASCII octets its grammar allows,
/// so no `>`, `"`, `@` or space hides inside a combined Unicode character.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    beginInput(bytes)
    let line = String(decoding: bytes, as: UTF8.self)

    let first = parse(line[...])
    check(parse(line[...]) == first, "parse is not deterministic for \(escaped(line))")
    // The same line inside a larger string: NUL is a grapheme boundary on both sides, so the slice has
    // the same characters.
    let padded = "\0" + line + "\0"
    let slice = padded.dropFirst().dropLast()
    check(slice == line[...], "slice differs from the line")
    check(parse(slice) == first, "parse differs for a slice with a non-zero start index: \(escaped(line))")

    switch first {
    case .failure(let error):
        checkErrorReply(error.reply, line)
    case .success(let command):
        checkAccepted(command, line)
    }
    return 0
}

func parse(_ line: Substring) -> Result<SMTPCommand, SMTPCommandError> {
    Result { () throws(SMTPCommandError) -> SMTPCommand in try SMTPCommandParser.parse(line) }
}

func isPrintableASCII(_ s: String) -> Bool { s.utf8.allSatisfy { (32...126).contains($0) } }

func checkErrorReply(_ reply: SMTPReply, _ line: String) {
    check((500...559).contains(reply.code), "error reply code \(reply.code) for \(escaped(line))")
    check(reply.enhancedCode?.statusClass == 5, "error reply without a 5.x.x enhanced code for \(escaped(line))")
    check(!reply.lines.isEmpty, "error reply with no text")
    for text in reply.lines {
        check(isPrintableASCII(text), "error reply text \(escaped(text)) is not printable ASCII, for \(escaped(line))")
    }
}

/// C0 controls (CR, LF, NUL, ESC, TAB, ...) and DEL.
func hasC0OrDEL(_ s: String) -> Bool { s.unicodeScalars.contains { $0.value < 32 || $0.value == 127 } }

func checkPath(_ m: Mailbox, utf8Allowed: Bool, _ line: String) {
    let what = "\(escaped(m.description)) from \(escaped(line))"
    check(!m.localPart.isEmpty && !m.domain.isEmpty, "empty local part or domain in \(what)")
    check(!hasC0OrDEL(m.localPart) && !hasC0OrDEL(m.domain), "control character in accepted path \(what)")
    check(m.localPart.utf8.count <= SMTPLimits.localPartLength, "local part over 64 octets in \(what)")
    check(m.domain.utf8.count <= SMTPLimits.domainLength, "domain over 255 octets in \(what)")
    if !utf8Allowed {
        check(!m.needsSMTPUTF8, "UTF-8 address accepted without SMTPUTF8: \(what)")
    }
    if strictMode { checkPathStrict(m, what) }
}

/// Unicode scalars that have no place in an address that is logged, shown and relayed: C1 controls,
/// format characters (bidi overrides and isolates, zero-width joiners and spaces, soft hyphen) and
/// the line and paragraph separators.
func isSuspiciousScalar(_ u: Unicode.Scalar) -> Bool {
    switch u.properties.generalCategory {
    case .control, .format, .lineSeparator, .paragraphSeparator: return true
    default: return false
    }
}

func checkPathStrict(_ m: Mailbox, _ what: String) {
    // RFC 5321 §4.5.3.1.3 counts octets; the parser counts characters, so a UTF-8 path may be longer.
    check(m.description.utf8.count + 2 <= SMTPLimits.pathLength, "strict: path over 256 octets in \(what)")
    check(
        !m.localPart.unicodeScalars.contains(where: isSuspiciousScalar)
            && !m.domain.unicodeScalars.contains(where: isSuspiciousScalar),
        "strict: control, format or separator character in accepted path \(what)")
    // Octet by octet, as a byte-oriented parser at the next hop sees the path.
    let local = Array(m.localPart.utf8)
    if local.first == UInt8(ascii: "\"") {
        var escapedPair = false
        for (i, b) in local.enumerated().dropFirst() where b < 0x80 {
            if escapedPair {
                escapedPair = false
            } else if b == UInt8(ascii: "\\") {
                escapedPair = true
            } else if b == UInt8(ascii: "\"") {
                check(i == local.count - 1, "strict: a raw '\"' octet inside the quoted local part of \(what)")
            }
        }
    } else {
        let atextSpecials = Array("!#$%&'*+-/=?^_`{|}~.".utf8)
        for b in local where b < 0x80 {
            let ok =
                (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b)
                || atextSpecials.contains(b)
            check(ok, "strict: octet \(escaped([b])) outside atext in the unquoted local part of \(what)")
        }
    }
    if !m.isAddressLiteral {
        for b in m.domain.utf8 where b < 0x80 {
            let ok =
                (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b)
                || b == UInt8(ascii: "-") || b == UInt8(ascii: ".")
            check(ok, "strict: octet \(escaped([b])) outside letters, digits, '-' and '.' in the domain of \(what)")
        }
    }
}

func checkAccepted(_ command: SMTPCommand, _ line: String) {
    switch command {
    case .ehlo(let name), .helo(let name):
        check(!name.isEmpty && name.utf8.allSatisfy { (33...126).contains($0) }, "bad hello name \(escaped(name))")
    case .mail(let path, let p):
        if case .mailbox(let m) = path { checkPath(m, utf8Allowed: p.smtpUTF8, line) }
        if let size = p.size { check(size >= 0, "negative SIZE from \(escaped(line))") }
        if let id = p.envelopeID {
            check(!id.isEmpty && isPrintableASCII(id), "ENVID \(escaped(id)) is not printable ASCII")
        }
        if let submitter = p.authenticatedSubmitter {
            check(
                !submitter.isEmpty && submitter.utf8.allSatisfy { (33...126).contains($0) },
                "AUTH= \(escaped(submitter)) is not printable ASCII without spaces")
        }
    case .rcpt(let path, let p):
        if case .mailbox(let m) = path { checkPath(m, utf8Allowed: true, line) }
        if let o = p.originalRecipient {
            check(
                !o.addressType.isEmpty && o.addressType.utf8.allSatisfy { $0 < 0x80 && $0 > 32 && $0 != 59 },
                "ORCPT type \(escaped(o.addressType))")
            check(
                !o.address.isEmpty && !o.address.unicodeScalars.contains { $0.properties.generalCategory == .control },
                "ORCPT address \(escaped(o.address)) has a control character")
            if strictMode {
                check(
                    !o.address.unicodeScalars.contains(where: isSuspiciousScalar),
                    "strict: ORCPT address \(escaped(o.address)) has a format or separator character")
            }
        }
        if let n = p.notify {
            check(!(n.never && (n.success || n.failure || n.delay)), "NOTIFY=NEVER with others")
        }
    case .bdat(let size, _):
        check(size >= 0, "negative BDAT size from \(escaped(line))")
    case .vrfy(let arg):
        check(!arg.isEmpty, "empty VRFY argument")
    case .auth(let mechanism, let initial):
        check(
            (1...20).contains(mechanism.utf8.count)
                && mechanism.utf8.allSatisfy {
                    (65...90).contains($0) || (48...57).contains($0) || $0 == 45 || $0 == 95
                },
            "AUTH mechanism \(escaped(mechanism)) is not an upper-case SASL name")
        if let initial {
            check(initial == "=" || SASLBase64.isWellFormed(initial[...]), "AUTH initial response \(escaped(initial))")
        }
    case .data, .rset, .noop, .quit, .help, .startTLS:
        break
    }
}

@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}
