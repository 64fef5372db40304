// swift-tools-version: 6.1
import PackageDescription

// Dependencies, and why each is here:
// - swift-nio: the event-driven network core for the SMTP server, the SMTP client and the DNS resolver.
// - swift-nio-ssl: STARTTLS (TLS 1.2/1.3) on the SMTP listener and on outbound delivery.
// - swift-certificates + swift-crypto: generate the self-signed pair on first start; swift-crypto also
//   hashes admin tokens (SHA-256) and signs health webhooks (HMAC-SHA256).
// - GRDB: SQLite (WAL) for the durable queue index, inline bodies and the trace stream.
// - Yams: the YAML config file.
// - swift-argument-parser: the `mailflow` CLI.
// - swift-log: structured logs.
// - Hummingbird: the admin HTTP listener (JSON API and web admin center); its swift-configuration trait is off.
//   HummingbirdTLS (same package) serves it over TLS when `admin.tls` is set.
//   swift-http-types (its request and header types) and swift-service-lifecycle (the listener runs as a
//   ServiceGroup) are named for the admin server's own imports.
// - swift-mustache: server-rendered admin pages, templates compiled into the binary.
// - swift-metrics + swift-prometheus: `/metrics` in Prometheus text format.
// - postgres-nio: cluster mode (issue 16): the nodes' membership and heartbeats in a shared PostgreSQL,
//   from which each node takes its part of every resource forest's limits.
let package = Package(
    name: "Mailflow",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "mailflow", targets: ["mailflow"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(
            url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: ["FullFoundation"]),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        .target(
            name: "SMTPCore",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        .target(name: "MailMessage"),
        .target(
            name: "MailQueue",
            dependencies: [
                "SMTPCore",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .target(
            name: "DNSClient",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(name: "ServiceHealth"),
        .target(
            name: "Delivery",
            dependencies: [
                "MailQueue", "MailMessage", "SMTPCore", "DNSClient",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "Ingress",
            dependencies: [
                "SMTPCore", "MailQueue", "MailMessage", "Accounts",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "AdminServer",
            dependencies: [
                "MailQueue", "Ingress", "Delivery", "ServiceHealth", "Accounts",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Cluster mode (issue 16): membership and heartbeats in PostgreSQL, each node's part of the
        // resource forests' limits (the split is pure; the PostgreSQL side is `ClusterDirectory`).
        .target(
            name: "Cluster",
            dependencies: [
                "Ingress", "MailQueue", "SMTPCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "MailflowApp",
            dependencies: [
                "SMTPCore", "MailQueue", "Ingress", "Delivery", "MailMessage", "DNSClient", "AdminServer",
                "ServiceHealth", "Diagnostics", "Accounts", "MailAuth", "Cluster",
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Users and SASL (issue 14): SCRAM-SHA-256 credentials (PBKDF2 from _CryptoExtras) and the
        // PLAIN, LOGIN and SCRAM-SHA-256 exchanges, pure; the store and the session drive them.
        .target(
            name: "Accounts",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        // Sender authentication (issue 14): DKIM signing and verification, SPF and DMARC evaluation.
        // Pure where it can be; DNS comes through DNSClient. _CryptoExtras for RSA (DKIM's rsa-sha256).
        .target(
            name: "MailAuth",
            dependencies: [
                "DNSClient",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "Diagnostics",
            dependencies: [
                "SMTPCore", "DNSClient", "MailQueue", "ServiceHealth", "MailAuth",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "mailflow",
            dependencies: [
                "MailflowApp", "MailQueue", "Ingress", "Delivery", "AdminServer", "ServiceHealth", "Diagnostics",
                "MailAuth", "Accounts", "Cluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "SMTPCoreTests", dependencies: ["SMTPCore", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "MailMessageTests", dependencies: ["MailMessage"]),
        .testTarget(name: "ServiceHealthTests", dependencies: ["ServiceHealth"]),
        .testTarget(
            name: "DNSClientTests",
            dependencies: [
                "DNSClient", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "MailQueueTests",
            dependencies: [
                "MailQueue", "Delivery", "SMTPCore", .product(name: "GRDB", package: "GRDB.swift"),
            ]),
        .testTarget(
            name: "DeliveryTests",
            dependencies: [
                "Delivery", "MailQueue", "SMTPCore", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "IngressTests",
            dependencies: [
                "Ingress", "SMTPCore", "MailQueue", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "MailflowAppTests",
            dependencies: ["MailflowApp", "Ingress", "SMTPCore", .product(name: "Yams", package: "Yams")]),
        .testTarget(
            name: "AdminServerTests",
            dependencies: [
                "AdminServer", "MailQueue", "Ingress", "ServiceHealth", "SMTPCore", "Accounts",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),
        .testTarget(name: "AccountsTests", dependencies: ["Accounts"]),
        .testTarget(
            name: "ClusterTests",
            dependencies: [
                "Cluster", "Ingress", "MailQueue", "SMTPCore", .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "MailAuthTests",
            dependencies: [
                "MailAuth", "DNSClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .testTarget(
            name: "DiagnosticsTests",
            dependencies: [
                "Diagnostics", "DNSClient", "MailQueue", "MailAuth",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
