// storage-crash-helper: a child process for StorageTests' crash and full-disk tests.
//   storage-crash-helper wal <dir> <segmentSize>
//       appends batches forever (entry data derived from its index); after each append returns
//       (i.e. after its fdatasync) prints "<last index>\n" to stdout. The test SIGKILLs it.
//   storage-crash-helper walfull <dir> <segmentSize> <fileSizeLimit>
//       same, under RLIMIT_FSIZE (a per-file size limit), with the 20th batch larger than the limit;
//       prints "ERR <description>" and exits 0 at the first error.
#if canImport(Glibc)
import Glibc
#endif
import Storage

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
