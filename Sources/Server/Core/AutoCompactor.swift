import KeelAPI
import Logging

/// etcd's --auto-compaction-mode / --auto-compaction-retention (etcd 3.4 compactors, own code):
/// - revision: every 5 minutes, compact to (current revision - retention).
/// - periodic: record the store revision every retention/10 (at least every second); every
///   min(retention, 1 h), compact to the newest recorded revision that is at least `retention` old.
/// Compactions go through Raft like the Compact RPC; an already compacted revision is skipped.
enum AutoCompactor {
    static func start(_ mode: ServerConfig.AutoCompaction, core: KeelCore, logger: Logger) -> Task<Void, Never> {
        Task {
            switch mode {
            case .revision(let keep):
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(300))
                    if Task.isCancelled { return }
                    await compact(to: core.currentRevision - keep, core: core, logger: logger)
                }
            case .periodic(let seconds):
                let retention = Duration.seconds(seconds)
                let sampleEvery = max(Duration.seconds(1), retention / 10)
                let compactEvery = min(retention, .seconds(3600))
                let clock = ContinuousClock()
                var samples: [(at: ContinuousClock.Instant, revision: Int64)] = []
                var lastCompaction = clock.now
                while !Task.isCancelled {
                    samples.append((clock.now, core.currentRevision))
                    try? await Task.sleep(for: sampleEvery)
                    if Task.isCancelled { return }
                    let now = clock.now
                    guard now - lastCompaction >= compactEvery else { continue }
                    guard let target = samples.last(where: { now - $0.at >= retention }) else { continue }
                    lastCompaction = now
                    samples.removeAll { $0.at < target.at }
                    await compact(to: target.revision, core: core, logger: logger)
                }
            }
        }
    }

    static func compact(to revision: Int64, core: KeelCore, logger: Logger) async {
        guard revision > 0, revision > core.store.compactedRevision else { return }
        var req = Etcdserverpb.CompactionRequest()
        req.revision = revision
        do {
            let r = try await core.propose(.compaction(req))
            if case .failed(let s) = r {
                logger.warning("auto-compaction failed", metadata: ["revision": "\(revision)", "error": "\(s)"])
            } else {
                logger.info("auto-compacted", metadata: ["revision": "\(revision)"])
            }
        } catch {
            logger.warning("auto-compaction failed", metadata: ["revision": "\(revision)", "error": "\(error)"])
        }
    }
}
