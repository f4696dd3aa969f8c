// A log-linear latency histogram in the style of HdrHistogram (own implementation).
//
// Values are recorded in nanoseconds and bucketed in microseconds with three significant decimal
// digits: values below 2,048 µs each have their own bucket; above, every power of two is split into
// 1,024 equal buckets, so a bucket's width is at most 1/1,024 of its value (relative error < 0.1 %).
// Minimum, maximum and the sum (for the mean) are kept exactly. Counts grow lazily up to the largest
// magnitude seen (about 36 KiB for latencies up to 100 ms), so one histogram per client is cheap and
// needs no sharing: each client records into its own and the runner merges them at the end.

public struct LatencyHistogram: Sendable, Equatable {
    static let subBucketHalf = 1024          // buckets per power of two above the linear range
    static let linearLimit: UInt64 = 2048    // values (µs) below this are exact

    private(set) var counts: [UInt32] = []
    public private(set) var count: UInt64 = 0
    public private(set) var sumNanos: Double = 0
    public private(set) var minNanos: UInt64 = .max
    public private(set) var maxNanos: UInt64 = 0

    public init() {}

    /// Bucket index of a value in microseconds.
    public static func index(micros v: UInt64) -> Int {
        if v < linearLimit { return Int(v) }
        let msb = 63 - v.leadingZeroBitCount            // >= 11
        let shift = msb - 10                             // v >> shift in [1024, 2048)
        return subBucketHalf * shift + Int(v >> UInt64(shift))
    }

    /// Lowest and highest microsecond value that land in bucket `i`.
    public static func bounds(of i: Int) -> (low: UInt64, high: UInt64) {
        if i < Int(linearLimit) { return (UInt64(i), UInt64(i)) }
        let shift = i / subBucketHalf - 1
        let sub = UInt64(i - subBucketHalf * shift)
        return (sub << UInt64(shift), ((sub + 1) << UInt64(shift)) - 1)
    }

    public mutating func record(nanos: UInt64) {
        let i = Self.index(micros: nanos / 1000)
        if i >= counts.count {
            // Grow to the end of this power of two (amortised; never shrinks).
            let target = max(i + 1, min(counts.count * 2, i + Self.subBucketHalf))
            counts.append(contentsOf: repeatElement(0, count: target - counts.count))
        }
        if counts[i] == .max { return }   // 4 billion samples in one bucket: saturate rather than trap
        counts[i] &+= 1
        count += 1
        sumNanos += Double(nanos)
        if nanos < minNanos { minNanos = nanos }
        if nanos > maxNanos { maxNanos = nanos }
    }

    public mutating func merge(_ other: LatencyHistogram) {
        guard other.count > 0 else { return }
        if other.counts.count > counts.count {
            counts.append(contentsOf: repeatElement(0, count: other.counts.count - counts.count))
        }
        for (i, c) in other.counts.enumerated() where c > 0 {
            let (s, overflow) = counts[i].addingReportingOverflow(c)
            counts[i] = overflow ? .max : s
        }
        count += other.count
        sumNanos += other.sumNanos
        minNanos = min(minNanos, other.minNanos)
        maxNanos = max(maxNanos, other.maxNanos)
    }

    public var meanNanos: Double { count == 0 ? 0 : sumNanos / Double(count) }

    /// The value at percentile `p` (0...100) in nanoseconds: the midpoint of the bucket holding the
    /// ceil(p% x count)-th smallest sample, clamped to the exact min and max. 0 when empty.
    public func percentileNanos(_ p: Double) -> Double {
        guard count > 0 else { return 0 }
        if p <= 0 { return Double(minNanos) }
        if p >= 100 { return Double(maxNanos) }
        let rank = max(1, UInt64((p / 100 * Double(count)).rounded(.up)))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen += UInt64(c)
            if seen >= rank {
                let (lo, hi) = Self.bounds(of: i)
                let mid = (Double(lo) + Double(hi) + 1) / 2 * 1000   // bucket [lo, hi+1) µs, in ns
                return min(max(mid, Double(minNanos)), Double(maxNanos))
            }
        }
        return Double(maxNanos)
    }
}
