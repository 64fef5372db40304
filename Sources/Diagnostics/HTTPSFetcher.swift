import NIOCore
import NIOPosix
import NIOSSL

/// A minimal HTTP/1.1 GET over TLS, enough to fetch an MTA-STS policy (RFC 8461 §3.3): one request,
/// `Connection: close`, no redirects followed, the certificate verified for the host name against the
/// system roots or a given CA file, the whole exchange bounded in time and size.
///
/// It connects to an address the caller resolved (with Mailflow's own resolver), so nothing but the
/// configured DNS servers and the named host is contacted.
public struct HTTPSFetcher: Sendable {
    public struct Response: Sendable {
        public var status: Int
        /// Header names lowercased, in order.
        public var headers: [(name: String, value: String)]
        public var body: [UInt8]

        public func header(_ name: String) -> String? {
            headers.first { $0.name == name.lowercased() }?.value
        }
    }

    public enum FetchError: Error, Sendable, CustomStringConvertible {
        case connect(String)
        case tls(String)
        case timeout
        case tooLarge(Int)
        case malformed(String)

        public var description: String {
            switch self {
            case .connect(let reason): "could not connect: \(reason)"
            case .tls(let reason): "TLS failed: \(reason)"
            case .timeout: "no complete response in time"
            case .tooLarge(let limit): "the response is larger than \(limit) bytes"
            case .malformed(let reason): "malformed HTTP response: \(reason)"
            }
        }
    }

    /// Bytes of status line and headers accepted.
    public static let maxHeaderBytes = 16 * 1024

    let group: any EventLoopGroup

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) { self.group = group }

    /// GETs `https://host:port/path` from `address`.
    /// - Parameters:
    ///   - maxBodyBytes: the body limit; RFC 8461 §3.3 suggests senders cap policies at 64 KiB.
    public func get(
        host: String, address: String, port: Int, path: String, caFile: String?, timeout: Duration,
        maxBodyBytes: Int = 64 * 1024
    ) async throws(FetchError) -> Response {
        let limit = Self.maxHeaderBytes + maxBodyBytes
        let context: NIOSSLContext
        do {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .fullVerification
            if let caFile { tls.trustRoots = .file(caFile) }
            context = try NIOSSLContext(configuration: tls)
        } catch {
            throw .tls("\(error)")
        }
        let socketAddress: SocketAddress
        do {
            socketAddress = try SocketAddress(ipAddress: address, port: port)
        } catch {
            throw .connect("\(address) is not an IP address")
        }
        let loop = group.next()
        let promise = loop.makePromise(of: [UInt8].self)
        let timeAmount = TimeAmount.nanoseconds(
            Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
        let timer = loop.scheduleTask(in: timeAmount) { promise.fail(FetchError.timeout) }
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeAmount)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let tlsHandler = try NIOSSLClientHandler(context: context, serverHostname: host)
                    try channel.pipeline.syncOperations.addHandler(tlsHandler)
                    try channel.pipeline.syncOperations.addHandler(Collector(promise: promise, limit: limit))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(to: socketAddress).get()
        } catch {
            timer.cancel()
            promise.fail(error)
            throw .connect("\(error)")
        }
        let hostHeader = port == 443 ? host : "\(host):\(port)"
        let request =
            "GET \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nUser-Agent: mailflow-check\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
        channel.writeAndFlush(ByteBuffer(string: request), promise: nil)
        let raw: [UInt8]
        do {
            raw = try await promise.futureResult.get()
        } catch let error as FetchError {
            timer.cancel()
            channel.close(promise: nil)
            throw error
        } catch {
            timer.cancel()
            channel.close(promise: nil)
            throw .tls("\(error)")
        }
        timer.cancel()
        channel.close(promise: nil)
        return try Self.parse(raw, maxBodyBytes: maxBodyBytes)
    }

    /// Parses a complete response read until the server closed (Content-Length or chunked bodies).
    static func parse(_ raw: [UInt8], maxBodyBytes: Int) throws(FetchError) -> Response {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = raw.firstRange(of: separator) else { throw .malformed("no end of headers") }
        guard end.lowerBound <= maxHeaderBytes else { throw .tooLarge(maxHeaderBytes) }
        let head = String(decoding: raw[..<end.lowerBound], as: UTF8.self)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]), (100...599).contains(status)
        else { throw .malformed("status line '\(statusLine.prefix(80))'") }
        var headers: [(name: String, value: String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { throw .malformed("header line '\(line.prefix(80))'") }
            headers.append(
                (
                    line[..<colon].trimmingWhitespace.lowercased(),
                    String(line[line.index(after: colon)...].trimmingWhitespace)
                ))
        }
        var body = Array(raw[end.upperBound...])
        let response = Response(status: status, headers: headers, body: [])
        if response.header("transfer-encoding")?.lowercased().contains("chunked") == true {
            body = try dechunk(body)
        } else if let length = response.header("content-length").flatMap(Int.init) {
            guard body.count >= length else { throw .malformed("body shorter than Content-Length") }
            body = Array(body.prefix(length))
        }
        guard body.count <= maxBodyBytes else { throw .tooLarge(maxBodyBytes) }
        return Response(status: status, headers: headers, body: body)
    }

    static func dechunk(_ bytes: [UInt8]) throws(FetchError) -> [UInt8] {
        var out: [UInt8] = []
        var rest = bytes[...]
        while true {
            guard let lineEnd = rest.firstRange(of: [13, 10]) else { throw .malformed("chunk size line") }
            let sizeText =
                String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self)
                .split(separator: ";").first.map { String($0.trimmingWhitespace) } ?? ""
            guard let size = Int(sizeText, radix: 16), size >= 0 else { throw .malformed("chunk size '\(sizeText)'") }
            rest = rest[lineEnd.upperBound...]
            if size == 0 { return out }
            guard rest.count >= size + 2 else { throw .malformed("truncated chunk") }
            out += rest.prefix(size)
            rest = rest.dropFirst(size + 2)
        }
    }

    /// Gathers the decrypted bytes until the server closes, failing past `limit`.
    final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer

        let promise: EventLoopPromise<[UInt8]>
        let limit: Int
        var bytes: [UInt8] = []

        init(promise: EventLoopPromise<[UInt8]>, limit: Int) {
            self.promise = promise
            self.limit = limit
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            if let chunk = buffer.readBytes(length: buffer.readableBytes) { bytes += chunk }
            if bytes.count > limit {
                promise.fail(FetchError.tooLarge(limit))
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.succeed(bytes)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // A server closing without close_notify after a complete response is common; keep what came.
            if let ssl = error as? NIOSSLError, case .uncleanShutdown = ssl, !bytes.isEmpty {
                return
            }
            promise.fail(FetchError.tls("\(error)"))
            context.close(promise: nil)
        }
    }
}
