// lease grant|revoke|timetolive|list|keep-alive (etcdctl/ctlv3/command/lease_command.go). JSON output as
// the Go client's structs marshal: lease responses embed the header's fields at the top level.
import ArgumentParser
import Foundation
import GRPC
import KeelAPI
import KeelClient

struct LeaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease", abstract: "Lease related commands",
        subcommands: [LeaseGrant.self, LeaseRevoke.self, LeaseTimeToLive.self, LeaseList.self, LeaseKeepAlive.self])
}

/// etcdctl's leaseFromArgs: a hex ID.
func leaseArgument(_ s: String) throws(CtlFailure) -> Int64 {
    guard let id = parseLeaseHex(s) else {
        throw CtlFailure(.badArgs, "bad lease ID arg (\(goParseIntError(s))), expecting ID in Hex")
    }
    return id
}

struct LeaseGrant: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "grant", abstract: "Creates leases")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func run() async throws {
        guard args.count == 1 else { throw CtlFailure(.badArgs, "lease grant command needs TTL argument") }
        guard let ttl = Int64(args[0]) else { throw CtlFailure(.badArgs, "bad TTL (\(goParseIntError(args[0])))") }
        let c = try global.connect()
        var r = Etcdserverpb.LeaseGrantRequest()
        r.ttl = ttl
        let resp = try await c.unary(Etcdserverpb.Lease.leaseGrant, r, idempotent: false) { "failed to grant lease (\($0))" }
        switch c.format {
        case .simple: Out.line("lease \(leaseHex(resp.id)) granted with TTL(\(resp.ttl)s)")
        case .json:
            var o = JSONObject()
            PB.headerFields(resp.header, into: &o)
            o.int("ID", resp.id, omitEmpty: false)
            o.int("TTL", resp.ttl, omitEmpty: false)
            o.string("Error", resp.error, omitEmpty: false)
            Out.line(o.json.rendered)
        default: throw KVPrint.unsupported(c.format)
        }
    }
}

struct LeaseRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revokes leases")
    @OptionGroup var global: GlobalOptions
    @Argument var args: [String] = []

    func run() async throws {
        guard args.count == 1 else { throw CtlFailure(.badArgs, "lease revoke command needs 1 argument") }
        let id = try leaseArgument(args[0])
        let c = try global.connect()
        var r = Etcdserverpb.LeaseRevokeRequest()
        r.id = id
        let resp = try await c.unary(Etcdserverpb.Lease.leaseRevoke, r, idempotent: false) { "failed to revoke lease (\($0))" }
        try KVPrint.emit(c, json: { PB.headerOnly(resp.header) }) { Out.line("lease \(leaseHex(id)) revoked") }
    }
}

struct LeaseTimeToLive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "timetolive", abstract: "Get lease information")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Get keys attached to this lease") var keys = false
    @Argument var args: [String] = []

    func run() async throws {
        guard args.count == 1 else { throw CtlFailure(.badArgs, "lease timetolive command needs lease ID as argument") }
        let id = try leaseArgument(args[0])
        let c = try global.connect()
        var r = Etcdserverpb.LeaseTimeToLiveRequest()
        r.id = id
        r.keys = keys
        let resp = try await c.unary(Etcdserverpb.Lease.leaseTimeToLive, r, idempotent: true, code: .badConnection)
        switch c.format {
        case .simple:
            if resp.grantedTTL == 0 && resp.ttl == -1 {
                Out.line("lease \(leaseHex(resp.id)) already expired")
                return
            }
            var txt = "lease \(leaseHex(resp.id)) granted with TTL(\(resp.grantedTTL)s), remaining(\(resp.ttl)s)"
            if keys { txt += ", attached keys([\(resp.keys.map(text).joined(separator: " "))])" }
            Out.line(txt)
        case .json:
            var o = JSONObject()
            PB.headerFields(resp.header, into: &o)
            o.int("id", resp.id, omitEmpty: false)
            o.int("ttl", resp.ttl, omitEmpty: false)
            o.int("granted-ttl", resp.grantedTTL, omitEmpty: false)
            o.add("keys", resp.keys.isEmpty ? .null : .array(resp.keys.map(JSON.bytes)))
            Out.line(o.json.rendered)
        default: throw KVPrint.unsupported(c.format)
        }
    }
}

struct LeaseList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List all active leases")
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let c = try global.connect()
        let resp = try await c.unary(Etcdserverpb.Lease.leaseLeases, Etcdserverpb.LeaseLeasesRequest(), idempotent: true,
                                     code: .badConnection)
        switch c.format {
        case .simple:
            Out.line("found \(resp.leases.count) leases")
            for l in resp.leases { Out.line(leaseHex(l.id)) }
        case .json:
            var o = JSONObject()
            PB.headerFields(resp.header, into: &o)
            o.add("leases", .array(resp.leases.map { .object([("id", .int($0.id))]) }))
            Out.line(o.json.rendered)
        default: throw KVPrint.unsupported(c.format)
        }
    }
}

struct LeaseKeepAlive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keep-alive", abstract: "Keeps leases alive (renew)")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Resets the keep-alive time to its original value and exits immediately") var once = false
    @Argument var args: [String] = []

    func run() async throws {
        guard args.count == 1 else { throw CtlFailure(.badArgs, "lease keep-alive command needs lease ID as argument") }
        let id = try leaseArgument(args[0])
        let c = try global.connect()
        let format = c.format
        if format != .simple && format != .json { throw KVPrint.unsupported(format) }
        var r = Etcdserverpb.LeaseKeepAliveRequest()
        r.id = id
        // Like the Go client: one stream, a renewal right away, the next one TTL/3 after each answer; a
        // response with TTL <= 0 means the lease is gone. Endpoints are tried in order for the stream.
        var lastError: any Error = CtlFailure(.badConnection, "context deadline exceeded")
        for ep in c.endpoints {
            let grpc = try Connection.grpc(ep)
            do {
                let alive: Bool = try await grpc.bidirectionalStreaming(Etcdserverpb.Lease.leaseKeepAlive) { writer, responses in
                    try await writer.send(r)
                    for try await resp in responses {
                        if resp.ttl <= 0 { return false }
                        Self.print(resp, format)
                        if once { return true }
                        let wait = max(Int64(1), resp.ttl / 3)
                        try await Task.sleep(for: .seconds(wait))
                        try await writer.send(r)
                    }
                    return false
                }
                await grpc.close()
                if once && !alive { throw CtlFailure(.badConnection, "etcdserver: requested lease not found") }
                if !alive && format == .simple { Out.line("lease \(leaseHex(id)) expired or revoked.") }
                return
            } catch let f as CtlFailure {
                throw f
            } catch {
                lastError = error
                await grpc.close()
            }
        }
        throw CtlFailure(.badConnection, Connection.message(for: lastError))
    }

    static func print(_ resp: Etcdserverpb.LeaseKeepAliveResponse, _ format: OutputFormat) {
        if format == .json {
            var o = JSONObject()
            PB.headerFields(resp.header, into: &o)
            o.int("ID", resp.id, omitEmpty: false)
            o.int("TTL", resp.ttl, omitEmpty: false)
            Out.line(o.json.rendered)
        } else {
            Out.line("lease \(leaseHex(resp.id)) keepalived with TTL(\(resp.ttl))")
        }
    }
}
