import NIOHTTP1

/// etcd's HTTP endpoints on the client port.
struct HTTPRoutes: Sendable {
    let core: KeelCore

    func route(_ method: HTTPMethod, _ path: String) async -> HTTPReply? {
        switch path {
        case "/health":
            // etcd 3.4: unhealthy without a leader or with any alarm raised.
            let alarms = await core.alarms()
            let healthy = core.shared.hasLeader && alarms.isEmpty && !core.shared.stopped.load(ordering: .relaxed)
            return HTTPReply(status: healthy ? .ok : .serviceUnavailable,
                             body: healthy ? "{\"health\":\"true\"}" : "{\"health\":\"false\"}")
        case "/version":
            return HTTPReply(body: "{\"etcdserver\":\"\(KeelVersion.etcdServer)\",\"etcdcluster\":\"\(KeelVersion.etcdCluster)\"}")
        case "/metrics":
            return HTTPReply(contentType: "text/plain; version=0.0.4; charset=utf-8", body: await metricsText())
        default:
            return nil
        }
    }

    func metricsText() async -> String {
        let s = core.shared
        let (wal, backend, backendSync) = await core.metricsSnapshot()
        var p = PrometheusText()
        p.gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", s.hasLeader ? 1 : 0)
        p.gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                s.currentLeader == s.memberID ? 1 : 0)
        p.counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.",
                  Double(s.leaderChanges.load(ordering: .relaxed)))
        p.counter("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.",
                  Double(s.proposalsCommitted.load(ordering: .relaxed)))
        p.counter("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.",
                  Double(s.proposalsApplied.load(ordering: .relaxed)))
        p.gauge("etcd_server_proposals_pending", "The current number of pending proposals to commit.",
                Double(s.proposalsPending.load(ordering: .relaxed)))
        p.counter("etcd_server_proposals_failed_total", "The total number of failed proposals seen.",
                  Double(s.proposalsFailed.load(ordering: .relaxed)))
        p.gauge("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.",
                Double(core.store.dbSize))
        p.gauge("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.",
                Double(core.store.dbSizeInUse))
        p.gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.", Double(core.currentRevision))
        p.gauge("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.",
                Double(core.store.compactedRevision))
        p.histogram("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.", wal)
        p.histogram("etcd_disk_backend_commit_duration_seconds", "The latency distributions of commit called by backend.", backend)
        // Keel's own: its backend commits reach the page cache, and a sync right after each one, off the
        // apply loop, makes them durable (etcd's commit duration includes bbolt's fsync; Keel's sum of
        // the two is comparable).
        p.histogram("keel_disk_backend_sync_duration_seconds", "The latency distributions of the backend's fdatasync after each commit (off the apply loop).",
                    backendSync)
        p.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", ProcessStats.residentMemoryBytes)
        p.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", ProcessStats.cpuSeconds)
        p.gauge("process_open_fds", "Number of open file descriptors.", ProcessStats.openFDs)
        p.gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", core.startTime)
        return p.text
    }
}
