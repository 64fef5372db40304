import FuzzSupport
import NIOCore
import SMTPCore

/// Holds `SMTPCommandEncoder` to being the exact inverse of `SMTPCommandParser`, from both sides.
///
/// Parser first: the input is one command line (as UTF-8, invalid sequences replaced). When the parser
/// accepts it, the encoder must write the command, as a line with no CR, LF or NUL that parses back
/// to the same command, and writing that again gives the same line (one canonical form);
/// `encode(_:into:)` writes exactly that line and a CRLF. The one refusal allowed is of a command that
/// holds a CR, LF or NUL (the parser takes them in VRFY's argument, say; the server's framing
/// refuses such a line before the parser sees it).
///
/// Encoder first: the same bytes are read as a command built by hand, with fields cut at 0xFF octets
/// (never part of UTF-8): a selector octet, a flags octet, then local part, domain, ENVID, ORCPT type,
/// ORCPT address and a size, each possibly holding CR, LF, NUL, combining marks or anything else. When
/// the encoder writes it, the line is one line (no CR, LF, NUL) that parses back to the same command:
/// no value the encoder lets through can smuggle a command or reach the next hop changed. When it
/// refuses with `lineBreakOrNUL`, the command did hold a CR, LF or NUL.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    beginInput(bytes)
    parserFirst(String(decoding: bytes, as: UTF8.self))
    encoderFirst(Array(bytes))
    return 0
}

func parserFirst(_ line: String) {
    guard let command = try? SMTPCommandParser.parse(line[...]) else { return }
    let encoded: String
    do {
        encoded = try SMTPCommandEncoder.line(for: command)
    } catch {
        // The parser takes a CR, LF or NUL where the server's framing never lets one through
        // (`SMTPServerHandler.nextCommandLine`); the encoder refuses them wherever they are.
        check(
            error.problem == .lineBreakOrNUL && holdsLineBreakOrNUL(command),
            "the encoder refuses \(command), parsed from \(escaped(line)): \(error)")
        return
    }
    checkOneLine(encoded, command)
    check(
        (try? SMTPCommandParser.parse(encoded[...])) == command,
        "round trip: \(escaped(line)) parsed to \(command), encoded as \(escaped(encoded)), parsed back to \(parsed(encoded))"
    )
    check(
        (try? SMTPCommandEncoder.line(for: command)) == encoded,
        "the encoder is not deterministic for \(command)")
    if let again = try? SMTPCommandParser.parse(encoded[...]) {
        check(
            (try? SMTPCommandEncoder.line(for: again)) == encoded,
            "not canonical: \(escaped(encoded)) encodes again as something else")
    }
    var buffer = ByteBuffer()
    check((try? SMTPCommandEncoder.encode(command, into: &buffer)) != nil, "encode(into:) refuses \(command)")
    check(buffer == ByteBuffer(string: encoded + "\r\n"), "encode(into:) differs from line(for:) + CRLF for \(command)")
}

