import Foundation
import Logging
import Synchronization
import Testing

@testable import MailflowApp

final class Lines: Sendable {
    let lines = Mutex<[String]>([])
    func append(_ s: String) { lines.withLock { $0.append(s) } }
    var all: [String] { lines.withLock { $0 } }
}

struct JSONLogHandlerTests {
    func object(_ line: String) throws -> [String: String] {
        #expect(line.hasSuffix("\n") && line.filter { $0 == "\n" }.count == 1)
        return try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
    }

    @Test func eachEventIsOneJSONObjectWithItsMetadata() throws {
        let out = Lines()
        var logger = Logger(label: "mailflow") { JSONLogHandler(label: $0, write: out.append) }
        logger[metadataKey: "client"] = "192.0.2.7"
        logger.info("queued", metadata: ["queue_id": "5XQKPVG483DHYM44"])
        logger.debug("not at info")
        logger.warning(
            "odd \"text\"\nwith\ttabs \u{1}\u{7f} and \u{2028}", metadata: ["message": "collides", "reason": "a\\b"])
        let lines = out.all
        #expect(lines.count == 2)
        let first = try object(lines[0])
        #expect(first["message"] == "queued" && first["level"] == "info" && first["logger"] == "mailflow")
        #expect(first["queue_id"] == "5XQKPVG483DHYM44" && first["client"] == "192.0.2.7")
        #expect(first["time"]?.hasSuffix("Z") == true && first["time"]?.contains(".") == true)
        #expect(first["source"] == "MailflowAppTests")
        #expect(lines[0].hasPrefix("{\"time\":"))
        let second = try object(lines[1])
        #expect(second["message"] == "odd \"text\"\nwith\ttabs \u{1}\u{7f} and \u{2028}")
        #expect(second["meta.message"] == "collides" && second["reason"] == "a\\b")
        #expect(!lines[1].dropLast().contains("\n"))
    }
}
