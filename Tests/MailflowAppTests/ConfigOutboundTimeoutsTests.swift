import Delivery
import NIOCore
import Testing
import Yams

@testable import MailflowApp

/// `timeouts.outbound`: the deadlines Mailflow gives remote servers (`OutboundTimeouts`).
struct ConfigOutboundTimeoutsTests {
    func decode(_ yaml: String) throws -> MailflowConfig {
        var c = MailflowConfig()
        try c.decodeTimeouts(try ConfigReader(try #require(try Yams.compose(yaml: yaml)), "timeouts"))
        return c
    }

    func refusal(_ yaml: String) -> String {
        do {
            _ = try decode(yaml)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test func defaultsAreRFC5321sAndComeFromOutboundTimeouts() {
        let c = MailflowConfig()
        #expect(c.outboundTimeouts == OutboundTimeouts())
        #expect(
            c.outboundTimeouts.greeting == TimeAmount.seconds(Int64(300))
                && c.outboundTimeouts.dataInitiation == TimeAmount.seconds(Int64(120)))
        #expect(
            c.outboundTimeouts.dataBlock == TimeAmount.seconds(Int64(180))
                && c.outboundTimeouts.dataTermination == TimeAmount.seconds(Int64(600)))
    }

    @Test func everyKeyIsRead() throws {
        let c = try decode(
            """
            outbound:
              connect: 5
              greeting: 1m
              command: 2
              tls_handshake: 3
              data_init: 4
              data_block: 6
              data_done: 7
            """)
        #expect(
            c.outboundTimeouts
                == OutboundTimeouts(
                    connect: TimeAmount.seconds(Int64(5)), greeting: TimeAmount.seconds(Int64(60)),
                    command: TimeAmount.seconds(Int64(2)),
                    tlsHandshake: TimeAmount.seconds(Int64(3)),
                    dataInitiation: TimeAmount.seconds(Int64(4)), dataBlock: TimeAmount.seconds(Int64(6)),
                    dataTermination: TimeAmount.seconds(Int64(7))))
    }

    @Test func aPartialMappingKeepsTheOtherDefaults() throws {
        let c = try decode("outbound:\n  greeting: 10\n")
        var expected = OutboundTimeouts()
        expected.greeting = TimeAmount.seconds(Int64(10))
        #expect(c.outboundTimeouts == expected)
    }

    @Test func badValuesAreRefusedWithTheirKey() {
        #expect(refusal("outbound:\n  grreting: 10\n").contains("timeouts.outbound"))
        #expect(refusal("outbound:\n  grreting: 10\n").contains("unknown key"))
        #expect(refusal("outbound:\n  data_done: 2h\n").contains("timeouts.outbound.data_done: must be at most 1h"))
        #expect(refusal("outbound:\n  command: 0\n").contains("timeouts.outbound.command"))
        #expect(refusal("outbound:\n  command: soon\n").contains("expected a duration"))
    }
}
