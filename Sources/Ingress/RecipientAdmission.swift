import SMTPCore

/// The admission checks a recipient passes once the tenant directory has accepted it, as
/// `AdmissionControl` answers them. A protocol so `RecipientAdmission` is tested against a scripted
/// fake, without a server.
protocol RecipientAdmissionChecks {
    func forest(forTenant tenant: String) -> ResourceForest
    func admitForestSession(
        tenant: String, source: String, holdsOtherForest: Bool
    ) -> (AdmissionDecision, ResourceForest)
    func releaseForestSession(_ forest: String)
    func admitForestMessage(tenant: String, source: String) -> AdmissionDecision
    func admitRecipient(mailbox: String, sender: String, tenant: String, source: String) -> AdmissionDecision
}

extension AdmissionControl: RecipientAdmissionChecks {}

/// The recipient policy of one session (RCPT TO), in order: the tenant directory (ours, relayed
/// for a trusted client, or refused), the tenant's own size limit against the declared `SIZE=`
/// (RFC 1870, `552 5.3.4`), the resource forest's session cap (docs/admission.md), the forest's
/// message rate and the mailbox's receive rate.
///
/// A value the session handler keeps: it knows which forest slots the session holds (a slot is
/// taken at the first *accepted* recipient for a forest and held until the session ends) and which
/// forests this transaction has been charged a message for (once per transaction). `decide` only
/// asks; the `Verdict` says what was taken, and `apply` records it:
///
/// ```swift
/// let verdict = recipients.decide(request, directory: policy.directory, admission: ctx.admission)
/// recipients.apply(verdict)
/// perform(session.recipientChecked(path, params, verdict.decision))
/// ```
struct RecipientAdmission: Sendable, Equatable {
    /// Forests whose session slot this session holds.
    private(set) var heldForests: Set<String> = []
    /// Forests whose message rate this transaction has already been charged.
    private(set) var chargedForests: Set<String> = []

    /// One RCPT, with what the session knows about its transaction.
    struct Request: Sendable, Equatable {
        var path: ForwardPath
        /// The transaction's reverse path (`""` for the null sender).
        var sender: String
        /// `SIZE=` from MAIL, if the client declared one.
        var declaredSize: Int?
        /// The client is in the trusted networks and may relay.
        var relayAllowed: Bool
        /// The client's address, for rate keys and throttle events.
        var source: String
    }

    /// The answer for one recipient and the grants taken for it.
    struct Verdict: Sendable, Equatable {
        var decision: ServerSession.RecipientDecision
        /// The forest whose session slot was taken for this recipient; the session now holds it.
        /// Nil when none was taken or when a later check refused and the slot was given back.
        var tookForestSlot: String?
        /// The forest whose message rate this recipient charged (kept even if a later check refused).
        var chargedForest: String?

        init(_ decision: ServerSession.RecipientDecision, tookForestSlot: String? = nil, chargedForest: String? = nil) {
            self.decision = decision
            self.tookForestSlot = tookForestSlot
            self.chargedForest = chargedForest
        }
    }

    /// Asks the directory, then admission control. The forest slot is taken first (the scarce
    /// resource) and given back at once if a later check refuses this recipient, so a session
    /// counts against its forest only from its first accepted recipient.
    func decide(
        _ request: Request, directory: TenantDirectory, admission: some RecipientAdmissionChecks
    ) -> Verdict {
        let decision = directory.decide(request.path, relayAllowed: request.relayAllowed)
        guard case .accept(let route) = decision, let domain = route.localDomain,
            let tenant = directory.tenant(forDomain: domain)
        else { return Verdict(decision) }
        if let declared = request.declaredSize, let limit = tenant.maxMessageSize, declared > limit {
            return Verdict(
                .reject(
                    SMTPReply(552, .init(5, 3, 4), "Message size exceeds the limit of \(limit) octets for \(domain)"),
                    refusal: .messageSize))
        }
        let forest = admission.forest(forTenant: tenant.name).name
        var took: String?
        var charged: String?
        func refuse(_ reply: SMTPReply) -> Verdict {
            if let took { admission.releaseForestSession(took) }
            return Verdict(.reject(reply), chargedForest: charged)
        }
        if !heldForests.contains(forest) {
            let (answer, _) = admission.admitForestSession(
                tenant: tenant.name, source: request.source, holdsOtherForest: !heldForests.isEmpty)
            switch answer {
            case .admit: took = forest
            case .refuse(let r): return Verdict(.reject(r))
            case .refuseAndClose(let r): return Verdict(.rejectAndClose(r))
            }
        }
        if !chargedForests.contains(forest) {
            if case .refuse(let r) = admission.admitForestMessage(tenant: tenant.name, source: request.source) {
                return refuse(r)
            }
            charged = forest
        }
        if case .mailbox(let m) = request.path,
            case .refuse(let r) = admission.admitRecipient(
                mailbox: m.description, sender: request.sender, tenant: tenant.name, source: request.source)
        {
            return refuse(r)
        }
        return Verdict(decision, tookForestSlot: took, chargedForest: charged)
    }

    /// Records the grants a verdict took.
    mutating func apply(_ verdict: Verdict) {
        if let f = verdict.tookForestSlot { heldForests.insert(f) }
        if let f = verdict.chargedForest { chargedForests.insert(f) }
    }

    /// The transaction ended (committed, refused or reset): the next one is charged afresh.
    mutating func transactionEnded() {
        chargedForests = []
    }

    /// The session ended: every forest slot goes back. Runs once; a second call gives back nothing.
    mutating func releaseAll(to admission: some RecipientAdmissionChecks) {
        for f in heldForests.sorted() { admission.releaseForestSession(f) }
        heldForests = []
        chargedForests = []
    }
}

extension TenantDirectory {
    /// The message size limit of a transaction: the server's, lowered to the smallest limit of the
    /// tenants its local recipients belong to (`552 5.3.4` past it).
    func sizeLimit(for recipients: [AcceptedRecipient], serverLimit: Int) -> Int {
        recipients.reduce(serverLimit) { limit, r in
            guard let d = r.route.localDomain, let s = tenant(forDomain: d)?.maxMessageSize else { return limit }
            return min(limit, s)
        }
    }

    /// The tenant a message is recorded under: the first recipient's tenant for inbound mail; for
    /// relayed mail, the tenant that owns the sender's domain; nil when neither is a tenant's.
    func owningTenant(of transaction: MailTransaction) -> String? {
        if let first = transaction.recipients.first {
            if let d = first.route.localDomain, let t = tenant(forDomain: d) { return t.name }
        }
        guard let domain = transaction.sender.address.split(separator: "@").last else { return nil }
        return tenant(forDomain: String(domain))?.name
    }
}
