#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Monotonic clock in nanoseconds (CLOCK_MONOTONIC): cheap enough to read twice per request, and the
/// same clock in every task of the process, so a put's send time can travel inside its value.
@inline(__always)
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Typed errors for bad benchmark parameters (reported, never a trap).
public struct BenchError: Error, Sendable, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Keys of a benchmark: index -> fixed-width zero-padded decimal ASCII (with an optional prefix), so
/// keys sort like their indices, ranges over consecutive indices are contiguous, and etcdctl shows
/// them readably. Key choice per request is a pure function of the request index (no shared RNG).
public struct KeyGenerator: Sendable {
    public let prefix: [UInt8]
    public let width: Int          // digits after the prefix
    public let space: Int          // number of distinct keys
    public let sequential: Bool
    public let seed: UInt64

    /// `size` is the whole key length in bytes (prefix included).
    public init(prefix: String = "", size: Int, space: Int, sequential: Bool, seed: UInt64 = 0x5eed) throws(BenchError) {
        let p = Array(prefix.utf8)
        guard size > p.count else { throw BenchError("key size \(size) must be larger than the prefix (\(p.count) bytes)") }
        guard space >= 1 else { throw BenchError("key space must be at least 1") }
        let width = size - p.count
        // 10^width must be able to hold `space` distinct keys.
        var capacity = 1
        for _ in 0..<min(width, 18) { capacity *= 10 }
        guard width >= 18 || space <= capacity else {
            throw BenchError("key space \(space) does not fit in \(width) decimal digits (key size \(size))")
        }
        self.prefix = p
        self.width = width
        self.space = space
        self.sequential = sequential
        self.seed = seed
    }

    /// The key index used by request `i`.
    public func index(forRequest i: Int) -> Int {
        if sequential { return i % space }
        return Int(Self.mix(UInt64(truncatingIfNeeded: i) &+ seed) % UInt64(space))
    }

    /// The bytes of key number `index` (0 ..< space, or `space` itself as an exclusive range end).
    public func key(_ index: Int) -> [UInt8] {
        var out = prefix
        out.reserveCapacity(prefix.count + width)
        var digits = [UInt8](repeating: UInt8(ascii: "0"), count: width)
        var v = index
        var pos = width - 1
        while v > 0 && pos >= 0 {
            digits[pos] = UInt8(ascii: "0") + UInt8(v % 10)
            v /= 10
            pos -= 1
        }
        out += digits
        return out
    }

    /// SplitMix64 finaliser: a good 64-bit mix of a counter.
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Values: `size` bytes of printable filler. Watch workloads stamp the put's send time (monotonic ns,
/// little-endian) into the first 8 bytes so the receiver can compute put -> event latency.
public enum Values {
    public static func filler(size: Int) -> [UInt8] {
        (0..<max(0, size)).map { UInt8(ascii: "a") + UInt8($0 % 26) }
    }

    public static func stamped(_ base: [UInt8], nanos: UInt64) -> [UInt8] {
        var v = base
        withUnsafeBytes(of: nanos.littleEndian) { raw in
            for j in 0..<min(8, v.count) { v[j] = raw[j] }
        }
        return v
    }

    public static func stamp(of value: [UInt8]) -> UInt64? {
        guard value.count >= 8 else { return nil }
        var n: UInt64 = 0
        for j in 0..<8 { n |= UInt64(value[j]) << (8 * UInt64(j)) }
        return n
    }
}
