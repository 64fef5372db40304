import AdminServer
import ArgumentParser
import Foundation
import Logging
import MailQueue
import MailflowApp

struct Admin: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Admin tokens for the admin API, /metrics and the web admin center, and the audit trail.",
        subcommands: [Token.self, Audit.self])

    struct Token: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create, list and remove admin tokens (stored hashed in the queue database).",
            subcommands: [Add.self, List.self, Remove.self])
    }

    static func store(_ options: ConfigOption) throws -> SQLiteQueueStore {
        let config = try options.load()
        // Created owner-only, and refused when others may write to it, as `serve` does.
        try DataDirectoryPermissions.prepare(dataDirectory: config.dataDirectory, logger: Logger(label: "mailflow"))
        return try SQLiteQueueStore(path: MailflowService.paths(dataDirectory: config.dataDirectory).queue)
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add", abstract: "Create a token and print it once; only its SHA-256 hash is stored.",
            discussion: """
                Use it as `Authorization: Bearer <token>` against the admin API and /metrics, or paste it \
                into the web admin center's sign-in page. Queue actions taken with it are traced as \
                api:NAME or web:NAME. Without --tenant it is an operator token and sees everything; with \
                --tenant TENANT (a tenant of the configuration) it is a tenant admin's token and sees only \
                that tenant's message trace, queued messages and service-health issues, and reports \
                problems for it; everything else answers 403. --scope read-only makes a token that may \
                only read (GET and HEAD): every POST, PUT and DELETE answers 403; the default, operator, \
                may also act on the queue, issues and users. `mailflow admin token create` is the same command.
                """, aliases: ["create"])
        @OptionGroup var options: ConfigOption
        @Argument(help: "A name for the token (who or what uses it), e.g. alice or prometheus.") var name: String
        @Option(help: "Scope the token to this tenant (one of the configuration's tenants).") var tenant: String?
        @Option(help: "What the token may do: read-only (GET and HEAD only) or operator (also change things).")
        var scope: String = AdminTokenScope.operator.rawValue

        func run() throws {
            let config = try options.load()
            guard let access = AdminTokenScope(rawValue: scope) else {
                throw FailureMessage(text: "mailflow: --scope \(scope) is not read-only or operator")
            }
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
                try store.addAdminToken(name: name, hash: AdminTokens.hash(token), tenant: tenant, scope: access)
            } catch let e as SQLiteQueueStore.AdminTokenError {
                throw FailureMessage(text: "mailflow: \(e)")
            }
            print(token)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "List token names, when made, when last used, and their scope (operator, read-only, tenant:NAME or tenant:NAME,read-only)."
        )
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
                        Self.scope($0),
                    ]
                })
        }

        static func scope(_ t: SQLiteQueueStore.AdminToken) -> String {
            let readOnly = t.scope == .readOnly
            guard let tenant = t.tenant else { return readOnly ? "read-only" : "operator" }
            return "tenant:\(tenant)" + (readOnly ? ",read-only" : "")
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

extension Admin {
    struct Audit: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The admin audit trail: state-changing admin requests and failed sign-ins, newest first.",
            discussion: """
                One row per POST, PUT or DELETE of a signed-in caller (allowed or refused) and per failed or \
                throttled sign-in: when, who (api:NAME, web:NAME, or - for a token that was not valid), from \
                which address, what (method, path, the message or user it named) and how it ended.
                """)
        @OptionGroup var options: ConfigOption
        @Option(help: "At most this many rows.") var limit = 100
        @Option(help: "Only this actor (api:NAME or web:NAME).") var actor: String?
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() throws {
            let events = try Admin.store(options).adminAudit(limit: limit, actor: actor)
            if json {
                let e = JSONEncoder()
                e.dateEncodingStrategy = .iso8601
                e.outputFormatting = [.sortedKeys, .prettyPrinted]
                print(String(decoding: try e.encode(events), as: UTF8.self))
                return
            }
            if events.isEmpty {
                print("no audit events")
                return
            }
            printTable(
                ["TIME", "ACTOR", "SOURCE", "METHOD", "PATH", "TARGET", "STATUS", "RESULT"],
                events.map {
                    [
                        isoDate($0.time), $0.actor, $0.source ?? "-", $0.method, $0.path, $0.target ?? "-",
                        "\($0.status)", $0.result,
                    ]
                })
        }
    }
}
