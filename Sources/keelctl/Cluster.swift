// member, endpoint, defrag, snapshot save, move-leader, alarm (etcdctl/ctlv3/command/{member,ep,defrag,
// snapshot,move_leader,alarm}_command.go).
import ArgumentParser
import Foundation
import GRPC
import KeelAPI
import KeelClient

/// A hex member ID as etcdctl parses it (strconv.ParseUint(s, 16, 64)).
func memberArgument(_ s: String) throws(CtlFailure) -> UInt64 {
    guard let id = UInt64(s, radix: 16) else {
        throw CtlFailure(.badArgs, "bad member ID arg (\(goParseIntError(s).replacingOccurrences(of: "ParseInt", with: "ParseUint"))), expecting ID in Hex")
    }
    return id
}

// MARK: member

struct MemberCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "member", abstract: "Membership related commands",
        subcommands: [MemberAdd.self, MemberRemove.self, MemberUpdate.self, MemberList.self, MemberPromote.self])

    static func rows(_ members: [Etcdserverpb.Member]) -> [[String]] {
        members.map { m in
            [idHex(m.id), m.name.isEmpty ? "unstarted" : "started", m.name, m.peerURLs.joined(separator: ","),
             m.clientURLs.joined(separator: ","), m.isLearner ? "true" : "false"]
        }
    }
    static let header = ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"]

    /// member remove/promote: one hex member ID argument, one call, the same printing.
    static func byID<Req, Resp>(_ args: [String], _ global: GlobalOptions, _ method: MethodDescriptor<Req, Resp>,
                                verb: String, request: (UInt64) -> Req,
                                result: (Resp) -> (Etcdserverpb.ResponseHeader?, [Etcdserverpb.Member]))
        async throws(CtlFailure) {
        guard args.count == 1 else { throw CtlFailure(.badArgs, "member ID is not provided") }
        let id = try memberArgument(args[0])
        let c = try global.connect()
        let (header, members) = result(try await c.unary(method, request(id), idempotent: false))
        try printChange(verb, id: id, header: header, members: members, c)
    }

    /// MemberRemove/Update/Promote print the same way.
    static func printChange(_ verb: String, id: UInt64, header: Etcdserverpb.ResponseHeader?,
                            members: [Etcdserverpb.Member], _ c: Connection) throws(CtlFailure) {
        try KVPrint.emit(c, json: { PB.members(header: header, members: members) }) {
            Out.line("Member \(idHex16(id)) \(verb) cluster \(idHex16(header?.clusterId ?? 0))")
        }
    }
}

struct MemberList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Lists all members in the cluster")
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let c = try global.connect()
        let resp = try await c.unary(Etcdserverpb.Cluster.memberList, Etcdserverpb.MemberListRequest(), idempotent: true)
        switch c.format {
        case .simple: for r in MemberCommand.rows(resp.members) { Out.line(r.joined(separator: ", ")) }
        case .json: Out.line(PB.members(header: resp.header, members: resp.members).rendered)
        case .table: Out.write(renderTable(header: MemberCommand.header, rows: MemberCommand.rows(resp.members)))
        default: throw KVPrint.unsupported(c.format)
        }
    }
}

struct MemberAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Adds a member into the cluster")
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("peer-urls"), help: "comma separated peer URLs for the new member.") var peerURLs: String = ""
    @Flag(help: "indicates if the new member is raft learner") var learner = false
    @Argument var args: [String] = []

    func run() async throws {
        guard !args.isEmpty else { throw CtlFailure(.badArgs, "member name not provided") }
        if args.count > 1 {
            var ev = "too many arguments"
            for s in args where s.lowercased().hasPrefix("http") { ev += ", did you mean --peer-urls=\(s)" }
            throw CtlFailure(.badArgs, ev)
        }
        let name = args[0]
        guard !peerURLs.isEmpty else { throw CtlFailure(.badArgs, "member peer urls not provided") }
        let c = try global.connect()
        var r = Etcdserverpb.MemberAddRequest()
        r.peerURLs = peerURLs.components(separatedBy: ",")
        r.isLearner = learner
        let resp = try await c.unary(Etcdserverpb.Cluster.memberAdd, r, idempotent: false)
        let newID = resp.member?.id ?? 0
        switch c.format {
        case .simple:
            Out.line("Member \(idHex16(newID)) added to cluster \(idHex16(resp.header?.clusterId ?? 0))")
            var conf: [String] = []
            for m in resp.members {
                for u in m.peerURLs { conf.append("\(m.id == newID ? name : m.name)=\(u)") }
            }
            Out.line("")
            Out.line("ETCD_NAME=\(goQuote(name))")
            Out.line("ETCD_INITIAL_CLUSTER=\(goQuote(conf.joined(separator: ",")))")
            Out.line("ETCD_INITIAL_ADVERTISE_PEER_URLS=\(goQuote(peerURLs))")
            Out.line("ETCD_INITIAL_CLUSTER_STATE=\"existing\"")
        case .json: Out.line(PB.members(header: resp.header, member: resp.member, members: resp.members).rendered)
        default: throw KVPrint.unsupported(c.format)
        }
    }
}

