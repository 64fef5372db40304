// swift-tools-version: 6.1
import PackageDescription

// libFuzzer targets for SMTPCore's parsers and command encoder and DNSClient's wire codec (docs/fuzzing.md). A separate package so the sanitizer
// build never touches the main build: `scripts/fuzz` builds it with
// `swift build -c release --scratch-path Fuzz/.build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library`.
//
// The root package exports only the `mailflow` executable, so the target SMTPCore here compiles the
// same sources through the symlink Sources/SMTPCore -> ../../Sources/SMTPCore (SwiftPM refuses a
// path outside the package; a symlink inside it is fine). DNSClient comes the same way
// (Sources/DNSClient -> ../../Sources/DNSClient), but only its wire codec: the files below need
// NIOCore alone, while the resolver and its transports (NIOPosix sockets) have no place in a fuzzer.
let package = Package(
    name: "MailflowFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2")
    ],
    targets: [
        .target(
            name: "SMTPCore",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            path: "Sources/SMTPCore"
        ),
        .target(
            name: "DNSClient",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            path: "Sources/DNSClient",
            sources: ["DNSMessage.swift", "DNSName.swift", "DNSTypes.swift", "DNSIPAddress.swift", "DNSError.swift"]
        ),
        // Declares libFuzzer's LLVMFuzzerRunDriver for Swift.
        .target(name: "CLibFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CLibFuzzer"]),
        .executableTarget(name: "CommandParserFuzzer", dependencies: ["SMTPCore", "FuzzSupport"]),
        .executableTarget(
            name: "ReplyParserFuzzer",
            dependencies: ["SMTPCore", "FuzzSupport", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .executableTarget(
            name: "CommandRoundtripFuzzer",
            dependencies: ["SMTPCore", "FuzzSupport", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .executableTarget(
            name: "BodyDecoderFuzzer",
            dependencies: ["SMTPCore", "FuzzSupport", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .executableTarget(name: "DNSMessageFuzzer", dependencies: ["DNSClient", "FuzzSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
