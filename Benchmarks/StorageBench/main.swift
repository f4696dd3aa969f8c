// storage-bench: Storage benchmarks (not a test). Run: swift run -c release --scratch-path .build-storage storage-bench [dir]
// Currently: WAL appends with fdatasync for batches of 1, 16 and 256 entries of 256 bytes.
// (The MVCC/LMDB part of issue 5 is not written yet, so it has no numbers here.)
#if canImport(Glibc)
import Glibc
#endif
import Storage

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

let base = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "/tmp/keel-storage-bench-\(getpid())"
let payload = [UInt8](repeating: 0xAB, count: 256)
print("WAL: 256-byte entries, one write + one fdatasync per batch, 64 MiB preallocated segments, dir \(base)")
print("batch  batches/s  entries/s  MB/s(payload)")
for batchSize in [1, 16, 256] {
    let dir = base + "/wal-\(batchSize)"
    let (wal, _) = try WAL.open(directory: dir)
    var next: UInt64 = 1
    let batches = batchSize == 256 ? 400 : 2000
    // warm-up (segment creation)
    try wal.append(entries: [WALEntry(index: next, term: 1, data: payload)]); next += 1
    let t0 = now()
    for _ in 0..<batches {
        var es: [WALEntry] = []
        es.reserveCapacity(batchSize)
        for _ in 0..<batchSize { es.append(WALEntry(index: next, term: 1, data: payload)); next += 1 }
        try wal.append(entries: es, hardState: HardState(term: 1, vote: 1, commit: next - 1))
    }
    let dt = now() - t0
    let entries = Double(batches * batchSize)
    let bps = Int(Double(batches) / dt)
    let eps = Int(entries / dt)
    let mbps = (entries * 256 / dt / 1e6 * 10).rounded() / 10
    print("\(batchSize)  \(bps)  \(eps)  \(mbps)")
    wal.close()
}
