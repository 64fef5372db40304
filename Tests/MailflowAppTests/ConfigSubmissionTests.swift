import Ingress
import Testing

@testable import MailflowApp

/// The `submission` section: listeners off by default, addresses checked, failure limits read.
struct ConfigSubmissionTests {
    @Test func offByDefault() throws {
        let c = try MailflowConfig.parse(yaml: "")
        #expect(c.submissionListen.isEmpty && c.submissionImplicitTLSListen.isEmpty)
        #expect(c.submissionPolicy == SubmissionPolicy())
    }

    @Test func readsListenersAndLimits() throws {
        let c = try MailflowConfig.parse(
            yaml: """
                submission:
                  starttls: ["127.0.0.1:587", "[::1]:587"]
                  implicit_tls: ["127.0.0.1:465"]
                  max_failures: 3
                  failure_window: 10m
                  lockout: 1h
                """)
        #expect(c.submissionListen == ["127.0.0.1:587", "[::1]:587"])
        #expect(c.submissionImplicitTLSListen == ["127.0.0.1:465"])
        #expect(c.submissionPolicy.maxFailures == 3)
        #expect(c.submissionPolicy.window == 600 && c.submissionPolicy.lockout == 3600)
        #expect(try MailflowService.policy(c).submission == c.submissionPolicy)
    }

    @Test(arguments: [
        (
            "submission: {starttls: [\"mail.example:587\"]}",
            "submission.starttls[0]: 'mail.example' is not an IP address"
        ),
        ("submission: {implicit_tls: [\"127.0.0.1\"]}", "submission.implicit_tls[0]: '127.0.0.1' is not host:port"),
        ("submission: {max_failures: 0}", "submission.max_failures"),
        ("submission: {auth: [PLAIN]}", "submission.auth: unknown key"),
    ])
    func refusesBadValues(_ yaml: String, _ expected: String) {
        do {
            _ = try MailflowConfig.parse(yaml: yaml)
            Issue.record("\(yaml) was accepted")
        } catch {
            #expect("\(error)".contains(expected), "\(error)")
        }
    }
}
