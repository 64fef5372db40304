/// Just enough DER (ITU-T X.690) to walk a certificate to its SubjectPublicKeyInfo and an RSA key to
/// its modulus, keeping the exact bytes as received (DANE matches the bytes presented, RFC 6698 §2.1.2).
/// The one DER reader of the code base: DKIM keys (MailAuth) and certificates (Diagnostics) use it.
public struct DERReader {
    public struct Element {
        public var tag: UInt8
        /// The whole TLV.
        public var encoded: ArraySlice<UInt8>
        /// The contents octets.
        public var contents: ArraySlice<UInt8>
    }

    public enum Failure: Error { case malformed }

    private var bytes: ArraySlice<UInt8>

    public init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }
    public init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    public var isAtEnd: Bool { bytes.isEmpty }

    /// The tag of the next element, if there is one.
    public var peekTag: UInt8? { bytes.first }

    /// The contents of the next element when it carries `tag` (and moves past it); nil otherwise.
    public mutating func read(tag: UInt8) -> ArraySlice<UInt8>? {
        guard bytes.first == tag else { return nil }
        return try? next().contents
    }

    /// The next element; definite lengths only (DER), at most 4 length octets.
    public mutating func next() throws(Failure) -> Element {
        let start = bytes.startIndex
        guard bytes.count >= 2 else { throw .malformed }
        let tag = bytes[start]
        var index = start + 1
        let first = bytes[index]
        index += 1
        var length = 0
        if first < 0x80 {
            length = Int(first)
        } else {
            let count = Int(first & 0x7f)
            guard count >= 1, count <= 4, bytes.endIndex - index >= count else { throw .malformed }
            for _ in 0..<count {
                length = length << 8 | Int(bytes[index])
                index += 1
            }
        }
        guard bytes.endIndex - index >= length else { throw .malformed }
        let end = index + length
        let element = Element(tag: tag, encoded: bytes[start..<end], contents: bytes[index..<end])
        bytes = bytes[end...]
        return element
    }

    /// The contents of the next element, which must carry `tag`.
    public mutating func expect(_ tag: UInt8) throws(Failure) -> Element {
        let element = try next()
        guard element.tag == tag else { throw .malformed }
        return element
    }

    public static let sequence: UInt8 = 0x30
    public static let integer: UInt8 = 0x02
    public static let bitString: UInt8 = 0x03
    public static let objectIdentifier: UInt8 = 0x06
    public static let contextVersion: UInt8 = 0xa0

    /// The DER SubjectPublicKeyInfo of an X.509 certificate (RFC 5280 §4.1).
    public static func subjectPublicKeyInfo(ofCertificate der: [UInt8]) throws(Failure) -> ArraySlice<UInt8> {
        var outer = DERReader(der)
        let certificate = try outer.expect(sequence)
        var certificateFields = DERReader(certificate.contents)
        let tbs = try certificateFields.expect(sequence)
        var fields = DERReader(tbs.contents)
        var element = try fields.next()
        if element.tag == contextVersion { element = try fields.next() }
        // element is the serial number; then signature, issuer, validity, subject, subjectPublicKeyInfo.
        guard element.tag == integer else { throw .malformed }
        for _ in 0..<4 { _ = try fields.expect(sequence) }
        return try fields.expect(sequence).encoded
    }

    /// The modulus size in bits of an RSA key given either as SubjectPublicKeyInfo (RFC 5280 §4.1.2.7)
    /// or as a bare RSAPublicKey (RFC 8017 §A.1.1); DKIM records carry either in practice.
    public static func rsaModulusBits(_ der: [UInt8]) throws(Failure) -> Int {
        var outer = DERReader(der)
        let top = try outer.expect(sequence)
        var inner = DERReader(top.contents)
        let first = try inner.next()
        let modulus: ArraySlice<UInt8>
        if first.tag == sequence {
            // SubjectPublicKeyInfo: AlgorithmIdentifier, then a BIT STRING holding RSAPublicKey.
            let bits = try inner.expect(bitString)
            guard let unused = bits.contents.first, unused == 0 else { throw .malformed }
            var key = DERReader(bits.contents.dropFirst())
            var keyFields = DERReader(try key.expect(sequence).contents)
            modulus = try keyFields.expect(integer).contents
        } else if first.tag == integer {
            modulus = first.contents
        } else {
            throw .malformed
        }
        return bitLength(modulus)
    }

    /// The modulus size of an RSA private key, PKCS#8 (RFC 5208 §5) or PKCS#1 (RFC 8017 §A.1.2).
    public static func rsaPrivateModulusBits(_ der: [UInt8]) throws(Failure) -> Int {
        var outer = DERReader(der)
        var fields = DERReader(try outer.expect(sequence).contents)
        _ = try fields.expect(integer)  // version
        let second = try fields.next()
        let modulus: ArraySlice<UInt8>
        if second.tag == integer {
            modulus = second.contents  // PKCS#1: version, then the modulus
        } else if second.tag == sequence {
            // PKCS#8: version, AlgorithmIdentifier, OCTET STRING holding the PKCS#1 key.
            var octets = DERReader(try fields.expect(0x04).contents)
            var key = DERReader(try octets.expect(sequence).contents)
            _ = try key.expect(integer)
            modulus = try key.expect(integer).contents
        } else {
            throw .malformed
        }
        return bitLength(modulus)
    }

    static func bitLength(_ modulus: ArraySlice<UInt8>) -> Int {
        let significant = modulus.drop { $0 == 0 }
        guard let lead = significant.first else { return 0 }
        return (significant.count - 1) * 8 + (8 - lead.leadingZeroBitCount)
    }
}
