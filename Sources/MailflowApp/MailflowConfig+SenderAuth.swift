extension MailflowConfig {
    /// `sender_auth`: whether mail from other servers is checked with SPF, DKIM and DMARC
    /// (docs/sender-auth.md). Tenants choose to refuse DMARC rejects with `tenants[].dmarc_reject`.
    mutating func decodeSenderAuth(_ r: ConfigReader) throws {
        try r.only(["verify"])
        if let v = try r.bool("verify") { senderAuthVerify = v }
    }
}
