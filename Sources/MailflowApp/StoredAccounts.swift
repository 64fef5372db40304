import Accounts
import Ingress
import MailQueue

/// The submission users as sessions see them: the queue database's `user` table, with each stored
/// credential read back into its SCRAM keys.
struct StoredAccounts: AccountDirectory {
    let store: SQLiteQueueStore

    func account(username: String) throws -> UserAccount? {
        guard let u = try store.user(username: UserAccount.normalize(username)) else { return nil }
        return UserAccount(
            username: u.username, tenant: u.tenant, credential: try SCRAMCredential(stored: u.credential))
    }
}
