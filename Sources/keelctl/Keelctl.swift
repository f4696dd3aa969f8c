// keelctl: an etcdctl-v3-compatible CLI on KeelClient. Verbs, flags, output formats (-w simple|json|table),
// error lines ("Error: ..." on stderr) and exit codes follow Debian's etcdctl 3.4; see the README section
// and Tests/KeelctlTests, which compare both tools' output against the same keel and etcd 3.4 servers.
import ArgumentParser
import Foundation
import KeelAPI
import KeelClient
import GRPC

@main
struct Keelctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keelctl", abstract: "A simple command line client for etcd v3 API servers (Keel or etcd).",
        subcommands: [Get.self, Put.self, Del.self, Txn.self, Compaction.self, AlarmCommand.self, Defrag.self,
                      EndpointCommand.self, MoveLeader.self, Watch.self, LeaseCommand.self, MemberCommand.self,
                      SnapshotCommand.self, Lock.self, Elect.self])

    /// Verbs with sub-verbs: the global flags go after both words.
    static let groups: Set<String> = ["lease", "member", "endpoint", "snapshot", "alarm"]

    static func main() async {
        let args = arrangeGlobalFlags(Array(CommandLine.arguments.dropFirst()),
                                      environment: ProcessInfo.processInfo.environment)
        do {
            var command = try parseAsRoot(args)
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch let f as CtlFailure {
            f.exit()
        } catch {
            exit(withError: error)
        }
        // Flush anything Foundation buffered and leave (background tasks such as keep-alives end with us).
        Foundation.exit(0)
    }

    /// etcdctl takes its global flags anywhere (cobra persistent flags): `etcdctl --endpoints X get k`,
    /// `etcdctl get k -w json`. swift-argument-parser wants a leaf's options after the verb, so the global
    /// ones found before `--` are moved right after the verb (and sub-verb); ETCDCTL_* variables supply
    /// the ones not given (as etcdctl's pflags-from-env).
    static func arrangeGlobalFlags(_ input: [String], environment: [String: String]) -> [String] {
        let valued = ["--endpoints", "--dial-timeout", "--command-timeout", "--write-out", "-w",
                      "--keepalive-time", "--keepalive-timeout"]
        let boolean = ["--hex", "--debug", "--insecure-transport", "--insecure-skip-tls-verify", "--insecure-discovery"]
        var globals: [String] = []
        var rest: [String] = []
        var i = 0
        var seen: Set<String> = []
        while i < input.count {
            let a = input[i]
            if a == "--" {
                rest.append(contentsOf: input[i...])
                break
            }
            let name = a.split(separator: "=", maxSplits: 1).first.map(String.init) ?? a
            if valued.contains(name) {
                seen.insert(name == "-w" ? "--write-out" : name)
                if a.contains("=") {
                    globals.append(a)
                } else if i + 1 < input.count {
                    globals.append(a)
                    globals.append(input[i + 1])
                    i += 1
                } else {
                    globals.append(a)
                }
            } else if boolean.contains(name) {
                globals.append(a)
            } else if a.hasPrefix("-w"), a.count > 2, !a.hasPrefix("--") {
                globals.append(contentsOf: ["-w", String(a.dropFirst(2))])   // -wjson
                seen.insert("--write-out")
            } else {
                rest.append(a)
            }
            i += 1
        }
        for (flag, env) in [("--endpoints", "ETCDCTL_ENDPOINTS"), ("--dial-timeout", "ETCDCTL_DIAL_TIMEOUT"),
                            ("--command-timeout", "ETCDCTL_COMMAND_TIMEOUT"), ("--write-out", "ETCDCTL_WRITE_OUT")]
        where !seen.contains(flag) {
            if let v = environment[env], !v.isEmpty { globals.append("\(flag)=\(v)") }
        }
        guard let verb = rest.first, !verb.hasPrefix("-") else { return rest + globals }
        var at = 1
        if groups.contains(verb), rest.count > 1, !rest[1].hasPrefix("-") { at = 2 }
        if globals.isEmpty { return rest }
        return Array(rest[..<at]) + globals + Array(rest[at...])
    }
}

// MARK: global flags

struct GlobalOptions: ParsableArguments {
    @Option(help: "gRPC endpoints") var endpoints: String = "127.0.0.1:2379"
    @Option(name: .customLong("dial-timeout"), help: "dial timeout for client connections") var dialTimeout: String = "2s"
    @Option(name: .customLong("command-timeout"), help: "timeout for short running command (excluding dial timeout)")
    var commandTimeout: String = "5s"
    @Option(name: [.customShort("w"), .customLong("write-out")],
            help: "set the output format (json, simple, table)") var writeOut: String = "simple"
    @Flag(help: "print byte strings as hex encoded strings") var hex = false
    @Flag(help: "enable client-side debug logging (accepted, no effect)") var debug = false
    @Option(name: .customLong("keepalive-time"), help: .hidden) var keepaliveTime: String?
    @Option(name: .customLong("keepalive-timeout"), help: .hidden) var keepaliveTimeout: String?
    @Flag(name: .customLong("insecure-transport"), help: .hidden) var insecureTransport = false
    @Flag(name: .customLong("insecure-skip-tls-verify"), help: .hidden) var insecureSkipTLSVerify = false
    @Flag(name: .customLong("insecure-discovery"), help: .hidden) var insecureDiscovery = false

