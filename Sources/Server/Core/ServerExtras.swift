import GRPC
import KeelAPI
import Logging
import Storage

/// The services and the apply-loop listeners of a running server: KV, Maintenance, Cluster and
/// Auth (SERVER) plus Watch and Lease (WatchLeaseRuntime: the watch hub and the lessor, created
/// before anything is applied so they see every change through the apply hooks).
final class ServerExtras: Sendable {
    let runtime: WatchLeaseRuntime

    init(store: StoreSlot, config: ServerConfig, memberID: UInt64, logger: Logger) throws {
        runtime = try WatchLeaseRuntime(store: store, config: config, memberID: memberID, logger: logger)
    }

    /// The apply loop's listeners (they never block it).
    var hooks: ApplyHooks {
        var h = ApplyHooks()
        let rt = runtime
        h.events = { ev, rev, prevValues in rt.publish(events: ev, revision: rev, prevValues: prevValues) }
        h.eventsNeedPrevValues = { rt.wantsPrevValues }
        h.committed = { rt.committed() }
        h.compacted = { rev in rt.compacted(revision: rev) }
        h.leases = { changes in rt.leasesApplied(changes) }
        h.snapshotInstalled = { rev in rt.storeReplaced(revision: rev) }
        return h
    }

    /// After replay: lease proposals go to Raft, the lessor follows leadership.
    func setUp(core: KeelCore, logger: Logger) async throws {
        await runtime.attach(core: core)
    }

    func services(core: KeelCore, leaseForwarder: LeaseForwarder? = nil) -> [any GRPCService] {
        [KVService(core: core), MaintenanceService(core: core), ClusterService(core: core), AuthService(core: core)]
            + runtime.services(core: core, leaseForwarder: leaseForwarder)
    }

    func shutdown() async { await runtime.shutdown() }
}
