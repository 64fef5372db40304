import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Owner-only files, checked at every start, the way `postfix check` looks over Postfix's queue:
///
/// - the data directory is created `0700`, and the process's umask is `077`, so everything made
///   under it afterwards (queue database, spool files, mailboxes, snapshots, keys) is `0600`/`0700`;
/// - a data directory that other users can **write** is refused with one line: someone else could
///   have replaced the queue or a key, which is not for Mailflow to paper over;
/// - Mailflow's own secrets in the data directory (the queue database and its WAL files, the
///   generated TLS key, `auth.secret`) that others can read are set back to `0600` with a warning
///   (as `postfix set-permissions` would), and a data directory others can enter loses those bits;
/// - a configured key file (`tls.key`, `admin.tls.key`) that every user can read is refused: it is
///   not Mailflow's file to change, and `0640` with a group (Debian's `ssl-cert`) stays allowed.
public enum DataDirectoryPermissions {
    /// Creates the data directory owner-only when it is missing, sets the umask, and refuses a
    /// directory others may write to.
    public static func prepare(dataDirectory: String, logger: Logger) throws {
        umask(0o077)
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: dataDirectory, isDirectory: &isDirectory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: dataDirectory, withIntermediateDirectories: true,
                    attributes: [.posixPermissions: 0o700])
            } catch {
                throw StartupError("cannot create data directory \(dataDirectory): \(error.localizedDescription)")
            }
            _ = chmod(dataDirectory, 0o700)
            return
        }
        guard isDirectory.boolValue else { throw StartupError("data directory \(dataDirectory) is not a directory") }
        guard let mode = mode(of: dataDirectory) else {
            throw StartupError("cannot read the permissions of data directory \(dataDirectory)")
        }
        if let problem = refusal(directoryMode: mode, path: dataDirectory) { throw StartupError(problem) }
        if mode & 0o007 != 0 {
            let tightened = mode & ~0o007
            if chmod(dataDirectory, tightened) == 0 {
                logger.warning(
                    "data directory \(dataDirectory) was open to other users (mode \(octal(mode))); now \(octal(tightened))"
                )
            }
        }
    }

    /// Why a data directory with `mode` must not be used, or nil.
    static func refusal(directoryMode mode: mode_t, path: String) -> String? {
        guard mode & 0o022 != 0 else { return nil }
        return
            "data directory \(path) is writable by \(mode & 0o002 != 0 ? "every user" : "its group") (mode \(octal(mode))): another user could replace the queue or a key; run chmod 700 \(path)"
    }

    /// Why a configured key file with `mode` must not be used, or nil.
    static func refusal(keyMode mode: mode_t, path: String) -> String? {
        guard mode & 0o006 != 0 else { return nil }
        return
            "key \(path) is \(mode & 0o002 != 0 ? "writable" : "readable") by every user (mode \(octal(mode))): run chmod 600 \(path)"
    }

    /// After the store and the secrets exist: Mailflow's own secret files set back to `0600`
    /// (with a warning), configured keys checked.
    public static func secure(config: MailflowConfig, logger: Logger) throws {
        let data = config.dataDirectory
        var own = [
            "\(data)/queue.sqlite", "\(data)/queue.sqlite-wal", "\(data)/queue.sqlite-shm", "\(data)/auth.secret",
        ]
        if config.tlsKey == nil { own.append("\(data)/tls/key.pem") }
        for path in own {
            guard let mode = mode(of: path), mode & 0o077 != 0 else { continue }
            if chmod(path, 0o600) == 0 {
                logger.warning("\(path) was open to other users (mode \(octal(mode))); now 0600")
            } else {
                throw StartupError("\(path) is open to other users (mode \(octal(mode))) and cannot be changed")
            }
        }
        for dir in ["\(data)/tls", "\(data)/spool"] {
            guard let mode = mode(of: dir), mode & 0o077 != 0 else { continue }
            if chmod(dir, 0o700) == 0 {
                logger.warning("\(dir) was open to other users (mode \(octal(mode))); now 0700")
            }
        }
        var keys = [config.tlsKey].compactMap { $0 }
        if case .files(_, let key) = config.adminTLS { keys.append(key) }
        for key in keys {
            guard let mode = mode(of: key) else { continue }  // loading it says what is wrong
            if let problem = refusal(keyMode: mode, path: key) { throw StartupError(problem) }
        }
    }

    /// The permission bits of `path` (following links), or nil when it cannot be read.
    static func mode(of path: String) -> mode_t? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return st.st_mode & 0o7777
    }

    static func octal(_ mode: mode_t) -> String {
        let s = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - s.count)) + s
    }

    /// Writes a secret owner-only from the first byte: created `0600` with `O_EXCL` (never a moment
    /// with the umask's mode, never through a link someone placed there).
    public static func writeSecret(_ data: Data, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw StartupError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count, fsync(fd) == 0 else {
            throw StartupError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}
