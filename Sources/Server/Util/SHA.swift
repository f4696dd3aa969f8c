// SHA-1 (FIPS 180-4) for etcd-compatible member/cluster IDs, and SHA-256 for the integrity
// trailer etcd appends to a Maintenance.Snapshot stream. Small streaming implementations of the
// standard; no crypto library is among the package's dependencies.

@inline(__always) private func rotl(_ x: UInt32, _ n: UInt32) -> UInt32 { (x << n) | (x >> (32 - n)) }
@inline(__always) private func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

/// Buffers input into 64-byte blocks and pads the message as both SHA-1 and SHA-256 require.
private struct BlockBuffer {
    var block = [UInt8](repeating: 0, count: 64)
    var used = 0
    var totalBytes: UInt64 = 0

    mutating func feed<S: Sequence>(_ bytes: S, _ compress: (UnsafeBufferPointer<UInt8>) -> Void) where S.Element == UInt8 {
        for b in bytes {
            block[used] = b
            used += 1
            totalBytes &+= 1
            if used == 64 {
                block.withUnsafeBufferPointer(compress)
                used = 0
            }
        }
    }

    mutating func feed(_ raw: UnsafeRawBufferPointer, _ compress: (UnsafeBufferPointer<UInt8>) -> Void) {
        var i = 0
        let n = raw.count
        // Fast path: whole blocks straight from the input.
        if used == 0 {
            while n - i >= 64 {
                compress(UnsafeBufferPointer(rebasing: raw.bindMemory(to: UInt8.self)[i..<(i + 64)]))
                i += 64
                totalBytes &+= 64
            }
        }
        feed(raw[i...], compress)
    }

    mutating func finish(_ compress: (UnsafeBufferPointer<UInt8>) -> Void) {
        let bitLength = totalBytes &* 8
        var pad: [UInt8] = [0x80]
        let afterOne = (used + 1) % 64
        let zeros = afterOne <= 56 ? 56 - afterOne : 120 - afterOne
        pad.append(contentsOf: repeatElement(0, count: zeros))
        for k in (0..<8).reversed() { pad.append(UInt8(truncatingIfNeeded: bitLength >> (UInt64(k) * 8))) }
        let saved = totalBytes
        feed(pad, compress)
        totalBytes = saved
    }
}

/// A hash function's state and compression (the rest - buffering, padding, output - is shared).
public protocol SHACompression: Sendable {
    static var initialState: [UInt32] { get }
    /// Words in the message schedule (SHA-1: 80, SHA-256: 64).
    static var scheduleLength: Int { get }
    /// Extends `w[16...]` from the block's 16 words, then mixes the schedule into `h`.
    static func compress(_ h: inout [UInt32], _ w: inout [UInt32])
}

/// SHA-1 / SHA-256 over any number of updates.
public struct SHAHasher<C: SHACompression>: Sendable {
    private var h = C.initialState
    private var buf = BlockBuffer()

    public init() {}

    public mutating func update<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
        var hh = h
        buf.feed(bytes) { Self.compress(&hh, $0) }
        h = hh
    }

    public mutating func update(_ raw: UnsafeRawBufferPointer) {
        var hh = h
        buf.feed(raw) { Self.compress(&hh, $0) }
        h = hh
    }

    public mutating func finalize() -> [UInt8] {
        var hh = h
        buf.finish { Self.compress(&hh, $0) }
        return hh.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32($0))) } }
    }

    public static func hash<S: Sequence>(_ bytes: S) -> [UInt8] where S.Element == UInt8 {
        var s = Self(); s.update(bytes); return s.finalize()
    }

    private static func compress(_ h: inout [UInt32], _ block: UnsafeBufferPointer<UInt8>) {
        var w = [UInt32](repeating: 0, count: C.scheduleLength)
        for t in 0..<16 {
            w[t] = UInt32(block[4 * t]) << 24 | UInt32(block[4 * t + 1]) << 16
                | UInt32(block[4 * t + 2]) << 8 | UInt32(block[4 * t + 3])
        }
        C.compress(&h, &w)
    }
}

public typealias SHA1 = SHAHasher<SHA1Compression>
public typealias SHA256 = SHAHasher<SHA256Compression>

public enum SHA1Compression: SHACompression {
    public static let initialState: [UInt32] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0]
    public static let scheduleLength = 80

    public static func compress(_ h: inout [UInt32], _ w: inout [UInt32]) {
        for t in 16..<80 { w[t] = rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1) }
        var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4]
        for t in 0..<80 {
            let f: UInt32, k: UInt32
            switch t {
            case 0..<20: f = (b & c) | (~b & d); k = 0x5A82_7999
            case 20..<40: f = b ^ c ^ d; k = 0x6ED9_EBA1
            case 40..<60: f = (b & c) | (b & d) | (c & d); k = 0x8F1B_BCDC
            default: f = b ^ c ^ d; k = 0xCA62_C1D6
            }
            let tmp = rotl(a, 5) &+ f &+ e &+ k &+ w[t]
            e = d; d = c; c = rotl(b, 30); b = a; a = tmp
        }
        h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e
    }
}

public enum SHA256Compression: SHACompression {
    static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]
    public static let initialState: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                                0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    public static let scheduleLength = 64

    public static func compress(_ h: inout [UInt32], _ w: inout [UInt32]) {
        for t in 16..<64 {
            let s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
            let s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
            w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
        }
        var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7]
        for t in 0..<64 {
            let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
            let ch = (e & f) ^ (~e & g)
            let t1 = hh &+ s1 &+ ch &+ k[t] &+ w[t]
            let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
            let maj = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ maj
            hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ t2
        }
        h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
    }
}

public func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
    return String(decoding: out, as: UTF8.self)
}