func encoderFirst(_ bytes: [UInt8]) {
    guard bytes.count >= 2 else { return }
    let selector = bytes[0]
    let flags = bytes[1]
    let fields = bytes.dropFirst(2).split(separator: 0xFF, omittingEmptySubsequences: false).map {
        String(decoding: $0, as: UTF8.self)
    }
    func field(_ i: Int) -> String { i < fields.count ? fields[i] : "" }
    let local = field(0)
    let domain = field(1)
    let mailbox = Mailbox(localPart: local, domain: domain)
    // The size from the sixth field's octets, so that negative and 19-digit values occur too.
    let sizeBytes = Array(field(5).utf8.prefix(8))
    let size = sizeBytes.reduce(0) { $0 << 8 | Int($1) } &- (flags & 0x80 != 0 ? 1 << 62 : 0)

    var mail = MailParameters()
    if flags & 0x01 != 0 { mail.size = size }
    if flags & 0x02 != 0 { mail.body = flags & 0x04 != 0 ? .eightBitMIME : .sevenBit }
    mail.smtpUTF8 = flags & 0x08 != 0
    if flags & 0x10 != 0 { mail.ret = flags & 0x20 != 0 ? .full : .headers }
    if flags & 0x40 != 0 { mail.envelopeID = field(2) }
    if selector & 0x80 != 0 { mail.authenticatedSubmitter = field(3) }

    var rcpt = RecipientParameters()
    if flags & 0x01 != 0 {
        rcpt.notify = DSNNotify(
            never: flags & 0x02 != 0, success: flags & 0x04 != 0, failure: flags & 0x08 != 0, delay: flags & 0x10 != 0)
    }
    if flags & 0x40 != 0 { rcpt.originalRecipient = OriginalRecipient(addressType: field(3), address: field(4)) }

    let command: SMTPCommand
    switch selector % 11 {
    case 0: command = .ehlo(local)
    case 1: command = .helo(local)
    case 2: command = .mail(local.isEmpty && domain.isEmpty ? .null : .mailbox(mailbox), mail)
    case 3: command = .rcpt(flags & 0x20 != 0 ? .postmaster : .mailbox(mailbox), rcpt)
    case 4: command = .vrfy(local)
    case 5: command = .bdat(size: size, last: flags & 0x02 != 0)
    case 6: command = .rcpt(.mailbox(mailbox), rcpt)
    case 7: command = .mail(.mailbox(mailbox), mail)
    case 8: command = .mail(.null, mail)
    case 9: command = .auth(mechanism: local, initialResponse: flags & 0x01 != 0 ? domain : nil)
    default:
        let plain: [SMTPCommand] = [.data, .rset, .noop, .quit, .help, .startTLS]
        command = plain[Int(flags) % plain.count]
    }

    do {
        let line = try SMTPCommandEncoder.line(for: command)
        checkOneLine(line, command)
        check(
            (try? SMTPCommandParser.parse(line[...])) == command,
            "the encoder wrote \(escaped(line)) for \(command), which parses to \(parsed(line))")
    } catch {
        if error.problem == .lineBreakOrNUL {
            check(holdsLineBreakOrNUL(command), "\(command) refused for a CR, LF or NUL it does not hold")
        }
        check(error.reply.code == 501 || error.reply.code == 553, "refusal reply \(error.reply)")
        check(error.reply.lines.allSatisfy { $0.utf8.allSatisfy { (32...126).contains($0) } }, "refusal text not ASCII")
    }
}

/// A written command is exactly one line: no CR, LF or NUL anywhere in it.
func checkOneLine(_ line: String, _ command: SMTPCommand) {
    check(
        !line.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 },
        "the encoder wrote a CR, LF or NUL for \(command): \(escaped(line))")
}

func holdsLineBreakOrNUL(_ command: SMTPCommand) -> Bool {
    texts(of: command).contains { $0.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 } }
}

/// Every text a command carries.
func texts(of command: SMTPCommand) -> [String] {
    switch command {
    case .ehlo(let s), .helo(let s), .vrfy(let s): return [s]
    case .mail(let path, let p):
        guard case .mailbox(let m) = path else { return [p.envelopeID ?? "", p.authenticatedSubmitter ?? ""] }
        return [m.localPart, m.domain, p.envelopeID ?? "", p.authenticatedSubmitter ?? ""]
    case .auth(let mechanism, let initial): return [mechanism, initial ?? ""]
    case .rcpt(let path, let p):
        var out = [p.originalRecipient?.addressType ?? "", p.originalRecipient?.address ?? ""]
        if case .mailbox(let m) = path { out += [m.localPart, m.domain] }
        return out
    case .data, .bdat, .rset, .noop, .quit, .help, .startTLS: return []
    }
}

func parsed(_ line: String) -> String {
    do {
        return "\(try SMTPCommandParser.parse(line[...]))"
    } catch {
        return "an error: \(error.reply)"
    }
}

@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}
