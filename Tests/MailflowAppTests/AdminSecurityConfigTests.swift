import Foundation
import Logging
import Testing

@testable import MailflowApp

/// `admin.tls`, `admin.signin_*`, and the data directory's permissions at start.
struct AdminSecurityConfigTests {
    @Test func adminTLSIsGeneratedOrAPairOfFiles() throws {
        #expect(try MailflowConfig.parse(yaml: "admin: {listen: 127.0.0.1:8025}").adminTLS == nil)
        #expect(try MailflowConfig.parse(yaml: "admin:\n  tls: generated\n").adminTLS == .generated)
        let files = try MailflowConfig.parse(
            yaml: "admin:\n  tls:\n    certificate: c.pem\n    key: /k.pem\n", baseDirectory: "/etc/mf")
        #expect(files.adminTLS == .files(certificate: "/etc/mf/c.pem", key: "/k.pem"))
        for (yaml, says) in [
            ("admin:\n  tls: yes-please\n", "admin.tls: 'yes-please' is not generated or off"),
            (
                "admin:\n  tls:\n    certificate: c.pem\n",
                "admin.tls.key: is required when admin.tls.certificate is set"
            ),
            ("admin:\n  tls:\n    cert: c.pem\n", "admin.tls.cert: unknown key"),
            ("admin:\n  signin_failures: 0\n", "admin.signin_failures: must be between 1 and 1000000"),
        ] {
            #expect(throws: MailflowConfig.ConfigError.self, "\(yaml)") { try MailflowConfig.parse(yaml: yaml) }
            do {
                _ = try MailflowConfig.parse(yaml: yaml)
            } catch {
                #expect("\(error)".contains(says), "\(error)")
            }
        }
        let limits = try MailflowConfig.parse(yaml: "admin:\n  signin_failures: 4\n  signin_window: 2m\n")
        #expect(limits.adminSignInFailures == 4 && limits.adminSignInWindow == 120)
    }

    func directory(mode: mode_t) throws -> String {
        let d = NSTemporaryDirectory() + "mf-perm-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        #expect(chmod(d, mode) == 0)
        return d
    }

    @Test func theDataDirectoryIsMadeOwnerOnlyAndRefusedWhenOthersMayWrite() throws {
        let logger = Logger(label: "test")
        let fresh = NSTemporaryDirectory() + "mf-perm-\(UUID().uuidString)/data"
        try DataDirectoryPermissions.prepare(dataDirectory: fresh, logger: logger)
        #expect(DataDirectoryPermissions.mode(of: fresh) == 0o700)
        for mode: mode_t in [0o777, 0o770, 0o702] {
            let d = try directory(mode: mode)
            #expect(throws: StartupError.self, "\(String(mode, radix: 8))") {
                try DataDirectoryPermissions.prepare(dataDirectory: d, logger: logger)
            }
        }
        let open = try directory(mode: 0o755)
        try DataDirectoryPermissions.prepare(dataDirectory: open, logger: logger)
        #expect(DataDirectoryPermissions.mode(of: open) == 0o750)
        #expect(
            DataDirectoryPermissions.refusal(directoryMode: 0o777, path: "/d")
                == "data directory /d is writable by every user (mode 0777): another user could replace the queue or a key; run chmod 700 /d"
        )
        #expect(DataDirectoryPermissions.refusal(keyMode: 0o640, path: "/k") == nil)
        #expect(
            DataDirectoryPermissions.refusal(keyMode: 0o644, path: "/k")
                == "key /k is readable by every user (mode 0644): run chmod 600 /k")
    }

    @Test func ownSecretsAreSetBackTo0600AndAWorldReadableConfiguredKeyIsRefused() throws {
        let logger = Logger(label: "test")
        let d = try directory(mode: 0o700)
        for name in ["queue.sqlite", "auth.secret"] {
            #expect(FileManager.default.createFile(atPath: "\(d)/\(name)", contents: Data("x".utf8)))
            #expect(chmod("\(d)/\(name)", 0o644) == 0)
        }
        var config = MailflowConfig()
        config.dataDirectory = d
        try DataDirectoryPermissions.secure(config: config, logger: logger)
        #expect(DataDirectoryPermissions.mode(of: "\(d)/queue.sqlite") == 0o600)
        #expect(DataDirectoryPermissions.mode(of: "\(d)/auth.secret") == 0o600)
        let key = "\(d)/configured.key"
        #expect(FileManager.default.createFile(atPath: key, contents: Data("k".utf8)))
        #expect(chmod(key, 0o644) == 0)
        config.tlsKey = key
        #expect(throws: StartupError.self) { try DataDirectoryPermissions.secure(config: config, logger: logger) }
        #expect(chmod(key, 0o640) == 0)
        try DataDirectoryPermissions.secure(config: config, logger: logger)
    }

    @Test func aSecretIsWrittenOwnerOnlyAndNeverOverAnExistingFile() throws {
        let d = try directory(mode: 0o700)
        try DataDirectoryPermissions.writeSecret(Data("s".utf8), to: "\(d)/s")
        #expect(DataDirectoryPermissions.mode(of: "\(d)/s") == 0o600)
        #expect(throws: StartupError.self) { try DataDirectoryPermissions.writeSecret(Data("t".utf8), to: "\(d)/s") }
    }
}