struct MemberRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Removes a member from the cluster")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func run() async throws {
        try await MemberCommand.byID(args, global, Etcdserverpb.Cluster.memberRemove, verb: "removed from",
                                     request: { var r = Etcdserverpb.MemberRemoveRequest(); r.id = $0; return r },
                                     result: { ($0.header, $0.members) })
    }
}

struct MemberUpdate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "update", abstract: "Updates a member in the cluster")
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("peer-urls"), help: "comma separated peer URLs for the updated member.") var peerURLs: String = ""
    @Argument var args: [String] = []

    func run() async throws {
        guard args.count == 1 else { throw CtlFailure(.badArgs, "member ID is not provided") }
        let id = try memberArgument(args[0])
        guard !peerURLs.isEmpty else { throw CtlFailure(.badArgs, "member peer urls not provided") }
        let c = try global.connect()
        var r = Etcdserverpb.MemberUpdateRequest()
        r.id = id
        r.peerURLs = peerURLs.components(separatedBy: ",")
        let resp = try await c.unary(Etcdserverpb.Cluster.memberUpdate, r, idempotent: true)
        try MemberCommand.printChange("updated in", id: id, header: resp.header, members: resp.members, c)
    }
}

struct MemberPromote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "promote", abstract: "Promotes a non-voting member in the cluster")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func run() async throws {
        try await MemberCommand.byID(args, global, Etcdserverpb.Cluster.memberPromote, verb: "promoted in",
                                     request: { var r = Etcdserverpb.MemberPromoteRequest(); r.id = $0; return r },
                                     result: { ($0.header, $0.members) })
    }
}

// MARK: endpoint

/// `--cluster`: every member's client URLs instead of --endpoints.
func targetEndpoints(_ c: Connection, cluster: Bool) async throws(CtlFailure) -> [String] {
    guard cluster else { return c.endpoints }
    let resp = try await c.unary(Etcdserverpb.Cluster.memberList, Etcdserverpb.MemberListRequest(), idempotent: true) {
        "failed to fetch endpoints from etcd cluster member list: \($0)"
    }
    return resp.members.flatMap(\.clientURLs)
}

struct EndpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoint", abstract: "Endpoint related commands",
        subcommands: [EndpointHealth.self, EndpointStatus.self, EndpointHashKV.self])
}

struct EndpointStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Prints out the status of endpoints specified in `--endpoints` flag")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "use all endpoints from the cluster member list") var cluster = false

    func run() async throws {
        let c = try global.connect()
        var list: [(String, Etcdserverpb.StatusResponse)] = []
        var failed = false
        for ep in try await targetEndpoints(c, cluster: cluster) {
            do {
                let one = try c.single(ep)
                list.append((ep, try await c.unary(Etcdserverpb.Maintenance.status, Etcdserverpb.StatusRequest(),
                                                   idempotent: true, on: one)))
            } catch {
                failed = true
                Out.err("Failed to get the status of endpoint \(ep) (\(error.message))")
            }
        }
        let rows = list.map { ep, s -> [String] in
            [ep, idHex(s.header?.memberId ?? 0), s.version, humanizeBytes(UInt64(max(0, s.dbSize))),
             String(s.leader == (s.header?.memberId ?? 0)), String(s.isLearner), String(s.raftTerm), String(s.raftIndex),
             String(s.raftAppliedIndex), s.errors.joined(separator: ", ")]
        }
        switch c.format {
        case .simple: for r in rows { Out.line(r.joined(separator: ", ")) }
        case .json:
            Out.line(JSON.array(list.map { .object([("Endpoint", .string($0.0)), ("Status", PB.status($0.1))]) }).rendered)
        case .table:
            Out.write(renderTable(header: ["endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term",
                                           "raft index", "raft applied index", "errors"], rows: rows))
        default: throw KVPrint.unsupported(c.format)
        }
        if failed { Foundation.exit(ExitCode.error.rawValue) }
    }
}

