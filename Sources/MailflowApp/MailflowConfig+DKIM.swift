import Delivery
import Foundation
import MailAuth

/// One DKIM key a tenant signs its outbound mail with (`tenants[].dkim[]`, docs/dkim.md).
public struct TenantDKIMKey: Sendable, Equatable {
    /// `d=`: one of the tenant's domains, or a subdomain of one.
    public var domain: String
    /// `s=`: the selector the key's record is published under.
    public var selector: String
    /// The key file, resolved against the config file's folder once loaded.
    public var keyFile: String
    /// The PEM text, read when the config is loaded: a missing or unusable key is a config error, not a
    /// delivery-time surprise.
    public var pem: String
}

extension MailflowConfig {
    /// `tenants[i].dkim`: a list of `{domain, selector, key_file}`, at most one key per domain (rotate by
    /// changing the selector and key file, then reloading).
    static func decodeTenantDKIM(_ t: ConfigReader, domains: [String]) throws -> [TenantDKIMKey] {
        guard let list = try t.list("dkim") else { return [] }
        var keys: [TenantDKIMKey] = []
        for (i, n) in list.enumerated() {
            let k = try ConfigReader(n, t.path("dkim[\(i)]"))
            try k.only(["domain", "selector", "key_file"])
            guard let domain = try k.string("domain")?.lowercased(), !domain.isEmpty else {
                throw k.error("domain", "is required")
            }
            guard domains.contains(where: { domain == $0.lowercased() || domain.hasSuffix("." + $0.lowercased()) })
            else {
                throw k.error("domain", "\(quote(domain)) is not one of this tenant's domains or a subdomain of one")
            }
            guard !keys.contains(where: { $0.domain == domain }) else {
                throw k.error("domain", "\(quote(domain)) has two keys; one signs (rotate by changing the selector)")
            }
            guard let selector = try k.string("selector"), DKIMSignature.isDomainName(selector) else {
                throw k.error("selector", "is required: letters, digits, '-', '_' and dots")
            }
            guard let file = try k.string("key_file"), !file.isEmpty else {
                throw k.error("key_file", "is required (mailflow dkim keygen makes one)")
            }
            keys.append(TenantDKIMKey(domain: domain, selector: selector.lowercased(), keyFile: file, pem: ""))
        }
        return keys
    }

    /// Reads every tenant's DKIM key file, relative to `baseDirectory`, and checks that it is a key
    /// Mailflow signs with (RSA of 2048 bits or more, or Ed25519).
    mutating func loadDKIMKeys(baseDirectory: String) throws {
        for ti in tenants.indices {
            for ki in tenants[ti].dkim.indices {
                let at = "tenants[\(ti)].dkim[\(ki)].key_file"
                let path = Self.resolve(tenants[ti].dkim[ki].keyFile, baseDirectory)
                guard let pem = try? String(contentsOfFile: path, encoding: .utf8) else {
                    throw ConfigError(path: at, message: "cannot read \(Self.quote(path))", line: nil)
                }
                do {
                    _ = try DKIMPrivateKey(pem: pem)
                } catch {
                    throw ConfigError(path: at, message: "\(Self.quote(path)): \(error)", line: nil)
                }
                tenants[ti].dkim[ki].keyFile = path
                tenants[ti].dkim[ki].pem = pem
            }
        }
    }

    /// DKIM signing for relayed mail from `sender`: the keys of the tenant owning the sender's domain,
    /// the one for the message's From domain signing (so `d=` aligns for DMARC); nil when that tenant
    /// has none.
    public func dkimSigning(forSender sender: String) -> OutboundSigning? {
        guard let at = sender.lastIndex(of: "@") else { return nil }
        let domain = sender[sender.index(after: at)...].lowercased()
        guard let tenant = tenants.first(where: { $0.domains.contains { $0.lowercased() == domain } }),
            !tenant.dkim.isEmpty
        else { return nil }
        let entries = tenant.dkim.compactMap { k in
            (try? DKIMPrivateKey(pem: k.pem)).map {
                DKIMSigningTable.Entry(domain: k.domain, selector: k.selector, key: $0)
            }
        }
        let table = DKIMSigningTable(entries)
        return OutboundSigning { bytes in table.signatureField(for: bytes, now: Date()) }
    }
}
