// storage-crash-helper: a child process for StorageTests' crash and full-disk tests.
//   storage-crash-helper wal <dir> <segmentSize>
//       appends batches forever (entry data derived from its index); after each append returns
//       (i.e. after its fdatasync) prints "<last index>\n" to stdout. The test SIGKILLs it.
//   storage-crash-helper walfull <dir> <segmentSize> <fileSizeLimit>
//       same, under RLIMIT_FSIZE (a per-file size limit), with the 20th batch larger than the limit;
//       prints "ERR <description>" and exits 0 at the first error.
//   storage-crash-helper mvcc <dir> <upTo>
//       MVCC store: batch i (i = appliedIndex + 1, ...) is one write{} of mvccBatch(i) (puts and a
//       delete, deterministic in i) plus setAppliedIndex(i); after the commit returns, prints "<i>".
//       Stops after batch <upTo> (0: runs until killed, at most 100,000) and prints "DONE". The test
//       SIGKILLs it, then builds a reference store with `mvcc <ref> <appliedIndex>` and compares.
//   storage-crash-helper mvccfull <dir> <fileSizeLimit>
//       same under RLIMIT_FSIZE with growing values; prints "ERR <error>" at the first failure, then
//       "AFTER <result of one more small write>" and exits 0.
#if canImport(Glibc)
import Glibc
#endif
import KeelAPI
import Storage

/// The deterministic content of MVCC batch i (the test replays it to know what must be there).
func mvccBatch(_ i: UInt64, big: Bool = false) -> [(key: [UInt8], value: [UInt8]?)] {
    var ops: [(key: [UInt8], value: [UInt8]?)] = []
    for j in 0..<UInt64(1 + i % 3) {
        let k = Array("k\((i * 7 + j * 13) % 40)".utf8)
        // values of up to 49 bytes stay in the key table; every fourth is longer than the store's
        // inline limit (64) and goes into the revision table
        let n = big ? 3000 + Int(i % 5) * 1000 : ((i + j) % 4 == 0 ? 65 + Int((i + j) % 200) : Int((i + j) % 50))
        ops.append((k, (0..<n).map { UInt8(truncatingIfNeeded: Int(i) &+ $0) }))
    }
    if i % 4 == 0 { ops.append((Array("k\((i * 3) % 40)".utf8), nil)) }
    return ops
}

func entryData(_ index: UInt64) -> [UInt8] {
    let n = Int(index % 97) * 13 + 5
    return (0..<n).map { UInt8(truncatingIfNeeded: Int(index) &* 31 &+ $0) }
}

func say(_ s: String) {
    let line = s + "\n"
    _ = line.withCString { write(1, $0, strlen($0)) }
}

let args = CommandLine.arguments
guard args.count >= 4 else { say("usage"); exit(2) }
if args[1] == "mvcc" || args[1] == "mvccfull" {
    let full = args[1] == "mvccfull"
    if full {
        var lim = rlimit(rlim_cur: rlim_t(Int(args[3])!), rlim_max: rlim_t(Int(args[3])!))
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &lim)
        signal(SIGXFSZ, SIG_IGN)
    }
    do {
        let store = try MVCCStore.open(directory: args[2], options: MVCCOptions(quotaBackendBytes: -1, mapSize: 256 << 20))
        var i = store.appliedIndex
        let upTo = full ? 100_000 : (UInt64(args[3])! == 0 ? 100_000 : UInt64(args[3])!)
        while i < upTo {
            i += 1
            let batch = mvccBatch(i, big: full)
            do {
                try store.write { (w) throws(MVCCError) in
                    for op in batch {
                        if let v = op.value {
                            var p = Etcdserverpb.PutRequest(); p.key = op.key; p.value = v
                            _ = try w.put(p)
                        } else {
                            var d = Etcdserverpb.DeleteRangeRequest(); d.key = op.key
                            _ = try w.deleteRange(d)
                        }
                    }
                    w.setAppliedIndex(i)
                }
            } catch {
                say("ERR \(error)")
                let after: String
                do {
                    try store.write { (w) throws(MVCCError) in w.setAppliedIndex(i - 1) }
                    after = "ok"
                } catch let e { after = "\(e)" }
                say("AFTER \(after)")
                exit(0)
            }
            say("\(i)")
        }
        say("DONE")
    } catch {
        say("ERR \(error)")
    }
    exit(0)
}
let dir = args[2]
let segSize = Int(args[3])!
if args[1] == "walfull" {
    var lim = rlimit(rlim_cur: rlim_t(Int(args[4])!), rlim_max: rlim_t(Int(args[4])!))
    setrlimit(Int32(RLIMIT_FSIZE.rawValue), &lim)
    signal(SIGXFSZ, SIG_IGN)
}
do {
    let (wal, replay) = try WAL.open(directory: dir, options: WALOptions(segmentSize: segSize))
    var next = (replay.entries.last?.index ?? 0) + 1
    var batchSize = 1
    var batches = 0
    let full = args[1] == "walfull"
    // Bounded: at most 100,000 batches (the test normally SIGKILLs it much earlier; a parent that
    // died closes the pipe and the next write raises SIGPIPE).
    while batches < 100_000 {
        batches += 1
        // walfull: after 20 batches, one batch larger than the file-size limit.
        if full && batches == 20 { batchSize = 400 }
        var entries: [WALEntry] = []
        for i in 0..<UInt64(batchSize) { entries.append(WALEntry(index: next + i, term: 1, data: entryData(next + i))) }
        try wal.append(entries: entries, hardState: HardState(term: 1, vote: 1, commit: next))
        next += UInt64(batchSize)
        say("\(next - 1)")
        batchSize = batchSize % 7 + 1
    }
    say("DONE")
} catch {
    say("ERR \(error)")
    exit(0)
}
