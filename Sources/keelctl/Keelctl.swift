// keelctl: etcdctl-v3-style CLI on KeelClient. Landed so far: put, get, del with etcdctl's simple
// output format and its --endpoints / --command-timeout flags (see the README section).
import ArgumentParser
import Foundation
import KeelAPI
import KeelClient

struct GlobalOptions: ParsableArguments {
    @Option(help: "gRPC endpoints") var endpoints: String = "127.0.0.1:2379"
    @Option(name: .customLong("dial-timeout"), help: "dial timeout for client connections") var dialTimeout: String = "2s"
    @Option(name: .customLong("command-timeout"), help: "timeout for short running command") var commandTimeout: String = "5s"

    func client() throws -> KeelClient {
        try KeelClient(endpoints: endpoints.split(separator: ",").map(String.init), timeout: parseDuration(commandTimeout))
    }
}

/// Go-style durations as etcdctl takes them: "5s", "500ms", "1m".
func parseDuration(_ s: String) -> Duration {
    let units: [(String, Double)] = [("ms", 0.001), ("us", 0.000001), ("s", 1), ("m", 60), ("h", 3600)]
    for (u, m) in units where s.hasSuffix(u) {
        if let v = Double(s.dropLast(u.count)) { return .milliseconds(Int64(v * m * 1000)) }
    }
    return .seconds(5)
}

/// etcdctl prints "Error: <message>" on stderr and exits 1.
func fail(_ error: any Error) -> Never {
    let msg: String
    if case .server(_, let m)? = error as? KeelClientError { msg = m } else { msg = "\(error)" }
    FileHandle.standardError.write(Data("Error: \(msg)\n".utf8))
    exit(1)
}

func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

@main
struct Keelctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keelctl", abstract: "A simple command line client for etcd v3 API servers (Keel or etcd).",
        subcommands: [Put.self, Get.self, Del.self])

    /// etcdctl takes its global flags before the verb too (`etcdctl --endpoints X get k`): move them after it.
    static func main() async {
        var args = Array(CommandLine.arguments.dropFirst())
        var moved: [String] = []
        let globals = ["--endpoints", "--dial-timeout", "--command-timeout"]
        while let first = args.first, first.hasPrefix("--") {
            if globals.contains(where: { first.hasPrefix($0 + "=") }) {
                moved.append(args.removeFirst())
            } else if globals.contains(first), args.count >= 2 {
                moved.append(args.removeFirst())
                moved.append(args.removeFirst())
            } else {
                break
            }
        }
        if !args.isEmpty { args.insert(contentsOf: moved, at: 1) }
        do {
            var command = try parseAsRoot(args)
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Puts the given key into the store")
    @OptionGroup var global: GlobalOptions
    @Flag(name: .customLong("prev-kv")) var prevKV = false
    @Option var lease: String = "0"
    @Argument var key: String
    @Argument var value: String

    func run() async throws {
        let c = try global.client()
        do {
            let r = try await c.put(key, value, lease: Int64(lease, radix: 16) ?? 0, prevKV: prevKV)
            print("OK")
            if prevKV, let kv = r.prevKv { print(text(kv.key)); print(text(kv.value)) }
        } catch { fail(error) }
        await c.close()
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Gets the key or a range of keys")
    @OptionGroup var global: GlobalOptions
    @Flag var prefix = false
    @Flag(name: .customLong("from-key")) var fromKey = false
    @Option var limit: Int64 = 0
    @Option var rev: Int64 = 0
    @Flag(name: .customLong("keys-only")) var keysOnly = false
    @Flag(name: .customLong("print-value-only")) var printValueOnly = false
    @Argument var key: String
    @Argument var rangeEnd: String?

    func run() async throws {
        let c = try global.client()
        var r = Etcdserverpb.RangeRequest()
        r.key = Array(key.utf8)
        if let rangeEnd { r.rangeEnd = Array(rangeEnd.utf8) }
        if prefix { r.rangeEnd = KeelClient.prefixEnd(r.key) }
        if fromKey { r.rangeEnd = [0] }
        r.limit = limit
        r.revision = rev
        r.keysOnly = keysOnly
        do {
            let resp = try await c.range(r)
            for kv in resp.kvs {
                if !printValueOnly { print(text(kv.key)) }
                print(text(kv.value))   // empty with --keys-only: etcdctl prints the blank line too
            }
        } catch { fail(error) }
        await c.close()
    }
}

struct Del: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Removes the specified key or range of keys")
    @OptionGroup var global: GlobalOptions
    @Flag var prefix = false
    @Flag(name: .customLong("prev-kv")) var prevKV = false
    @Flag(name: .customLong("from-key")) var fromKey = false
    @Argument var key: String
    @Argument var rangeEnd: String?

    func run() async throws {
        let c = try global.client()
        do {
            var r = Etcdserverpb.DeleteRangeRequest()
            r.key = Array(key.utf8)
            if let rangeEnd { r.rangeEnd = Array(rangeEnd.utf8) }
            if prefix { r.rangeEnd = KeelClient.prefixEnd(r.key) }
            if fromKey { r.rangeEnd = [0] }
            r.prevKv = prevKV
            let resp = try await c.deleteRange(r)
            print(resp.deleted)
            if prevKV { for kv in resp.prevKvs { print(text(kv.key)); print(text(kv.value)) } }
        } catch { fail(error) }
        await c.close()
    }
}
