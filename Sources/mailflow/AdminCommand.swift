import AdminServer
import ArgumentParser
import Foundation
import MailQueue
import MailflowApp

struct Admin: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Admin tokens for the admin API, /metrics and the web admin center.",
        subcommands: [Token.self])

    struct Token: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create, list and remove admin tokens (stored hashed in the queue database).",
            subcommands: [Add.self, List.self, Remove.self])
    }

    static func store(_ options: ConfigOption) throws -> SQLiteQueueStore {
        let config = try options.load()
        try FileManager.default.createDirectory(atPath: config.dataDirectory, withIntermediateDirectories: true)
        return try SQLiteQueueStore(path: MailflowService.paths(dataDirectory: config.dataDirectory).queue)
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token and print it once; only its SHA-256 hash is stored.",
            discussion: """
                Use it as `Authorization: Bearer <token>` against the admin API and /metrics, or paste it \
                into the web admin center's sign-in page. Queue actions taken with it are traced as \
                api:NAME or web:NAME. Without --tenant it is an operator token and sees everything; with \
                --tenant TENANT (a tenant of the configuration) it is a tenant admin's token and sees only \
                that tenant's message trace, queued messages and service-health issues, and reports \
                problems for it; everything else answers 403.
                """)
        @OptionGroup var options: ConfigOption
        @Argument(help: "A name for the token (who or what uses it), e.g. alice or prometheus.") var name: String
        @Option(help: "Scope the token to this tenant (one of the configuration's tenants).") var tenant: String?

        func run() throws {
            let config = try options.load()
            if let tenant, !config.tenants.contains(where: { $0.name == tenant }) {
                let known = config.tenants.map(\.name).sorted().joined(separator: ", ")
                throw FailureMessage(
                    text:
                        "mailflow: no tenant named \(tenant) in the configuration (tenants: \(known.isEmpty ? "none" : known))"
                )
            }
            let store = try Admin.store(options)
            let token = AdminTokens.generate()
            do {
                try store.addAdminToken(name: name, hash: AdminTokens.hash(token), tenant: tenant)
            } catch let e as SQLiteQueueStore.AdminTokenError {
                throw FailureMessage(text: "mailflow: \(e)")
            }
            print(token)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List token names, when made, when last used, and their scope (operator or tenant:NAME).")
        @OptionGroup var options: ConfigOption

        func run() throws {
            let tokens = try Admin.store(options).adminTokens()
            if tokens.isEmpty {
                print("no admin tokens: create one with `mailflow admin token add NAME`")
                return
            }
            printTable(
                ["NAME", "CREATED", "LAST USED", "SCOPE"],
                tokens.map {
                    [
                        $0.name, isoDate($0.createdAt), $0.lastUsedAt.map(isoDate) ?? "never",
                        $0.tenant.map { "tenant:\($0)" } ?? "operator",
                    ]
                })
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a token; API calls and browser sessions made with it are refused at once.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The token's name.") var name: String

        func run() throws {
            guard try Admin.store(options).removeAdminToken(name: name) else {
                throw FailureMessage(text: "mailflow: no admin token named \(name)")
            }
            print("removed \(name)")
        }
    }
}