    /// The endpoints as etcdctl splits them (comma separated, trimmed).
    var endpointList: [String] {
        endpoints.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// The output format; unknown ones fail as etcdctl ("unsupported output format", exit 4).
    func format() throws(CtlFailure) -> OutputFormat {
        guard let f = OutputFormat(rawValue: writeOut) else {
            throw CtlFailure(.badFeature, "unsupported output format")
        }
        return f
    }

    func commandDuration() throws(CtlFailure) -> Duration { try parseGoDuration(commandTimeout) }
    func dialDuration() throws(CtlFailure) -> Duration { try parseGoDuration(dialTimeout) }

    /// A client over every endpoint (KeelClient's round-robin balancer), calls bounded by --command-timeout.
    func connect() throws(CtlFailure) -> Connection {
        let eps = endpointList
        return try Connection(endpoints: eps, commandTimeout: commandDuration(), dialTimeout: dialDuration(),
                              format: format(), hex: hex)
    }
}

/// Go's time.ParseDuration for what etcdctl users write: "5s", "500ms", "1m30s", "1.5h", "0".
func parseGoDuration(_ s: String) throws(CtlFailure) -> Duration {
    if s == "0" { return .zero }
    let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
    var rest = Substring(s)
    var total = 0.0
    var negative = false
    if rest.hasPrefix("-") { negative = true; rest = rest.dropFirst() } else if rest.hasPrefix("+") { rest = rest.dropFirst() }
    guard !rest.isEmpty else { throw CtlFailure(.error, "time: invalid duration \"\(s)\"") }
    while !rest.isEmpty {
        let num = rest.prefix { $0.isNumber || $0 == "." }
        guard !num.isEmpty, let v = Double(num) else { throw CtlFailure(.error, "time: invalid duration \"\(s)\"") }
        rest = rest.dropFirst(num.count)
        guard let (u, m) = units.first(where: { rest.hasPrefix($0.0) && !(($0.0 == "m") && rest.hasPrefix("ms")) }) else {
            throw CtlFailure(.error, rest.isEmpty ? "time: missing unit in duration \"\(s)\"" : "time: unknown unit in duration \"\(s)\"")
        }
        rest = rest.dropFirst(u.count)
        total += v * m
    }
    let ns = Int64((negative ? -total : total) * 1e9)
    return .nanoseconds(ns)
}

// MARK: errors and exit codes

/// etcdctl's exit codes (etcdctl/ctlv3/command/error.go).
enum ExitCode: Int32 {
    case success = 0, error = 1, badConnection = 2, invalidInput = 3, badFeature = 4, interrupted = 5, io = 6
    case badArgs = 128
}

/// A failure that ends keelctl as etcdctl would: "Error: <message>" on stderr and the exit code.
struct CtlFailure: Error, Sendable {
    var code: ExitCode
    var message: String
    init(_ code: ExitCode, _ message: String) {
        self.code = code
        self.message = message
    }

    func exit() -> Never {
        Out.err("Error: \(message)")
        Foundation.exit(code.rawValue)
    }

    /// The text etcdctl prints for a client error: etcd's own message for the errors the Go client knows
    /// ("etcdserver: ..."), "context deadline exceeded" for a deadline, gRPC's generic form otherwise.
    static func message(for error: KeelClientError) -> String {
        // if-case rather than a switch: KeelClientError will grow cases (watch, lease, concurrency).
        if case .server(let code, let message) = error {
            if code == .deadlineExceeded && (message.isEmpty || message.contains("deadline")) { return "context deadline exceeded" }
            if code == .cancelled { return "context canceled" }
            if message.hasPrefix("etcdserver: ") || message.hasPrefix("mvcc: ") { return message }
            return "rpc error: code = \(goCodeName(code)) desc = \(message)"
        }
        if case .unknownOutcome(_, let reason) = error {
            return reason.hasPrefix("etcdserver: ") ? reason : "rpc error: code = Unavailable desc = \(reason)"
        }
        if case .unavailable = error { return "context deadline exceeded" }
        if case .badEndpoint(let e) = error { return e.isEmpty ? "no available endpoints" : "bad endpoint \(e)" }
        return "\(error)"
    }

    static func goCodeName(_ c: GRPCStatusCode) -> String {
        let names = ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
                     "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
                     "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"]
        return c.rawValue >= 0 && c.rawValue < names.count ? names[c.rawValue] : "Code(\(c.rawValue))"
    }
}
