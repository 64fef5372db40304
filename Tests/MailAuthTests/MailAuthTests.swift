import MailAuth
import Testing

struct MailAuthModuleTests {
    @Test func theModuleLinks() {
        #expect(String(describing: MailAuth.self) == "MailAuth")
    }
}
