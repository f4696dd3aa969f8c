import GRPC
import KeelAPI
import Storage
import Synchronization

/// What the Raft loop and the apply loop publish for everyone else (headers, status, metrics,
/// health). Plain atomics: single writers (the loop that owns the value), lock-free readers.
public final class SharedState: Sendable {
    public let clusterID: UInt64
    public let memberID: UInt64
    let term = Atomic<UInt64>(0)
    let leader = Atomic<UInt64>(0)
    let commitIndex = Atomic<UInt64>(0)
    let appliedIndex = Atomic<UInt64>(0)
    /// The last index whose callers the apply loop answered, possibly just before the LMDB commit
    /// that makes it visible to readers (then `answeredIndex > appliedIndex` for that moment).
    let answeredIndex = Atomic<UInt64>(0)
    /// The store revision after the last applied batch, committed to LMDB or still in the apply
    /// loop's group commit (etcd's headers carry the revision including its uncommitted buffer).
    let appliedRevision = Atomic<Int64>(0)
    let leaderChanges = Atomic<UInt64>(0)
    let proposalsCommitted = Atomic<UInt64>(0)
    let proposalsApplied = Atomic<UInt64>(0)
    let proposalsFailed = Atomic<UInt64>(0)
    let proposalsPending = Atomic<Int>(0)
    /// Raised alarms as a bit set (1: NOSPACE, 2: CORRUPT), mirrored from the apply loop.
    let alarms = Atomic<UInt8>(0)
    let stopped = Atomic<Bool>(false)
    /// This member applied its own removal from the cluster (etcd then stops the member).
    let removed = Atomic<Bool>(false)
    /// This member is a learner (mirrored from the applied membership by the apply loop).
    let learner = Atomic<Bool>(false)
    /// This member runs the peer transport and listener (a lone member on the default peer URL does not).
    let peersRunning = Atomic<Bool>(false)
    private let nextID: Atomic<UInt64>

    init(clusterID: UInt64, memberID: UInt64, nowMillis: UInt64) {
        self.clusterID = clusterID
        self.memberID = memberID
        // etcd's idutil layout: 2 bytes of the member ID, then a millisecond timestamp shifted
        // left by one byte, so IDs stay unique across restarts of the same member.
        nextID = Atomic((memberID << 48) | ((nowMillis << 8) & 0xFFFF_FFFF_FFFF))
    }

    /// A fresh request (or lease) ID.
    public func newID() -> UInt64 { nextID.add(1, ordering: .relaxed).newValue }

    public var currentTerm: UInt64 { term.load(ordering: .relaxed) }
    public var currentLeader: UInt64 { leader.load(ordering: .relaxed) }
    public var hasLeader: Bool { currentLeader != 0 }
    public var committed: UInt64 { commitIndex.load(ordering: .acquiring) }
    public var applied: UInt64 { appliedIndex.load(ordering: .acquiring) }
    public var noSpaceAlarm: Bool { alarms.load(ordering: .relaxed) & 1 != 0 }
    public var isRemoved: Bool { removed.load(ordering: .relaxed) }
    public var isLearner: Bool { learner.load(ordering: .relaxed) }

    /// etcd's response header: cluster, member, the given store revision, the current term.
    public func header(revision: Int64) -> Etcdserverpb.ResponseHeader {
        var h = Etcdserverpb.ResponseHeader()
        h.clusterId = clusterID
        h.memberId = memberID
        h.revision = revision
        h.raftTerm = currentTerm
        return h
    }
}

/// The result of applying one internal request (what the proposer's caller gets back).
public enum ApplyResult: Sendable {
    case put(Etcdserverpb.PutResponse)
    case deleteRange(Etcdserverpb.DeleteRangeResponse)
    case txn(Etcdserverpb.TxnResponse)
    case compaction(Etcdserverpb.CompactionResponse)
    case leaseGrant(Etcdserverpb.LeaseGrantResponse)
    case leaseRevoke(Etcdserverpb.LeaseRevokeResponse)
    case leaseCheckpoint(Etcdserverpb.LeaseCheckpointResponse)
    case alarm(Etcdserverpb.AlarmResponse)
    /// A membership change (conf change, attributes, update): the membership after it.
    case membership(Keelpb.Membership)
    case failed(GRPCStatus)
}