struct EndpointHashKV: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hashkv", abstract: "Prints the KV history hash for each endpoint in --endpoints")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "use all endpoints from the cluster member list") var cluster = false
    @Option(help: "maximum revision to hash (default: all revisions)") var rev: Int64 = 0

    func run() async throws {
        let c = try global.connect()
        var list: [(String, Etcdserverpb.HashKVResponse)] = []
        var failure: CtlFailure?
        for ep in try await targetEndpoints(c, cluster: cluster) {
            do {
                var r = Etcdserverpb.HashKVRequest()
                r.revision = rev
                list.append((ep, try await c.unary(Etcdserverpb.Maintenance.hashKV, r, idempotent: true, on: try c.single(ep))))
            } catch {
                failure = CtlFailure(.error, error.message)
                Out.err("Failed to get the hash of endpoint \(ep) (\(error.message))")
            }
        }
        switch c.format {
        case .simple: for (ep, h) in list { Out.line("\(ep), \(h.hash_)") }
        case .json:
            Out.line(JSON.array(list.map { ep, h in
                var o = JSONObject()
                o.message("header", PB.header(h.header))
                o.int("hash", h.hash_)
                o.int("compact_revision", h.compactRevision)
                return .object([("Endpoint", .string(ep)), ("HashKV", o.json)])
            }).rendered)
        case .table: Out.write(renderTable(header: ["endpoint", "hash"], rows: list.map { [$0.0, String($0.1.hash_)] }))
        default: throw KVPrint.unsupported(c.format)
        }
        if let failure { throw failure }
    }
}

struct EndpointHealth: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health", abstract: "Checks the healthiness of endpoints specified in `--endpoints` flag")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "use all endpoints from the cluster member list") var cluster = false

    struct Health: Sendable {
        var endpoint: String
        var health: Bool
        var took: String
        var error: String
    }

    func run() async throws {
        let c = try global.connect()
        let eps = try await targetEndpoints(c, cluster: cluster)
        // As etcdctl: every endpoint checked at once (a linearizable get of "health"), reported as they finish.
        let list = await withTaskGroup(of: Health.self) { group in
            for ep in eps {
                group.addTask {
                    let start = ContinuousClock.now
                    do {
                        let one = try c.single(ep)
                        var r = Etcdserverpb.RangeRequest()
                        r.key = Array("health".utf8)
                        _ = try await c.unary(Etcdserverpb.KV.range, r, idempotent: true, on: one)
                        return Health(endpoint: ep, health: true, took: goDuration(ContinuousClock.now - start), error: "")
                    } catch {
                        return Health(endpoint: ep, health: false, took: goDuration(ContinuousClock.now - start),
                                      error: error.message)
                    }
                }
            }
            var out: [Health] = []
            for await h in group { out.append(h) }
            return out
        }
        switch c.format {
        case .simple:
            for h in list {
                if h.error.isEmpty {
                    Out.err("\(h.endpoint) is healthy: successfully committed proposal: took = \(h.took)")
                } else {
                    Out.err("\(h.endpoint) is unhealthy: failed to commit proposal: \(h.error)")
                }
            }
        case .json:
            Out.line(JSON.array(list.map { h in
                var o = JSONObject()
                o.string("endpoint", h.endpoint, omitEmpty: false)
                o.bool("health", h.health, omitEmpty: false)
                o.string("took", h.took, omitEmpty: false)
                o.string("error", h.error)
                return o.json
            }).rendered)
        case .table:
            Out.write(renderTable(header: ["endpoint", "health", "took", "error"],
                                  rows: list.map { [$0.endpoint, String($0.health), $0.took, $0.error] }))
        default: throw KVPrint.unsupported(c.format)
        }
        if list.contains(where: { !$0.error.isEmpty }) { throw CtlFailure(.error, "unhealthy cluster") }
    }
}

