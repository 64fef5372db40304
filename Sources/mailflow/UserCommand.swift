import Accounts
import ArgumentParser
import Foundation
import MailQueue
import MailflowApp

#if canImport(Glibc)
    import Glibc
#endif

/// `mailflow user`: the users who submit mail on the submission listeners, per tenant.
struct UserCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Users who may authenticate on the submission listeners (stored in the queue database).",
        discussion: """
            A user logs in with its address and password (AUTH PLAIN, LOGIN or SCRAM-SHA-256, inside \
            TLS) and may then send as any address of its tenant, to any domain. Only the SCRAM-SHA-256 \
            keys of the password are stored (PBKDF2-HMAC-SHA256, \(SCRAMCredential.defaultIterations) \
            rounds, a random salt), never the password. Passwords are read from the terminal without \
            echo, or from one line of standard input with --password-stdin.
            """,
        subcommands: [Add.self, List.self, Remove.self, Passwd.self])

    static let minimumPasswordLength = 8

    /// Reads the password: one line of stdin, or the terminal twice without echo.
    static func readPassword(fromStdin: Bool) throws -> String {
        let password: String
        if fromStdin {
            guard let line = readLine(strippingNewline: true) else {
                throw FailureMessage(text: "mailflow: no password on standard input")
            }
            password = line
        } else {
            guard let first = getpass("Password: ").map({ String(cString: $0) }),
                let second = getpass("Again: ").map({ String(cString: $0) })
            else { throw FailureMessage(text: "mailflow: cannot read a password from the terminal") }
            guard first == second else { throw FailureMessage(text: "mailflow: the passwords differ") }
            password = first
        }
        guard password.count >= minimumPasswordLength else {
            throw FailureMessage(text: "mailflow: a password needs at least \(minimumPasswordLength) characters")
        }
        return password
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a user; its tenant is the one that owns the address's domain.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The login name: an address in one of a tenant's domains, e.g. alice@example.test.")
        var address: String
        @Flag(help: "Read the password from one line of standard input.") var passwordStdin = false

        func run() throws {
            let config = try options.load()
            let username = UserAccount.normalize(address)
            guard UserAccount.isValidUsername(username), let at = username.lastIndex(of: "@") else {
                throw FailureMessage(text: "mailflow: \(address) is not an address (user@domain, no spaces)")
            }
            let domain = String(username[username.index(after: at)...])
            guard let tenant = config.tenants.first(where: { $0.domains.map { $0.lowercased() }.contains(domain) })
            else {
                throw FailureMessage(text: "mailflow: \(domain) is not a domain of any tenant in the configuration")
            }
            let credential = try SCRAMCredential.derive(
                password: try UserCommand.readPassword(fromStdin: passwordStdin))
            do {
                try Admin.store(options).addUser(username: username, tenant: tenant.name, credential: credential.stored)
            } catch let e as SQLiteQueueStore.UserError {
                throw FailureMessage(text: "mailflow: \(e)")
            }
            print("added \(username) (tenant \(tenant.name))")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users, with their tenant and when made.")
        @OptionGroup var options: ConfigOption
        @Option(help: "Only this tenant's users.") var tenant: String?

        func run() throws {
            let users = try Admin.store(options).users(tenant: tenant)
            if users.isEmpty {
                print("no users: add one with `mailflow user add ADDRESS`")
                return
            }
            printTable(
                ["USER", "TENANT", "CREATED", "PASSWORD CHANGED"],
                users.map { [$0.username, $0.tenant, isoDate($0.createdAt), isoDate($0.updatedAt)] })
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a user; its next AUTH fails (sessions already authenticated go on until they end).")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The login name.") var address: String

        func run() throws {
            do {
                try Admin.store(options).removeUser(username: UserAccount.normalize(address))
            } catch let e as SQLiteQueueStore.UserError {
                throw FailureMessage(text: "mailflow: \(e)")
            }
            print("removed \(UserAccount.normalize(address))")
        }
    }

    struct Passwd: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a user's password.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The login name.") var address: String
        @Flag(help: "Read the password from one line of standard input.") var passwordStdin = false

        func run() throws {
            let credential = try SCRAMCredential.derive(
                password: try UserCommand.readPassword(fromStdin: passwordStdin))
            do {
                try Admin.store(options).setCredential(
                    username: UserAccount.normalize(address), credential: credential.stored)
            } catch let e as SQLiteQueueStore.UserError {
                throw FailureMessage(text: "mailflow: \(e)")
            }
            print("password changed for \(UserAccount.normalize(address))")
        }
    }
}
