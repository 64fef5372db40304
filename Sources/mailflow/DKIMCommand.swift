import ArgumentParser
import Diagnostics
import Foundation
import MailAuth

#if canImport(Glibc)
    import Glibc
#endif

/// `mailflow dkim keygen|sign|verify`: DKIM keys, signing and verification (see docs/dkim.md).
struct DKIMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dkim",
        abstract: "DKIM: make a key and its DNS record, sign a message, verify a message's signatures (docs/dkim.md).",
        subcommands: [Keygen.self, Sign.self, Verify.self, Bench.self])

    /// Messages read by sign and verify are at most this large.
    static let maxMessageBytes = 64 << 20

    /// The bytes of FILE, or of standard input for `-` or no file.
    static func readMessage(_ file: String?) throws -> [UInt8] {
        let data: Data
        if let file, file != "-" {
            guard let d = FileManager.default.contents(atPath: file) else {
                throw FailureMessage(text: "mailflow: cannot read \(file)")
            }
            data = d
        } else {
            data = FileHandle.standardInput.readDataToEndOfFile()
        }
        guard data.count <= maxMessageBytes else {
            throw FailureMessage(text: "mailflow: the message is larger than \(maxMessageBytes >> 20) MiB")
        }
        guard !data.isEmpty else { throw FailureMessage(text: "mailflow: the message is empty") }
        return Array(data)
    }

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a DKIM private key (PKCS#8 PEM, mode 0600) and print the TXT record to publish.",
            discussion: """
                The key is written to DIR/DOMAIN.SELECTOR.pem (never over an existing file); standard output is a \
                zone-file fragment: SELECTOR._domainkey.DOMAIN. IN TXT ( "v=DKIM1; k=...; p=..." ).
                """)

        enum Algorithm: String, ExpressibleByArgument, CaseIterable {
            case rsa, ed25519
        }

        @Argument(help: "The signing domain (d=), e.g. example.org.") var domain: String
        @Argument(help: "The selector (s=), e.g. 2026a.") var selector: String
        @Option(help: "rsa (rsa-sha256, read everywhere) or ed25519 (ed25519-sha256, RFC 8463).")
        var algorithm: Algorithm = .rsa
        @Option(help: "RSA key size: 2048, 3072 or 4096.") var bits = 2048
        @Option(help: "Directory for the key file.") var out = "."

        func validate() throws {
            guard DKIMSignature.isDomainName(domain), domain.contains(".") else {
                throw ValidationError("'\(domain)' is not a domain name")
            }
            guard DKIMSignature.isDomainName(selector) else {
                throw ValidationError("'\(selector)' is not a selector (letters, digits, '-', '_', dots)")
            }
            guard algorithm == .ed25519 || [2048, 3072, 4096].contains(bits) else {
                throw ValidationError("--bits must be 2048, 3072 or 4096 (RFC 8301: at least 2048 is recommended)")
            }
        }

        func run() throws {
            let key: DKIMPrivateKey
            do {
                key = try DKIMPrivateKey.generate(algorithm == .rsa ? .rsaSHA256 : .ed25519SHA256, bits: bits)
            } catch {
                throw FailureMessage(text: "mailflow: \(error)")
            }
            let d = domain.lowercased()
            let s = selector.lowercased()
            let path = URL(fileURLWithPath: out).appendingPathComponent("\(d).\(s).pem").path
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            guard fd >= 0 else {
                let why = errno == EEXIST ? "it exists (a key is never overwritten)" : String(cString: strerror(errno))
                throw FailureMessage(text: "mailflow: cannot create \(path): \(why)")
            }
            let pem = Array(key.pkcs8PEM.utf8)
            let written = pem.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            let synced = fsync(fd)
            close(fd)
            guard written == pem.count, synced == 0 else {
                unlink(path)
                throw FailureMessage(text: "mailflow: cannot write \(path)")
            }
            // TXT character-strings are at most 255 bytes (RFC 1035 §3.3.14).
            let record = key.publicKeyRecord
            let strings = stride(from: 0, to: record.count, by: 250).map { start -> String in
                let from = record.index(record.startIndex, offsetBy: start)
                let to = record.index(from, offsetBy: min(250, record.count - start))
                return "\"\(record[from..<to])\""
            }
            print("; private key: \(path) (mode 0600)")
            print("\(s)._domainkey.\(d). IN TXT ( \(strings.joined(separator: " ")) )")
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign a message (relaxed/relaxed) and print it with its DKIM-Signature field first.",
            discussion: "Lines ending in LF are read as CRLF, as the message would be sent.")

        @Option(help: "The signing domain (d=).") var domain: String
        @Option(help: "The selector (s=).") var selector: String
        @Option(help: "The private key (PEM, from mailflow dkim keygen).") var key: String
        @Option(help: "The identity (i=), in the domain or a subdomain of it.") var identity: String?
        @Option(name: .customLong("expire-after"), help: "Seconds until the signature expires (x=).")
        var expireAfter: Int64?
        @Argument(help: "The message file, or - for standard input (the default).") var file: String?

        func validate() throws {
            guard DKIMSignature.isDomainName(domain) else {
                throw ValidationError("--domain '\(domain)' is not a domain name")
            }
            guard DKIMSignature.isDomainName(selector) else {
                throw ValidationError("--selector '\(selector)' is not a selector")
            }
            if let expireAfter, expireAfter <= 0 { throw ValidationError("--expire-after must be positive") }
        }

        func run() throws {
            guard let pem = try? String(contentsOfFile: key, encoding: .utf8) else {
                throw FailureMessage(text: "mailflow: cannot read the key \(key)")
            }
            let privateKey: DKIMPrivateKey
            do {
                privateKey = try DKIMPrivateKey(pem: pem)
            } catch {
                throw FailureMessage(text: "mailflow: \(key): \(error)")
            }
            let message = try DKIMCommand.readMessage(file)
            let signer = DKIMSigner(
                domain: domain, selector: selector, key: privateKey, identity: identity, expiresAfter: expireAfter)
            do {
                FileHandle.standardOutput.write(Data(try signer.sign(message, now: Date())))
            } catch {
                throw FailureMessage(text: "mailflow: \(error)")
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify every DKIM signature of a message (the first 5) and print each result.",
            discussion: """
                Exit code: 0 when every checked signature passed, 1 when there is none, 2 when one is fail, \
                policy or permerror, 3 when a key lookup failed for now (temperror) and none of those. Keys are \
                looked up at SELECTOR._domainkey.DOMAIN (TXT) through --dns-server, else /etc/resolv.conf.
                """)

        @Option(
            name: .customLong("dns-server"), help: "A DNS server to ask, IP[:PORT]; repeatable (default: resolv.conf).")
        var dnsServers: [String] = []
        @Option(help: "Seconds a key lookup may take.") var timeout: Double = 5
        @Flag(help: "Print the results as JSON.") var json = false
        @Argument(help: "The message file, or - for standard input (the default).") var file: String?

        func validate() throws {
            guard timeout > 0, timeout <= 60 else { throw ValidationError("--timeout must be in (0, 60] seconds") }
            for s in dnsServers {
                do {
                    _ = try CheckResolver.server(s)
                } catch {
                    throw ValidationError("--dns-server \(error)")
                }
            }
        }

        /// One signature's result as `--json` prints it.
        struct Entry: Encodable {
            var result: String
            var reason: String?
            var domain: String?
            var selector: String?
            var algorithm: String?
            var identity: String?
            var keyBits: Int?
            var testing: Bool

            enum CodingKeys: String, CodingKey {
                case result, reason
                case domain = "d"
                case selector = "s"
                case algorithm = "a"
                case identity = "i"
                case keyBits = "key_bits"
                case testing
            }
        }

        func run() async throws {
            let message = try DKIMCommand.readMessage(file)
            let servers = try dnsServers.map { try CheckResolver.server($0) }
            let resolver = CheckResolver.make(servers: servers, timeout: .milliseconds(Int64(timeout * 1000)))
            let results = await DKIMVerifier(resolver: DNSKeyResolver(resolver: resolver)).verify(message, now: Date())
            if json {
                let entries = results.map {
                    Entry(
                        result: $0.status.rawValue, reason: $0.reason.map { "\($0)" }, domain: $0.domain,
                        selector: $0.selector, algorithm: $0.algorithm, identity: $0.identity, keyBits: $0.keyBits,
                        testing: $0.testing)
                }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(["signatures": entries]), as: UTF8.self))
            } else if results.isEmpty {
                print("dkim=none (the message has no DKIM-Signature)")
            } else {
                for r in results {
                    var line = "dkim=\(r.status.rawValue)"
                    if let d = r.domain { line += " header.d=\(d)" }
                    if let s = r.selector { line += " header.s=\(s)" }
                    if let a = r.algorithm { line += " header.a=\(a)" }
                    if let bits = r.keyBits { line += " (\(bits)-bit key)" }
                    if r.testing { line += " (t=y: testing)" }
                    if let reason = r.reason { line += ": \(reason)" }
                    print(line)
                }
            }
            let code = Self.exitCode(results.map(\.status))
            if code != 0 { throw ExitCode(code) }
        }

        static func exitCode(_ statuses: [DKIMResult.Status]) -> Int32 {
            if statuses.isEmpty { return 1 }
            if statuses.contains(where: { [.fail, .permerror, .policy].contains($0) }) { return 2 }
            if statuses.contains(.temperror) { return 3 }
            // Not-checked signatures (neutral) beside passing ones: the checked ones decide.
            return statuses.contains(.pass) ? 0 : 2
        }
    }

    /// `scripts/bench-dkim`'s probe: signing and verifying one message over and over in this process,
    /// the key record given to the verifier from memory (DNS is not part of the figure).
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time DKIM signing and verifying of one message in process (for scripts/bench-dkim).",
            shouldDisplay: false)

        @Option var domain: String
        @Option var selector: String
        @Option var key: String
        @Option var iterations = 200
        @Argument var file: String

        struct FixedKey: DKIMKeyResolver {
            var record: String
            func keyRecords(selector: String, domain: String) async -> DKIMKeyLookup { .records([record]) }
        }

        func run() async throws {
            guard let pem = try? String(contentsOfFile: key, encoding: .utf8) else {
                throw FailureMessage(text: "mailflow: cannot read the key \(key)")
            }
            let privateKey = try DKIMPrivateKey(pem: pem)
            let message = try DKIMCommand.readMessage(file)
            let signer = DKIMSigner(domain: domain, selector: selector, key: privateKey)
            let verifier = DKIMVerifier(resolver: FixedKey(record: privateKey.publicKeyRecord))
            let clock = ContinuousClock()
            var signed = try signer.sign(message, now: Date())
            let signStart = clock.now
            for _ in 0..<iterations { signed = try signer.sign(message, now: Date()) }
            let signTime = clock.now - signStart
            var statuses: [DKIMResult.Status] = []
            let verifyStart = clock.now
            for _ in 0..<iterations { statuses = await verifier.verify(signed, now: Date()).map(\.status) }
            let verifyTime = clock.now - verifyStart
            guard statuses == [.pass] else { throw FailureMessage(text: "mailflow: bench verify gave \(statuses)") }
            func micros(_ d: Duration) -> Double {
                (Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12) / Double(iterations)
            }
            print("{\"sign_us\": \(micros(signTime)), \"verify_us\": \(micros(verifyTime))}")
        }
    }
}
