#if canImport(Glibc)
import Glibc
#endif
import Testing
import KeelTestSupport
@testable import Storage

func walData(_ index: UInt64) -> [UInt8] {
    let n = Int(index % 97) * 13 + 5
    return (0..<n).map { UInt8(truncatingIfNeeded: Int(index) &* 31 &+ $0) }
}

func entries(_ r: ClosedRange<UInt64>, term: UInt64 = 1) -> [WALEntry] {
    r.map { WALEntry(index: $0, term: term, data: walData($0)) }
}

func segmentFiles(_ dir: String) -> [String] {
    ((try? FileIO.listDir(dir)) ?? []).filter { $0.hasSuffix(".wal") }
}

// Serialized: the crash tests spawn children, and a child briefly holds copies of all of this
// process's fds between fork and exec (O_CLOEXEC closes them only at exec), including another
// test's LOCK fd, whose flock would then outlive that test's close() for a moment.
@Suite(.serialized) struct WALTests {
    @Test func appendAndReplay() throws {
        let d = TempDir(); defer { d.cleanup() }
        do {
            let (wal, r) = try WAL.open(directory: d.path, options: WALOptions(segmentSize: 1 << 20))
            #expect(r.entries.isEmpty && r.hardState == nil && r.truncatedTail == nil)
            try wal.append(entries: entries(1...3), hardState: HardState(term: 1, vote: 2, commit: 0))
            try wal.append(entries: [], hardState: HardState(term: 1, vote: 2, commit: 3))
            try wal.append(entries: entries(4...10), hardState: nil)
            wal.close()
        }
        let (wal, r) = try WAL.open(directory: d.path, options: WALOptions(segmentSize: 1 << 20))
        #expect(r.entries == entries(1...10))
        #expect(r.hardState == HardState(term: 1, vote: 2, commit: 3))
        #expect(r.truncatedTail == nil)
        try wal.append(entries: entries(11...11))
        wal.close()
        let (_, r2) = try WAL.open(directory: d.path)
        #expect(r2.entries == entries(1...11))
    }

    @Test func conflictingSuffixIsReplaced() throws {
        let d = TempDir(); defer { d.cleanup() }
        let (wal, _) = try WAL.open(directory: d.path)
        try wal.append(entries: entries(1...10, term: 1))
        try wal.append(entries: entries(6...7, term: 2))
        wal.close()
        let (_, r) = try WAL.open(directory: d.path)
        #expect(r.entries == entries(1...5, term: 1) + entries(6...7, term: 2))
    }

    @Test func lockStopsSecondOpen() throws {
        let d = TempDir(); defer { d.cleanup() }
        let (wal, _) = try WAL.open(directory: d.path)
        #expect(throws: DirectoryLockedError.self) { _ = try WAL.open(directory: d.path) }
        wal.close()
        let (again, _) = try WAL.open(directory: d.path)
        again.close()
    }

