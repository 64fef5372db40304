import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import AdminServer

/// The users API beyond the route table: what it refuses, and that a tenant admin never reaches
/// another tenant's users.
struct UsersAPITests {
    func json(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test(arguments: [
        (#"{"username": "x@contoso.test", "password": "short"}"#, HTTPResponse.Status.badRequest, "at least 8"),
        (#"{"username": "x@nowhere.test", "password": "long enough"}"#, .badRequest, "not a domain of any tenant"),
        (#"{"username": "no-at-sign", "password": "long enough"}"#, .badRequest, "must be an address"),
        (#"{"password": "long enough"}"#, .badRequest, "username is required"),
        (#"{"username": "anne@contoso.test", "password": "long enough"}"#, .conflict, "already exists"),
        (#"["not an object"]"#, .badRequest, "JSON object"),
    ])
    func badRequestsAreRefusedClearly(_ body: String, _ status: HTTPResponse.Status, _ words: String) async throws {
        let t = try TenantFixture()
        let headers = t.f.bearer + [.contentType: "application/json"]
        try await t.test { client in
            let r = try await client.execute(uri: "/api/v1/users", method: .post, headers: headers, body: json(body))
            #expect(r.status == status)
            #expect(String(buffer: r.body).contains(words), "\(String(buffer: r.body))")
        }
    }

    @Test func aTenantAdminSeesAndChangesOnlyItsOwnTenantsUsers() async throws {
        let t = try TenantFixture()
        try t.f.server.backend.store.addUser(username: "zed@fabrikam.test", tenant: "fabrikam", credential: "x")
        let headers = t.bearer + [.contentType: "application/json"]
        try await t.test { client in
            let list = try await client.execute(uri: "/api/v1/users", method: .get, headers: t.bearer)
            #expect(String(buffer: list.body).contains("anne@contoso.test"))
            #expect(!String(buffer: list.body).contains("fabrikam"))
            let other = try await client.execute(
                uri: "/api/v1/users/zed@fabrikam.test", method: .delete, headers: t.bearer)
            #expect(other.status == .notFound)
            let add = try await client.execute(
                uri: "/api/v1/users", method: .post, headers: headers,
                body: json(#"{"username": "mallory@fabrikam.test", "password": "long enough"}"#))
            #expect(add.status == .forbidden || add.status == .badRequest)
        }
        #expect(try t.f.server.backend.store.user(username: "zed@fabrikam.test") != nil)
        #expect(try t.f.server.backend.store.user(username: "mallory@fabrikam.test") == nil)
    }

    @Test func thePasswordIsNeverInTheAnswer() async throws {
        let t = try TenantFixture()
        let headers = t.f.bearer + [.contentType: "application/json"]
        try await t.test { client in
            let r = try await client.execute(
                uri: "/api/v1/users", method: .post, headers: headers,
                body: json(#"{"username": "new@contoso.test", "password": "hunter2 hunter2"}"#))
            #expect(r.status == .created)
            #expect(!String(buffer: r.body).contains("hunter2"))
            #expect(String(buffer: r.body).contains(#""tenant":"contoso""#))
        }
    }
}

extension HTTPFields {
    static func + (a: HTTPFields, b: HTTPFields) -> HTTPFields {
        var out = a
        out.append(contentsOf: b)
        return out
    }
}