extension Error {
    /// The text of a keelctl failure (for per-endpoint lines).
    var message: String { (self as? CtlFailure)?.message ?? "\(self)" }
}

/// Go's time.Duration.String(): "8.129435ms", "1.5s", "2m3.5s", "1h0m0s".
func goDuration(_ d: Duration) -> String {
    let (sec, atto) = d.components
    var ns = sec * 1_000_000_000 + atto / 1_000_000_000
    if ns == 0 { return "0s" }
    let neg = ns < 0
    if neg { ns = -ns }
    func frac(_ v: Int64, _ unit: Int64) -> String {
        let whole = v / unit
        var f = String(v % unit)
        let width = String(unit).count - 1
        f = String(repeating: "0", count: width - f.count) + f
        while f.hasSuffix("0") { f.removeLast() }
        return f.isEmpty ? String(whole) : "\(whole).\(f)"
    }
    var s: String
    if ns < 1_000 { s = "\(ns)ns" } else if ns < 1_000_000 { s = frac(ns, 1_000) + "µs" } else if ns < 1_000_000_000 {
        s = frac(ns, 1_000_000) + "ms"
    } else {
        let h = ns / 3_600_000_000_000
        let m = (ns / 60_000_000_000) % 60
        let rest = ns % 60_000_000_000
        s = frac(rest, 1_000_000_000) + "s"
        if h > 0 { s = "\(h)h\(m)m" + s } else if m > 0 { s = "\(m)m" + s }
    }
    return (neg ? "-" : "") + s
}

// MARK: defrag, snapshot, move-leader, alarm

struct Defrag: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Defragments the storage of the etcd members with given endpoints")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "use all endpoints from the cluster member list") var cluster = false
    @Option(name: .customLong("data-dir"), help: "Not supported by keelctl (offline defragmentation of an etcd data dir)")
    var dataDir: String = ""

    func run() async throws {
        if !dataDir.isEmpty {
            throw CtlFailure(.error, "--data-dir is not supported by keelctl (defragment a running member instead)")
        }
        let c = try global.connect()
        var failures = 0
        for ep in try await targetEndpoints(c, cluster: cluster) {
            do {
                let one = try c.single(ep)
                _ = try await c.unary(Etcdserverpb.Maintenance.defragment, Etcdserverpb.DefragmentRequest(),
                                      idempotent: true, on: one)
                Out.line("Finished defragmenting etcd member[\(ep)]")
            } catch {
                Out.err("Failed to defragment etcd member[\(ep)] (\(error.message))")
                failures += 1
            }
        }
        if failures != 0 { Foundation.exit(ExitCode.error.rawValue) }
    }
}

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Manages etcd node snapshots", subcommands: [SnapshotSave.self])
}

struct SnapshotSave: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "save", abstract: "Stores an etcd node backend snapshot to a given file")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func run() async throws {
        guard args.count == 1 else { throw CtlFailure(.badArgs, "snapshot save expects one argument") }
        let path = args[0]
        let eps = global.endpointList
        guard eps.count == 1 else {
            throw CtlFailure(.interrupted, "snapshot must be requested to one selected node, not multiple [\(eps.joined(separator: " "))]")
        }
        // As etcdctl: into <file>.part (mode 0600), fsync, then renamed; no deadline unless --command-timeout is given.
        let part = path + ".part"
        let fd = open(part, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw CtlFailure(.interrupted, "open \(part): \(String(cString: strerror(errno)))") }
        let grpc = try Connection.grpc(eps[0])
        let explicitTimeout = CommandLine.arguments.contains { $0.hasPrefix("--command-timeout") }
            || ProcessInfo.processInfo.environment["ETCDCTL_COMMAND_TIMEOUT"] != nil
        let options = CallOptions(timeout: explicitTimeout ? try global.commandDuration() : nil)
        do {
            try await grpc.serverStreaming(Etcdserverpb.Maintenance.snapshot, Etcdserverpb.SnapshotRequest(),
                                           options: options) { stream in
                for try await chunk in stream {
                    var off = 0
                    let blob = chunk.blob
                    while off < blob.count {
                        let n = blob.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
                        guard n > 0 else { throw CtlFailure(.interrupted, "write \(part): \(String(cString: strerror(errno)))") }
                        off += n
                    }
                }
            }
        } catch {
            close(fd)
            await grpc.close()
            if let f = error as? CtlFailure { throw f }
            throw CtlFailure(.interrupted, Connection.message(for: error))
        }
        await grpc.close()
        fsync(fd)
        close(fd)
        guard rename(part, path) == 0 else {
            throw CtlFailure(.interrupted, "rename \(part) \(path): \(String(cString: strerror(errno)))")
        }
        Out.line("Snapshot saved at \(path)")
    }
}

