#if canImport(Glibc)
    import Glibc
#endif

/// This process's file descriptors against its limit (`RLIMIT_NOFILE`, `ulimit -n`).
///
/// Every SMTP session holds one descriptor, and so do the queue's database, a spooled body, a
/// Maildir file being written and an outbound connection. Admission control keeps a reserve of
/// descriptors that sessions may not take (`AdmissionLimits.descriptorReserve`), so a flood of
/// connections is refused with `421 4.3.2` while the queue can still open what a delivery or a
/// commit needs, instead of every `open` and `accept` failing with `EMFILE`.
public enum DescriptorTable {
    /// Descriptors open now, counted in `/proc/self/fd` (Linux); nil where that cannot be read. When
    /// the directory cannot be opened because no descriptor is left (`EMFILE`), the table is full:
    /// the answer is the limit.
    public static func openCount() -> Int? {
        guard let dir = opendir("/proc/self/fd") else {
            return errno == EMFILE ? limit() : nil
        }
        defer { closedir(dir) }
        var n = 0
        while let entry = readdir(dir) {
            let first = withUnsafeBytes(of: entry.pointee.d_name) { $0.first ?? 0 }
            if first != UInt8(ascii: ".") { n += 1 }
        }
        // The directory stream itself holds one while it is read.
        return max(0, n - 1)
    }

    /// The soft limit on open descriptors; nil when unlimited or unknown.
    public static func limit() -> Int? {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0, rl.rlim_cur != rlim_t.max else { return nil }
        return Int(clamping: rl.rlim_cur)
    }

    /// Raises the soft limit to the hard limit, as systemd.exec(5) asks of a program that needs
    /// many descriptors (the soft limit stays at 1024 for `select()`'s sake; this process never
    /// calls `select`). Returns the soft limit in force afterwards.
    @discardableResult
    public static func raiseSoftLimit() -> Int? {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return nil }
        if rl.rlim_cur < rl.rlim_max {
            var raised = rl
            raised.rlim_cur = rl.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised)
        }
        return limit()
    }

    /// The descriptors sessions may not take when the reserve is not configured: a tenth of the
    /// limit, at least 64 (the queue's database and its journal, the listeners, the event loops'
    /// own, spooled bodies and Maildir files of the transactions in flight, outbound connections).
    public static func defaultReserve(limit: Int) -> Int { max(64, limit / 10) }
}
