import Foundation

/// DKIM signing of relayed mail (RFC 6376): a signer chosen for the message's sender, which returns
/// the `DKIM-Signature` field for the message exactly as it is sent (Mailflow's prefix lines, then
/// the stored message), or nil to send it unsigned. Delivery only carries the closure; MailflowApp
/// makes it from the tenant's keys (`tenants[].dkim`) with MailAuth's signer.
public struct OutboundSigning: Sendable {
    /// Larger messages are sent unsigned: signing reads the whole message into memory.
    public static let maxSignedSize = 64 << 20

    public let sign: @Sendable ([UInt8]) -> String?

    public init(_ sign: @escaping @Sendable ([UInt8]) -> String?) { self.sign = sign }
}

extension DeliveryScheduler {
    /// `body` with a DKIM-Signature field put first, when `signing` makes one over the bytes as
    /// sent; unchanged (and logged) when the message is too large or cannot be read. The read and
    /// the hashing run on the delivery workers, not the cooperative pool.
    func signed(_ body: OutboundBody, with signing: OutboundSigning, queueID: String) async -> OutboundBody {
        guard body.size <= OutboundSigning.maxSignedSize else {
            logger.warning("message too large to DKIM-sign, sent unsigned", metadata: ["queue_id": "\(queueID)"])
            return body
        }
        do {
            let field = try await blocking { () throws -> String? in
                var bytes = [UInt8](body.prefix)
                try body.reader.forEachChunk { bytes.append(contentsOf: $0) }
                return signing.sign(bytes)
            }
            guard let field else { return body }
            return OutboundBody(prefix: Data(field.utf8) + body.prefix, reader: body.reader)
        } catch {
            logger.warning(
                "DKIM signing could not read the message, sent unsigned: \(error)", metadata: ["queue_id": "\(queueID)"]
            )
            return body
        }
    }
}
