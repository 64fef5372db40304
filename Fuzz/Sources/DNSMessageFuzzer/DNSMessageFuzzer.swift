import DNSClient
import FuzzSupport

/// Feeds the bytes as a DNS response from a server (UDP datagram or TCP message body) to
/// `DNSMessage.decode` and checks:
///
/// - no crash, no hang, no memory error (malformed, truncated, compression loops, oversized counts
///   and names all end in a `DNSDecodingError`);
/// - every decoded name keeps RFC 1035 §2.3.4's limits (labels of 1 to 63 octets, at most 255 on
///   the wire) however its compression pointers were laid out;
/// - a decoded message re-encoded (uncompressed) decodes to the same message, and encodes to the
///   same bytes again: what the decoder accepts is something the codec can represent exactly;
/// - the derived views (response code, OPT record, presentation form of every name) take any
///   decoded message.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    beginInput(bytes)
    let input = Array(bytes)
    let message: DNSMessage
    do {
        message = try DNSMessage.decode(input)
    } catch {
        return 0
    }
    for question in message.questions { checkName(question.name) }
    for record in message.answers + message.authority + message.additional {
        checkName(record.name)
        switch record.data {
        case .mx(let mx): checkName(mx.exchange)
        case .ptr(let name), .cname(let name), .ns(let name): checkName(name)
        case .soa(let soa):
            checkName(soa.primaryServer)
            checkName(soa.responsibleMailbox)
        default: break
        }
    }
    _ = message.responseCode
    _ = message.optRecord

    let encoded = message.encode()
    do {
        let again = try DNSMessage.decode(encoded)
        check(again == message, "re-encoded message decodes to \(again), not \(message)")
        check(again.encode() == encoded, "a second encoding differs from the first")
    } catch {
        check(false, "re-encoded message does not decode: \(error)")
    }
    return 0
}

func checkName(_ name: DNSName) {
    check(name.wireLength <= DNSName.maxWireLength, "name \(name) is \(name.wireLength) octets on the wire")
    for label in name.labels {
        check(
            !label.isEmpty && label.count <= DNSName.maxLabelLength, "label of \(label.count) octets in \(name)")
    }
    _ = name.description
    _ = name.unrooted
    _ = name.lowercased
}

@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}
