import DNSClient
import Testing

/// Compression pointers a hostile or broken DNS server might send (RFC 1035 §4.1.4): loops in every
/// shape, chains, pointers inside RDATA. Each must end in a `DNSDecodingError`, with work bounded
/// by the message size, never a hang or a crash.
@Suite("Compression pointer loops")
struct CompressionLoopTests {
    /// Header with `qd` questions and `an` answers.
    func header(qd: Int = 1, an: Int = 0) -> [UInt8] {
        [0xBE, 0xEF, 0x81, 0x80, UInt8(qd >> 8), UInt8(qd & 0xFF), UInt8(an >> 8), UInt8(an & 0xFF), 0, 0, 0, 0]
    }

    func decodeError(_ packet: [UInt8]) -> DNSDecodingError? {
        do {
            _ = try DNSMessage.decode(packet)
            return nil
        } catch {
            return error
        }
    }

    @Test func twoPointersPointingAtEachOther() {
        // Question name at 12 is a pointer to 14, which points back to 12.
        let packet = header() + [0xC0, 14, 0xC0, 12, 0, 1, 0, 1]
        guard case .compressionLoop(target: 14, offset: 12)? = decodeError(packet) else {
            Issue.record("got \(String(describing: decodeError(packet)))")
            return
        }
    }

    @Test func aLabelThenAPointerBackToTheSameLabel() {
        // "a" then a pointer to the "a": a.a.a.a... if followed blindly.
        let packet = header() + [1, 0x61, 0xC0, 12, 0, 1, 0, 1]
        guard case .compressionLoop(target: 12, offset: 14)? = decodeError(packet) else {
            Issue.record("got \(String(describing: decodeError(packet)))")
            return
        }
    }

    @Test func aThreePointerCycle() {
        // 12 -> 16 -> 14 -> 12: the first hop is forward, so refused at once.
        let packet = header() + [0xC0, 16, 0xC0, 12, 0xC0, 14, 0, 1, 0, 1]
        guard case .compressionLoop? = decodeError(packet) else {
            Issue.record("got \(String(describing: decodeError(packet)))")
            return
        }
    }

    @Test func aPointerIntoTheHeader() {
        // Offset 4 holds the counts (0, 1): read as a label of length 0 -> the root, harmless.
        // Offset 2 holds 0x81 (a 0b10 label type): refused.
        let packet = header() + [0xC0, 2, 0, 1, 0, 1]
        guard case .unsupportedLabelType(offset: 2)? = decodeError(packet) else {
            Issue.record("got \(String(describing: decodeError(packet)))")
            return
        }
    }

    @Test func anMXExchangePointingAtItself() {
        // Question example.com MX; answer: owner -> 12, MX 10, exchange is a pointer to itself.
        let question: [UInt8] = [7] + Array("example".utf8) + [3] + Array("com".utf8) + [0, 0, 15, 0, 1]
        let exchangeOffset = 12 + question.count + 14
        let answer: [UInt8] =
            [0xC0, 12, 0, 15, 0, 1, 0, 0, 1, 44, 0, 4, 0, 10] + [0xC0, UInt8(exchangeOffset)]
        let packet = header(an: 1) + question + answer
        guard case .compressionLoop(target: exchangeOffset, offset: exchangeOffset)? = decodeError(packet) else {
            Issue.record("got \(String(describing: decodeError(packet)))")
            return
        }
    }

    @Test func aLongChainOfBackPointersIsCutAt127() {
        // Question 0 is "a."; question i's name points to question i-1's name, itself a pointer:
        // question i is i pointers deep. Legal up to 127 hops, refused past it.
        func chain(_ questions: Int) -> [UInt8] {
            var packet = header(qd: questions) + [1, 0x61, 0, 0, 1, 0, 1]
            var previous = 12
            for _ in 1..<questions {
                let here = packet.count
                packet += [0xC0 | UInt8(previous >> 8), UInt8(previous & 0xFF), 0, 1, 0, 1]
                previous = here
            }
            return packet
        }
        #expect(decodeError(chain(128)) == nil, "127 hops deep still decodes")
        guard case .tooManyPointers? = decodeError(chain(129)) else {
            Issue.record("got \(String(describing: decodeError(chain(129))))")
            return
        }
    }

    @Test func pointersThatRepeatLabelsPastTheNameLimit() throws {
        // A 63-octet label at 12, then names that each add one 63-octet label and point back to the
        // previous: the fifth is over 255 octets once decompressed.
        let label: [UInt8] = [63] + [UInt8](repeating: 0x62, count: 63)
        var packet = header(qd: 5) + label + [0, 0, 1, 0, 1]
        var previous = 12
        for _ in 1..<5 {
            let here = packet.count
            packet += label + [0xC0 | UInt8(previous >> 8), UInt8(previous & 0xFF), 0, 1, 0, 1]
            previous = here
        }
        guard case .nameTooLong? = decodeError(packet) else {
            Issue.record("got \(String(describing: decodeError(packet)))")
            return
        }
    }

    @Test func aMessageFullOfDeepChainsDecodesInBoundedWork() throws {
        // As many questions as 14-bit pointers can reach, each up to 127 hops deep: about 170,000
        // hops in all, every name "a.".
        var packet = header(qd: 0) + [1, 0x61, 0, 0, 1, 0, 1]
        var previous = (offset: 12, depth: 0)
        var questions = 1
        while packet.count + 6 <= 0x3FFF {
            let target = previous.depth < 127 ? previous : (offset: 12, depth: 0)
            let here = packet.count
            packet += [0xC0 | UInt8(target.offset >> 8), UInt8(target.offset & 0xFF), 0, 1, 0, 1]
            previous = (here, target.depth + 1)
            questions += 1
        }
        packet[4] = UInt8(questions >> 8)
        packet[5] = UInt8(questions & 0xFF)
        let message = try DNSMessage.decode(packet)
        #expect(message.questions.count == questions)
        #expect(message.questions.allSatisfy { $0.name.description == "a." })
    }

    @Test func countsOfSixtyFiveThousandOnAnEmptyBodyAreTruncatedNotSlow() {
        let packet: [UInt8] = [0, 1, 0x81, 0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        guard case .truncated? = decodeError(packet) else {
            Issue.record("got \(String(describing: decodeError(packet)))")
            return
        }
    }
}
