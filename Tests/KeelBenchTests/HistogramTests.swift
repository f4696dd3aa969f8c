import KeelBenchCore
import Testing

@Suite struct HistogramTests {
    @Test func bucketsAreContiguousAndTight() {
        // Every microsecond value maps into a bucket whose bounds contain it, indices never go
        // backwards, and a bucket is at most 1/1024 of its value wide.
        var lastIndex = -1
        var v: UInt64 = 0
        while v < 50_000_000 {
            let i = LatencyHistogram.index(micros: v)
            let (lo, hi) = LatencyHistogram.bounds(of: i)
            #expect(lo <= v && v <= hi, "value \(v) in bucket \(i) [\(lo), \(hi)]")
            #expect(i >= lastIndex)
            #expect(Double(hi - lo + 1) <= max(1, Double(v) / 1024))
            lastIndex = i
            v = v < 5000 ? v + 1 : v + v / 997
        }
    }

    @Test func percentilesOfAUniformSample() {
        var h = LatencyHistogram()
        // 1 ms ... 10 ms in 1 µs steps: p50 ~ 5.5 ms, p99 ~ 9.91 ms.
        for us in stride(from: 1000, through: 10_000, by: 1) { h.record(nanos: UInt64(us) * 1000) }
        #expect(h.count == 9001)
        #expect(h.minNanos == 1_000_000)
        #expect(h.maxNanos == 10_000_000)
        #expect(abs(h.meanNanos - 5_500_000) < 1)
        #expect(abs(h.percentileNanos(50) - 5_500_000) / 5_500_000 < 0.002)
        #expect(abs(h.percentileNanos(99) - 9_910_000) / 9_910_000 < 0.002)
        #expect(h.percentileNanos(0) == 1_000_000)
        #expect(h.percentileNanos(100) == 10_000_000)
    }

    @Test func mergeEqualsRecordingEverythingInOne() {
        var a = LatencyHistogram(), b = LatencyHistogram(), all = LatencyHistogram()
        for k in 0..<5000 {
            let ns = KeyGenerator.mix(UInt64(k)) % 200_000_000   // up to 200 ms
            if k % 3 == 0 { a.record(nanos: ns) } else { b.record(nanos: ns) }
            all.record(nanos: ns)
        }
        a.merge(b)
        #expect(a.count == all.count)
        #expect(a.minNanos == all.minNanos && a.maxNanos == all.maxNanos)
        for p in [1.0, 50, 90, 99, 99.9] { #expect(a.percentileNanos(p) == all.percentileNanos(p)) }
    }

    @Test func emptyHistogramReportsZeros() {
        let s = LatencySummary(LatencyHistogram())
        #expect(s == LatencySummary(LatencyHistogram()))
        #expect(s.min == 0 && s.max == 0 && s.p99 == 0 && s.avg == 0)
    }

    @Test func keysAreFixedWidthAndOrdered() throws {
        let g = try KeyGenerator(prefix: "b/", size: 8, space: 1000, sequential: true)
        #expect(g.key(0) == Array("b/000000".utf8))
        #expect(g.key(42) == Array("b/000042".utf8))
        #expect(g.index(forRequest: 1001) == 1)
        let r = try KeyGenerator(size: 4, space: 10, sequential: false)
        for i in 0..<1000 { #expect((0..<10).contains(r.index(forRequest: i))) }
        #expect(throws: BenchError.self) { try KeyGenerator(size: 2, space: 1000, sequential: true) }
        #expect(throws: BenchError.self) { try KeyGenerator(prefix: "abc", size: 3, space: 1, sequential: true) }
    }

    @Test func valueStampRoundTrips() {
        let v = Values.stamped(Values.filler(size: 16), nanos: 123_456_789_012)
        #expect(v.count == 16)
        #expect(Values.stamp(of: v) == 123_456_789_012)
        #expect(Values.stamp(of: [1, 2, 3]) == nil)
    }
}