    @Test func segmentsRollAndRelease() throws {
        let d = TempDir(); defer { d.cleanup() }
        let opts = WALOptions(segmentSize: 4096)
        let (wal, _) = try WAL.open(directory: d.path, options: opts)
        for i in stride(from: UInt64(1), through: 200, by: 5) {
            try wal.append(entries: entries(i...(i + 4)), hardState: HardState(term: 1, vote: 1, commit: i))
        }
        let before = segmentFiles(d.path).count
        #expect(before > 5)
        // Every segment is preallocated to the configured size (or larger for an oversized batch).
        for f in segmentFiles(d.path) { #expect(fileBytes(d.path + "/" + f).count >= 4096) }
        try wal.saveSnapshotMarker(WALSnapshotMarker(index: 150, term: 1))
        try wal.releaseBefore(150)
        let after = segmentFiles(d.path)
        #expect(after.count < before)
        // The first remaining segment starts at or before 150 or its name says where it starts.
        wal.close()
        let (_, r) = try WAL.open(directory: d.path, options: opts)
        #expect(r.snapshot == WALSnapshotMarker(index: 150, term: 1))
        #expect(r.entries == entries(151...200))
        #expect(r.hardState == HardState(term: 1, vote: 1, commit: 196))
    }

    @Test func hardStateSurvivesReleaseOfItsSegment() throws {
        let d = TempDir(); defer { d.cleanup() }
        let opts = WALOptions(segmentSize: 2048)
        let (wal, _) = try WAL.open(directory: d.path, options: opts)
        try wal.append(entries: entries(1...1), hardState: HardState(term: 3, vote: 7, commit: 1))
        for i in UInt64(2)...60 { try wal.append(entries: entries(i...i)) }
        try wal.saveSnapshotMarker(WALSnapshotMarker(index: 55, term: 3))
        try wal.releaseBefore(55)
        wal.close()
        let (_, r) = try WAL.open(directory: d.path, options: opts)
        #expect(r.hardState == HardState(term: 3, vote: 7, commit: 1))
        #expect(r.entries == entries(56...60, term: 1))
    }

    /// A batch cut short (as by a crash mid-write) is dropped and reported; the WAL keeps working.
    @Test func tornTailIsTruncated() throws {
        let d = TempDir(); defer { d.cleanup() }
        let (wal, _) = try WAL.open(directory: d.path)
        try wal.append(entries: entries(1...5))
        try wal.append(entries: entries(6...9))
        wal.close()
        let seg = d.path + "/" + segmentFiles(d.path)[0]
        let bytes = fileBytes(seg)
        let end = bytes.lastIndex { $0 != 0 }! + 1
        // Zero the last 40 bytes of data: the last record of the second batch is torn.
        writeBytes(seg, at: end - 40, [UInt8](repeating: 0, count: 40))
        do {
            let (wal, r) = try WAL.open(directory: d.path)
            let cut = try #require(r.truncatedTail)
            #expect(cut.file == seg)
            #expect(r.entries.last!.index < 9 && r.entries.last!.index >= 5)
            #expect(r.entries == entries(1...r.entries.last!.index))
            try wal.append(entries: entries((r.entries.last!.index + 1)...20))
            wal.close()
        }
        let (_, r) = try WAL.open(directory: d.path)
        #expect(r.truncatedTail == nil)
        #expect(r.entries == entries(1...20))
    }

    @Test func garbageAfterTheDataIsATornTail() throws {
        let d = TempDir(); defer { d.cleanup() }
        let (wal, _) = try WAL.open(directory: d.path)
        try wal.append(entries: entries(1...5))
        wal.close()
        let seg = d.path + "/" + segmentFiles(d.path)[0]
        let end = fileBytes(seg).lastIndex { $0 != 0 }! + 1
        var rng = SplitMix64(seed: 3)
        writeBytes(seg, at: (end + 7) & ~7, (0..<300).map { _ in UInt8.random(in: 1...255, using: &rng) })
        let (_, r) = try WAL.open(directory: d.path)
        #expect(r.entries == entries(1...5))
        #expect(r.truncatedTail?.offset == (end + 7) & ~7)
        // And the garbage is gone from the file.
        #expect(fileBytes(seg)[((end + 7) & ~7)...].allSatisfy { $0 == 0 })
    }

    @Test func truncatedFileIsATornTail() throws {
        let d = TempDir(); defer { d.cleanup() }
        let (wal, _) = try WAL.open(directory: d.path)
        try wal.append(entries: entries(1...5))
        try wal.append(entries: entries(6...6))
        wal.close()
        let seg = d.path + "/" + segmentFiles(d.path)[0]
        let end = fileBytes(seg).lastIndex { $0 != 0 }! + 1
        #expect(truncate(seg, off_t(end - 10)) == 0)
        let (_, r) = try WAL.open(directory: d.path)
        #expect(r.entries == entries(1...5))
        #expect(r.truncatedTail != nil)
    }

    /// Damage followed by a later, complete batch is corruption, not a torn tail: a hard error.
    @Test func corruptionBeforeTheTailIsAHardError() throws {
        let d = TempDir(); defer { d.cleanup() }
        let (wal, _) = try WAL.open(directory: d.path)
        try wal.append(entries: entries(1...3))
        try wal.append(entries: entries(4...6))
        try wal.append(entries: entries(7...9))
        wal.close()
        let seg = d.path + "/" + segmentFiles(d.path)[0]
        // Flip one payload byte in the second record (entry 2).
        let firstLen = WAL.recordSize(16 + walData(1).count)
        var b = fileBytes(seg)[firstLen + 30]
        b ^= 0x40
        writeBytes(seg, at: firstLen + 30, [b])
        #expect(throws: WALError.corrupt(file: seg, offset: firstLen, reason: "CRC32C mismatch")) {
            _ = try WAL.open(directory: d.path)
        }
        // Nothing was truncated by the failed open.
        #expect(fileBytes(seg)[firstLen + 30] == b)
    }

