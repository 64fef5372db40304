/// Just enough DER (ITU-T X.690) to walk a certificate to its SubjectPublicKeyInfo and an RSA key to
/// its modulus, keeping the exact bytes as received (DANE matches the bytes presented, RFC 6698 §2.1.2).
struct DERReader {
    struct Element {
        var tag: UInt8
        /// The whole TLV.
        var encoded: ArraySlice<UInt8>
        /// The contents octets.
        var contents: ArraySlice<UInt8>
    }

    enum Failure: Error { case malformed }

    private var bytes: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }
    init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    var isAtEnd: Bool { bytes.isEmpty }

    /// The next element; definite lengths only (DER), at most 4 length octets.
    mutating func next() throws(Failure) -> Element {
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
    mutating func expect(_ tag: UInt8) throws(Failure) -> Element {
        let element = try next()
        guard element.tag == tag else { throw .malformed }
        return element
    }

    static let sequence: UInt8 = 0x30
    static let integer: UInt8 = 0x02
    static let bitString: UInt8 = 0x03
    static let objectIdentifier: UInt8 = 0x06
    static let contextVersion: UInt8 = 0xa0

    /// The DER SubjectPublicKeyInfo of an X.509 certificate (RFC 5280 §4.1).
    static func subjectPublicKeyInfo(ofCertificate der: [UInt8]) throws(Failure) -> ArraySlice<UInt8> {
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
    static func rsaModulusBits(_ der: [UInt8]) throws(Failure) -> Int {
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
        let significant = modulus.drop { $0 == 0 }
        guard let lead = significant.first else { return 0 }
        return (significant.count - 1) * 8 + (8 - lead.leadingZeroBitCount)
    }
}