struct MoveLeader: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "move-leader", abstract: "Transfers leadership to another etcd cluster member.")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func run() async throws {
        guard args.count == 1 else { throw CtlFailure(.badArgs, "move-leader command needs 1 argument") }
        guard let target = UInt64(args[0], radix: 16) else {
            throw CtlFailure(.badArgs, goParseIntError(args[0]).replacingOccurrences(of: "ParseInt", with: "ParseUint"))
        }
        let c = try global.connect()
        // Find the leader among the given endpoints and ask it.
        var leader: (client: KeelClient, id: UInt64)?
        for ep in c.endpoints {
            let one = try c.single(ep)
            let s = try await c.unary(Etcdserverpb.Maintenance.status, Etcdserverpb.StatusRequest(), idempotent: true, on: one)
            if let h = s.header, h.memberId == s.leader {
                leader = (one, s.leader)
                break
            }
        }
        guard let leader else {
            throw CtlFailure(.badArgs, "no leader endpoint given at [\(c.endpoints.joined(separator: " "))]")
        }
        var r = Etcdserverpb.MoveLeaderRequest()
        r.targetID = target
        let resp = try await c.unary(Etcdserverpb.Maintenance.moveLeader, r, idempotent: false, on: leader.client)
        try KVPrint.emit(c, json: { PB.headerOnly(resp.header) }) {
            Out.line("Leadership transferred from \(idHex(leader.id)) to \(idHex(target))")
        }
    }
}

struct AlarmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alarm", abstract: "Alarm related commands", subcommands: [AlarmDisarm.self, AlarmList.self])

    static func run(disarm: Bool, _ global: GlobalOptions) async throws(CtlFailure) {
        let c = try global.connect()
        var r = Etcdserverpb.AlarmRequest()
        r.action = .get
        var resp = try await c.unary(Etcdserverpb.Maintenance.alarm, r, idempotent: true)
        if disarm {
            // As the Go client's AlarmDisarm with no member and no alarm: list, then disarm each one; the
            // result carries the disarmed alarms only (no header).
            var all = Etcdserverpb.AlarmResponse()
            for a in resp.alarms {
                var d = Etcdserverpb.AlarmRequest()
                d.action = .deactivate
                d.memberID = a.memberID
                d.alarm = a.alarm
                all.alarms += try await c.unary(Etcdserverpb.Maintenance.alarm, d, idempotent: true).alarms
            }
            resp = all
        }
        switch c.format {
        case .simple:
            // Go's %+v of *pb.AlarmMember is its compact text form: "memberID:N alarm:NOSPACE ".
            for a in resp.alarms {
                Out.line("memberID:\(a.memberID) alarm:\(a.alarm.protoName ?? String(a.alarm.rawValue)) ")
            }
        case .json: Out.line(PB.alarm(resp).rendered)
        default: throw KVPrint.unsupported(c.format)
        }
    }
}

struct AlarmList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Lists all alarms")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func run() async throws {
        guard args.isEmpty else { throw CtlFailure(.badArgs, "alarm list command accepts no arguments") }
        try await AlarmCommand.run(disarm: false, global)
    }
}

struct AlarmDisarm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disarm", abstract: "Disarms all alarms")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func run() async throws {
        guard args.isEmpty else { throw CtlFailure(.badArgs, "alarm disarm command accepts no arguments") }
        try await AlarmCommand.run(disarm: true, global)
    }
}
