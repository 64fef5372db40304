import Foundation
import MailQueue
import Testing

@Suite struct TraceQueryParametersTests {
    typealias TraceQuery = SQLiteQueueStore.TraceQuery
    let now = Date(timeIntervalSince1970: 1_795_946_400)

    @Test func everyFilterIsReadAndTrimmed() throws {
        let q = try TraceQuery(
            parameters: [
                "sender": " a@x.test ", "recipient": "b@", "message_id": "<m@x>", "queue_id": "Q1", "client_ip": "::1",
                "tenant": "contoso", "status": "Failed", "direction": "outbound", "since": "24h",
                "until": "2026-11-29T11:00:00+01:00", "limit": "5000",
            ], now: now)
        #expect(q.sender == "a@x.test" && q.recipient == "b@" && q.messageID == "<m@x>" && q.queueID == "Q1")
        #expect(q.clientAddress == "::1" && q.tenant == "contoso" && q.status == "Failed" && q.direction == "outbound")
        #expect(q.since == now - 86400 && q.until == now && q.limit == 5000)
    }

    @Test func nothingGivenIsTheDefaultQuery() throws {
        let q = try TraceQuery(parameters: ["sender": "  ", "tenant": ""], now: now)
        #expect(q == TraceQuery())
        #expect(q.limit == TraceQuery.defaultLimit)
    }

    @Test(arguments: [
        ("status", "bogus", "status must be one of pending, held, delivered, failed"),
        ("status", "", "status must not be empty"),
        ("direction", "sideways", "direction must be inbound or outbound"),
        ("since", "yesterday", "since: 'yesterday' is not an ISO 8601 time or a duration like 24h"),
        ("until", "99x", "until: '99x' is not an ISO 8601 time or a duration like 24h"),
        ("until", "2026-02-30", "until: '2026-02-30' is not an ISO 8601 time or a duration like 24h"),
        ("limit", "0", "limit must be a whole number from 1 to 5000"),
        ("limit", "5001", "limit must be a whole number from 1 to 5000"),
        ("limit", "abc", "limit must be a whole number from 1 to 5000"),
        ("limit", "", "limit must not be empty"),
    ])
    func badValuesAreRefusedByName(key: String, value: String, message: String) {
        #expect(throws: TraceQueryError(parameter: key, description: message)) {
            try TraceQuery(parameters: [key: value], now: now)
        }
    }

    @Test func timesAreISO8601OrADurationBackFromNow() {
        #expect(TraceQuery.time("30m", now: now) == now - 1800)
        #expect(TraceQuery.time("1.5h", now: now) == now - 5400)
        #expect(TraceQuery.time("7d", now: now) == now - 7 * 86400)
        #expect(TraceQuery.time("2026-11-29T10:00:00Z")?.timeIntervalSince1970 == 1_795_946_400)
        #expect(TraceQuery.time("2026-11-29")?.timeIntervalSince1970 == 1_795_910_400)
        #expect(TraceQuery.time("2026-11-29T11:00:00+01:00")?.timeIntervalSince1970 == 1_795_946_400)
        let bad = ["", "0.5", "90s", "-5m", "5w", "soon", "2026-13-01", "2026-11-29T25:00:00Z", "2026-11-29T10:00:00"]
        for text in bad {
            #expect(TraceQuery.time(text, now: now) == nil, "\(text)")
        }
    }
}
