import Accounts
import Foundation
import HTTPTypes
import Hummingbird
import MailQueue
import NIOPosix

/// The submission users over the admin API, as `mailflow user` manages them (docs/submission.md):
/// an operator sees and changes every tenant's, a tenant admin only its own tenant's (another
/// tenant's user is `404`, as if it did not exist). Passwords are taken, turned into SCRAM-SHA-256
/// keys off the event loop, and never returned or logged.
extension AdminHTTPServer {
    struct UserJSON: ResponseEncodable, Sendable {
        var username: String
        var tenant: String
        var created: Date
        var passwordChanged: Date

        init(_ u: SQLiteQueueStore.StoredUser) {
            username = u.username
            tenant = u.tenant
            created = u.createdAt
            passwordChanged = u.updatedAt
        }
    }

    struct UsersResponse: ResponseEncodable, Sendable {
        var users: [UserJSON]
    }

    /// A password has at least this many characters (the CLI's rule).
    static let minimumPasswordLength = 8
    static let maximumPasswordLength = 1024

    func addUsersAPIRoutes(_ api: RouterGroup<AdminRequestContext>) {
        let backend = self.backend
        api.get("users") { _, context in
            UsersResponse(users: try backend.store.users(tenant: context.tenant).map(UserJSON.init))
        }
        api.post("users") { request, context in
            let body = try await Self.jsonObject(request, limit: 16 * 1024)
            let username = UserAccount.normalize(try Self.textField(body, "username", max: 320))
            guard UserAccount.isValidUsername(username) else {
                throw HTTPError(.badRequest, message: "username must be an address (user@domain) without spaces")
            }
            let password = try Self.password(body)
            // A tenant admin adds users of its own tenant only, and learns nothing of other tenants'
            // domains: every address outside its own is the same 403.
            let tenants = backend.tenants()
            if let own = context.tenant {
                let domains = tenants.first { $0.name == own }?.domains.map { $0.lowercased() } ?? []
                guard let at = username.lastIndex(of: "@"),
                    domains.contains(String(username[username.index(after: at)...]))
                else { throw HTTPError(.forbidden, message: "\(username) is not an address of tenant \(own)") }
            }
            let tenant = try Self.tenant(forAddress: username, tenants)
            let credential = try await Self.credential(password)
            do {
                try backend.store.addUser(username: username, tenant: tenant, credential: credential.stored)
            } catch SQLiteQueueStore.UserError.exists {
                throw HTTPError(.conflict, message: "user \(username) already exists")
            }
            return EditedResponse(
                status: .created, response: UserJSON(try Self.user(backend, username, tenant: context.tenant)))
        }
        api.put("users/:username/password") { request, context in
            let username = UserAccount.normalize(try context.parameters.require("username"))
            _ = try Self.user(backend, username, tenant: context.tenant)
            let password = try Self.password(try await Self.jsonObject(request, limit: 16 * 1024))
            let credential = try await Self.credential(password)
            try backend.store.setCredential(username: username, credential: credential.stored)
            return UserJSON(try Self.user(backend, username, tenant: context.tenant))
        }
        api.delete("users/:username") { _, context in
            let username = UserAccount.normalize(try context.parameters.require("username"))
            let user = try Self.user(backend, username, tenant: context.tenant)
            try backend.store.removeUser(username: username)
            return UserJSON(user)
        }
    }

    /// The user, if the caller may see it; `404` otherwise.
    static func user(_ backend: AdminBackend, _ username: String, tenant: String?) throws
        -> SQLiteQueueStore.StoredUser
    {
        guard let u = try backend.store.user(username: username), tenant == nil || u.tenant == tenant else {
            throw HTTPError(.notFound, message: "no user \(username)")
        }
        return u
    }

    static func password(_ body: [String: Any]) throws -> String {
        let password = try textField(body, "password", max: maximumPasswordLength)
        guard password.count >= minimumPasswordLength else {
            throw HTTPError(.badRequest, message: "password needs at least \(minimumPasswordLength) characters")
        }
        return password
    }

    /// The tenant whose domains hold the address's domain.
    static func tenant(forAddress address: String, _ tenants: [TenantInfo]) throws -> String {
        guard let at = address.lastIndex(of: "@"), at != address.startIndex,
            address.index(after: at) != address.endIndex
        else { throw HTTPError(.badRequest, message: "username must be an address (user@domain)") }
        let domain = String(address[address.index(after: at)...])
        guard let t = tenants.first(where: { $0.domains.map { $0.lowercased() }.contains(domain) }) else {
            throw HTTPError(.badRequest, message: "\(domain) is not a domain of any tenant")
        }
        return t.name
    }

    /// PBKDF2 (a few tens of milliseconds) on NIO's blocking pool, not on the cooperative one.
    static func credential(_ password: String) async throws -> SCRAMCredential {
        try await NIOThreadPool.singleton.runIfActive { try SCRAMCredential.derive(password: password) }
    }
}