/// etcd's gRPC statuses (api/v3rpc/rpctypes/error.go): code and exact message.
public enum EtcdError {
    public static let emptyKey = GRPCStatus(.invalidArgument, "etcdserver: key is not provided")
    public static let keyNotFound = GRPCStatus(.invalidArgument, "etcdserver: key not found")
    public static let valueProvided = GRPCStatus(.invalidArgument, "etcdserver: value is provided")
    public static let leaseProvided = GRPCStatus(.invalidArgument, "etcdserver: lease is provided")
    public static let tooManyOps = GRPCStatus(.invalidArgument, "etcdserver: too many operations in txn request")
    public static let duplicateKey = GRPCStatus(.invalidArgument, "etcdserver: duplicate key given in txn request")
    public static let compacted = GRPCStatus(.outOfRange, "etcdserver: mvcc: required revision has been compacted")
    public static let futureRev = GRPCStatus(.outOfRange, "etcdserver: mvcc: required revision is a future revision")
    public static let noSpace = GRPCStatus(.resourceExhausted, "etcdserver: mvcc: database space exceeded")
    public static let leaseNotFound = GRPCStatus(.notFound, "etcdserver: requested lease not found")
    public static let leaseExist = GRPCStatus(.failedPrecondition, "etcdserver: lease already exists")
    public static let leaseTTLTooLarge = GRPCStatus(.outOfRange, "etcdserver: too large lease TTL")
    public static let memberNotFound = GRPCStatus(.notFound, "etcdserver: member not found")
    public static let memberBadURLs = GRPCStatus(.invalidArgument, "etcdserver: given member URLs are invalid")
    public static let requestTooLarge = GRPCStatus(.invalidArgument, "etcdserver: request is too large")
    public static let tooManyRequests = GRPCStatus(.resourceExhausted, "etcdserver: too many requests")
    public static let noLeader = GRPCStatus(.unavailable, "etcdserver: no leader")
    public static let leaderChanged = GRPCStatus(.unavailable, "etcdserver: leader changed")
    public static let memberExist = GRPCStatus(.failedPrecondition, "etcdserver: member ID already exist")
    public static let peerURLExist = GRPCStatus(.failedPrecondition, "etcdserver: Peer URLs already exists")
    public static let notEnoughStarted = GRPCStatus(.failedPrecondition,
                                                    "etcdserver: re-configuration failed due to not enough started members")
    public static let memberNotLearner = GRPCStatus(.failedPrecondition, "etcdserver: can only promote a learner member")
    public static let learnerNotReady = GRPCStatus(.failedPrecondition,
                                                   "etcdserver: can only promote a learner member which is in sync with leader")
    public static let tooManyLearners = GRPCStatus(.failedPrecondition, "etcdserver: too many learner members in cluster")
    public static let clusterIDMismatch = GRPCStatus(.failedPrecondition, "etcdserver: cluster ID mismatch")
    public static let unhealthy = GRPCStatus(.unavailable, "etcdserver: unhealthy cluster")
    public static let notCapable = GRPCStatus(.unavailable, "etcdserver: not capable")
    public static let notSupportedForLearner = GRPCStatus(.unavailable, "etcdserver: rpc not supported for learner")
    public static let memberRemoved = GRPCStatus(.failedPrecondition, "etcdserver: the member has been permanently removed from the cluster")
    public static let notLeader = GRPCStatus(.failedPrecondition, "etcdserver: not leader")
    public static let stopped = GRPCStatus(.unavailable, "etcdserver: server stopped")
    public static let timeout = GRPCStatus(.unavailable, "etcdserver: request timed out")
    public static let badLeaderTransferee = GRPCStatus(.failedPrecondition, "etcdserver: bad leader transferee")
    public static let authNotEnabled = GRPCStatus(.failedPrecondition, "etcdserver: authentication is not enabled")
    public static let rootUserNotExist = GRPCStatus(.failedPrecondition, "etcdserver: root user does not exist")
    public static let userNotFound = GRPCStatus(.failedPrecondition, "etcdserver: user name not found")
    public static let roleNotFound = GRPCStatus(.failedPrecondition, "etcdserver: role name not found")
    public static let userEmpty = GRPCStatus(.invalidArgument, "etcdserver: user name is empty")
    public static let roleEmpty = GRPCStatus(.invalidArgument, "etcdserver: role name is empty")

    /// The store's typed errors as etcd's gRPC statuses.
    public static func from(_ e: MVCCError) -> GRPCStatus {
        switch e {
        case .compacted: compacted
        case .futureRevision: futureRev
        case .keyNotFound: keyNotFound
        case .leaseNotFound: leaseNotFound
        case .leaseExists: leaseExist
        case .duplicateKey: duplicateKey
        case .noSpace: noSpace
        case .storage(let m): GRPCStatus(.internal, m)
        }
    }
}