    @Test func corruptionInAnEarlierSegmentIsAHardError() throws {
        let d = TempDir(); defer { d.cleanup() }
        let opts = WALOptions(segmentSize: 2048)
        let (wal, _) = try WAL.open(directory: d.path, options: opts)
        for i in UInt64(1)...40 { try wal.append(entries: entries(i...i)) }
        wal.close()
        let segs = segmentFiles(d.path)
        #expect(segs.count >= 3)
        let seg = d.path + "/" + segs[0]
        let end = fileBytes(seg).lastIndex { $0 != 0 }! + 1
        writeBytes(seg, at: end - 3, [0xAA])
        #expect {
            _ = try WAL.open(directory: d.path, options: opts)
        } throws: { e in
            guard case let WALError.corrupt(file, offset, _) = e else { return false }
            return file == seg && offset < end
        }
    }

    @Test func missingSegmentIsAnError() throws {
        let d = TempDir(); defer { d.cleanup() }
        let opts = WALOptions(segmentSize: 2048)
        let (wal, _) = try WAL.open(directory: d.path, options: opts)
        for i in UInt64(1)...40 { try wal.append(entries: entries(i...i)) }
        wal.close()
        let segs = segmentFiles(d.path)
        #expect(unlink(d.path + "/" + segs[1]) == 0)
        #expect(throws: WALError.missingSegment(after: segs[0])) { _ = try WAL.open(directory: d.path, options: opts) }
    }

    /// SIGKILL a writer at random moments: every append that returned is on disk after reopening,
    /// and what is there is exactly a prefix of what was written (no half batch, no garbage).
    @Test func crashDuringWritesLosesNothingAcknowledged() throws {
        let seed = randomSeed()
        var rng = SplitMix64(seed: seed)
        let helper = builtProduct("storage-crash-helper")
        let d = TempDir(); defer { d.cleanup() }
        var acked: UInt64 = 0
        for round in 0..<6 {
            let child = try Child(helper, ["wal", d.path, "65536"])
            acked = child.readAcksThenKill(Int.random(in: 1...300, using: &rng), previous: acked, context: "seed \(seed)")
            let (wal, r) = try WAL.open(directory: d.path, options: WALOptions(segmentSize: 65536))
            let last = r.entries.last?.index ?? 0
            #expect(last >= acked, "round \(round): acknowledged \(acked) but recovered \(last) (seed \(seed))")
            #expect(r.entries == entries(1...max(last, 1)).prefix(Int(last)).map { $0 }, "seed \(seed)")
            acked = last
            wal.close()
        }
    }

    /// A file-size limit (RLIMIT_FSIZE, standing in for a full disk) makes a write fail with a clear
    /// error (EFBIG, which `StorageIOError.isNoSpace` treats like ENOSPC); everything acknowledged
    /// before survives, the failed batch is not visible, and the WAL reopens cleanly.
    @Test func fullDiskGivesAClearErrorAndNoDamage() throws {
        let helper = builtProduct("storage-crash-helper")
        let d = TempDir(); defer { d.cleanup() }
        let child = try Child(helper, ["walfull", d.path, "16384", "16384"])
        var acked: UInt64 = 0
        var err: String?
        while let line = child.readLine() {
            if line.hasPrefix("ERR ") { err = line; break }
            if line == "DONE" { break }
            acked = UInt64(line)!
        }
        child.wait()
        let message = try #require(err)
        #expect(message.contains("File too large") || message.contains("No space"), "\(message)")
        #expect(acked > 0)
        let (_, r) = try WAL.open(directory: d.path, options: WALOptions(segmentSize: 16384))
        // The failed batch may have been partly written (a short write at the limit): that torn
        // tail is cut off; everything acknowledged is there, nothing of the failed batch.
        #expect(r.entries == entries(1...acked))
        #expect(!((try? FileIO.listDir(d.path)) ?? []).contains { $0.hasSuffix(".tmp") })
    }
}

@Suite struct SnapshotTests {
    @Test func saveLoadPrune() throws {
        let d = TempDir(); defer { d.cleanup() }
        let s = try Snapshotter(directory: d.path + "/snap")
        #expect(try s.loadNewest().snapshot == nil)
        for i in UInt64(1)...4 {
            try s.save(SnapshotMetadata(index: i * 100, term: i, confState: [1, 2, UInt8(i)]), data: Array(repeating: UInt8(i), count: 1000))
        }
        let newest = try #require(try s.loadNewest().snapshot)
        #expect(newest.metadata == SnapshotMetadata(index: 400, term: 4, confState: [1, 2, 4]))
        #expect(newest.data == Array(repeating: 4, count: 1000))
        try s.prune(keep: 2)
        #expect(try s.list().count == 2)
        // Corrupt the newest: the previous one is loaded and the bad one reported.
        let f = d.path + "/snap/" + (try s.list()[0])
        writeBytes(f, at: 100, [0xEE])
        let (snap, invalid) = try s.loadNewest()
        #expect(snap?.metadata.index == 300)
        #expect(invalid.count == 1)
    }
}
