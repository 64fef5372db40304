import CLibFuzzer

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The signature of `LLVMFuzzerTestOneInput`.
public typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

/// Runs libFuzzer's driver with the process arguments (`-runs=N`, corpus folders, ...) on `callback`.
///
/// SwiftPM gives an executable target its own entry point (`<Target>_main`, bound to `main` at link
/// time), so libFuzzer's `main` is never used; the fuzzers call this from their `@main` instead.
public func runLibFuzzer(_ callback: FuzzCallback) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, callback))
}

/// `MAILFLOW_FUZZ_STRICT=1`: also check the policy invariants (see docs/fuzzing.md), which flag inputs
/// that are accepted today but arguably should not be. Off by default so CI fails only on crashes and
/// on the core invariants.
public let strictMode: Bool = {
    guard let v = getenv("MAILFLOW_FUZZ_STRICT") else { return false }
    return String(cString: v) == "1"
}()

/// The input of the current run, kept for the failure message.
nonisolated(unsafe) var currentInput: UnsafeBufferPointer<UInt8> = UnsafeBufferPointer(start: nil, count: 0)

/// Sets the input that `check` prints when an invariant fails.
public func beginInput(_ bytes: UnsafeBufferPointer<UInt8>) {
    currentInput = bytes
}

/// Stops the process (libFuzzer saves the input as `crash-<sha1>`) when an invariant does not hold.
@inline(__always)
public func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { invariantFailed(message()) }
}

@inline(never)
public func invariantFailed(_ message: String) -> Never {
    let text =
        "\n==FUZZ INVARIANT== \(message)\n==FUZZ INPUT== \(escaped(Array(currentInput)))\n"
    let bytes = Array(text.utf8)
    var written = 0
    while written < bytes.count {
        let n = bytes.withUnsafeBytes { write(2, $0.baseAddress! + written, $0.count - written) }
        if n <= 0 { break }
        written += n
    }
    abort()
}

/// Bytes as a readable string: printable ASCII as is, everything else as `\xNN`.
public func escaped<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    var out = "\""
    for b in bytes {
        switch b {
        case 0x0D: out += "\\r"
        case 0x0A: out += "\\n"
        case 0x5C: out += "\\\\"
        case 0x22: out += "\\\""
        case 0x20...0x7E: out.append(Character(Unicode.Scalar(b)))
        default:
            let hex = String(b, radix: 16, uppercase: true)
            out += "\\x" + (hex.count == 1 ? "0" + hex : hex)
        }
    }
    return out + "\""
}

/// A string's UTF-8, escaped as above.
public func escaped(_ s: String) -> String { escaped(Array(s.utf8)) }

/// Where to split an input in two to check that chunking does not matter: every point of a short
/// input; for a longer one, the points on both sides of the first `maxMarked` octets in `marks`
/// (line endings and dots, where a split matters most) plus `spread` points spread evenly.
public func splitPoints(_ bytes: [UInt8], everyPointUpTo: Int, marks: [UInt8], maxMarked: Int, spread: Int)
    -> [Int]
{
    let n = bytes.count
    if n <= everyPointUpTo { return Array(0...n) }
    var points = Set((0...spread).map { $0 * n / spread })
    var marked = 0
    for (i, b) in bytes.enumerated() where marks.contains(b) {
        points.insert(i)
        points.insert(i + 1)
        marked += 1
        if marked == maxMarked { break }
    }
    return points.sorted()
}

nonisolated(unsafe) var reportedKnownIssues: Set<String> = []

/// An invariant that a known, reported issue breaks: tolerated (reported once a run, as
/// `==FUZZ KNOWN ISSUE==`, which scripts/fuzz lists) so the fuzzer goes on looking for new ones; a
/// failure like any other in strict mode. docs/fuzzing.md lists the known issues; drop the exemption
/// once the issue is fixed.
public func knownIssue(_ id: String, _ message: @autoclosure () -> String) {
    if strictMode { invariantFailed("\(id) (known issue): \(message())") }
    guard reportedKnownIssues.insert(id).inserted else { return }
    let text = "==FUZZ KNOWN ISSUE== \(id): \(message()) -- input \(escaped(Array(currentInput)))\n"
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress!, $0.count) }
}
