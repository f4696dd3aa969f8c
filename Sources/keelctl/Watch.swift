// watch [--prefix] [--rev] [--prev-kv] <key> [range_end] [-- cmd args...], and watch -i (interactive:
// "watch ..." and "progress" lines on stdin), as etcdctl/ctlv3/command/watch_command.go.
import ArgumentParser
import Foundation
import GRPC
import KeelAPI
import KeelClient
import Synchronization

struct WatchFlags: ParsableArguments {
    @Flag(help: "Watch on a prefix if prefix is set") var prefix = false
    @Option(help: "Revision to start watching") var rev: Int64 = 0
    @Flag(name: .customLong("prev-kv"), help: "get the previous key-value pair before the event happens") var prevKV = false
    @Argument var args: [String] = []

    /// The create request for `[key, range_end]` with these flags (clientv3.Watch's options).
    func create(_ watchArgs: [String]) throws(CtlFailure) -> Etcdserverpb.WatchCreateRequest {
        guard !watchArgs.isEmpty, watchArgs.count <= 2 else { throw CtlFailure(.badArgs, "bad number of arguments") }
        var r = Etcdserverpb.WatchCreateRequest()
        r.key = Array(watchArgs[0].utf8)
        if watchArgs.count == 2 {
            if prefix { throw CtlFailure(.badArgs, "`range_end` and `--prefix` are mutually exclusive") }
            r.rangeEnd = Array(watchArgs[1].utf8)
        }
        if prefix {
            if r.key.isEmpty {
                r.key = [0]
                r.rangeEnd = [0]
            } else {
                r.rangeEnd = KeelClient.prefixEnd(r.key)
            }
        }
        r.startRevision = rev
        r.prevKv = prevKV
        return r
    }
}

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watches events stream on keys or prefixes",
        discussion: "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]; -i reads "
            + "'watch [options] <key> [range_end]' and 'progress' lines from stdin.")
    @OptionGroup var global: GlobalOptions
    @Flag(name: .shortAndLong, help: "Interactive mode") var interactive = false
    @OptionGroup var flags: WatchFlags

    func run() async throws {
        let c = try global.connect()
        if c.format == .table || c.format == .protobuf { throw KVPrint.unsupported(c.format) }
        if interactive {
            try await WatchSession(connection: c).interactive()
            return
        }
        // etcdctl reads the exec command from os.Args after "--".
        let raw = Array(CommandLine.arguments.drop { $0 != "watch" }.dropFirst())
        var execArgs: [String] = []
        var watchArgs = flags.args
        if let sep = raw.firstIndex(of: "--") {
            execArgs = Array(raw[(sep + 1)...])
            if execArgs.isEmpty { throw CtlFailure(.badArgs, "bad number of arguments (found separator --, but no commands)") }
            watchArgs = Array(watchArgs.dropLast(execArgs.count))
        }
        let req = try flags.create(watchArgs)
        let session = WatchSession(connection: c)
        try await session.single(req, exec: execArgs)
        throw CtlFailure(.interrupted, "watch is canceled by the server")
    }
}

/// Prints watch responses as etcdctl's printWatchCh + display.Watch.
struct WatchPrinter: Sendable {
    let format: OutputFormat
    let hex: Bool

    func print(_ resp: Etcdserverpb.WatchResponse) {
        if resp.canceled {
            let reason = resp.compactRevision != 0 ? "etcdserver: mvcc: required revision has been compacted" : resp.cancelReason
            Out.err("watch was canceled (\(reason))")
        }
        if resp.events.isEmpty && !resp.canceled && !resp.created && resp.compactRevision == 0
            && (resp.header?.revision ?? 0) != 0 {
            Out.line("progress notify: \(resp.header?.revision ?? 0)")
        }
        switch format {
        case .fields: for l in Fields.watch(resp) { Out.line(l) }
        case .json:
            var h = JSONObject()
            PB.headerFields(resp.header, into: &h)
            let o: JSON = .object([
                ("Header", h.json),
                ("Events", .array(resp.events.map(PB.event))),   // the Go client always makes the slice: [] when empty
                ("CompactRevision", .int(resp.compactRevision)),
                ("Canceled", .bool(resp.canceled)),
                ("Created", .bool(resp.created)),
            ])
            Out.line(o.rendered)
        default:
            for e in resp.events {
                Out.line(e.type == .delete ? "DELETE" : e.type == .put ? "PUT" : "\(e.type.rawValue)")
                if let p = e.prevKv { printKV(p, hex: hex, valueOnly: false) }
                printKV(e.kv ?? Mvccpb.KeyValue(), hex: hex, valueOnly: false)
            }
        }
    }
}

/// One watch stream (Watch.Watch, bidirectional) on the first endpoint that answers.
struct WatchSession: Sendable {
    let connection: Connection
    var printer: WatchPrinter { WatchPrinter(format: connection.format, hex: connection.hex) }
    /// clientv3.WithRequireLeader: the server cancels the watch when it has no leader.
    static let options = CallOptions(metadata: [("hasleader", "true")])

    /// A watch until the server cancels it. If the stream breaks, it is opened again (next endpoint) from
    /// the revision after the last one delivered, as the Go client resumes: no gap, no duplicate.
    func single(_ create: Etcdserverpb.WatchCreateRequest, exec: [String]) async throws(CtlFailure) {
        var req = create
        var attempt = 0
        while true {
            let ep = connection.endpoints[attempt % connection.endpoints.count]
            attempt += 1
            let grpc = try Connection.grpc(ep)
            let lastRevision = Mutex<Int64>(0)
            do {
                let canceled: Bool = try await grpc.bidirectionalStreaming(Etcdserverpb.Watch.watch, options: Self.options) {
                    writer, responses in
                    var w = Etcdserverpb.WatchRequest()
                    w.requestUnion = .createRequest(req)
                    try await writer.send(w)
                    for try await resp in responses {
                        // What this stream has delivered completely: up to the last event's revision; at
                        // creation from "now", the header's revision; a progress notification's revision.
                        let rev = resp.events.last?.kv?.modRevision
                            ?? (resp.created && req.startRevision == 0 || !resp.created && !resp.canceled
                                ? resp.header?.revision : nil)
                        if let rev { lastRevision.withLock { $0 = max($0, rev) } }
                        if resp.created && resp.events.isEmpty && !resp.canceled { continue }
                        printer.print(resp)
                        if !exec.isEmpty { try runExec(exec, resp) }
                        if resp.canceled { return true }
                    }
                    return false
                }
                await grpc.close()
                if canceled { return }
            } catch let f as CtlFailure {
                await grpc.close()
                throw f
            } catch {
                await grpc.close()
            }
            let seen = lastRevision.withLock { $0 }
            if seen > 0 { req.startRevision = seen + 1 }
            try? await Task.sleep(for: .milliseconds(attempt < 10 ? 100 : 1000))
        }
    }

    /// etcdctl's exec mode: the command runs once per event with ETCD_WATCH_* in its environment.
    func runExec(_ args: [String], _ resp: Etcdserverpb.WatchResponse) throws(CtlFailure) {
        for ev in resp.events {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = args
            var env = ProcessInfo.processInfo.environment
            env["ETCD_WATCH_REVISION"] = String(resp.header?.revision ?? 0)
            env["ETCD_WATCH_EVENT_TYPE"] = goQuote(ev.type == .delete ? "DELETE" : "PUT")
            env["ETCD_WATCH_KEY"] = goQuote(text(ev.kv?.key ?? []))
            env["ETCD_WATCH_VALUE"] = goQuote(text(ev.kv?.value ?? []))
            p.environment = env
            do {
                try p.run()
                p.waitUntilExit()
            } catch {
                Out.err("command [\(args.map(goQuote).joined(separator: " "))] error (\(error))")
                Foundation.exit(1)
            }
            if p.terminationStatus != 0 {
                Out.err("command [\(args.map(goQuote).joined(separator: " "))] error (exit status \(p.terminationStatus))")
                Foundation.exit(1)
            }
        }
    }

    /// `watch -i`: lines from stdin add watches to one stream ("watch [flags] key [end]") or ask for
    /// progress ("progress"); EOF ends keelctl as etcdctl ("Error reading watch request line: EOF", exit 3).
    func interactive() async throws(CtlFailure) {
        let grpc = try Connection.grpc(connection.endpoints[0])
        let lines = AsyncStream<String?>(bufferingPolicy: .unbounded) { cont in
            let t = Thread {
                while let l = readLine(strippingNewline: true) { cont.yield(l) }
                cont.yield(nil)
                cont.finish()
            }
            t.start()
        }
        let watchers = WatcherCount()
        let printer = self.printer
        do {
            try await grpc.bidirectionalStreaming(Etcdserverpb.Watch.watch, options: Self.options) { writer, responses in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await resp in responses {
                            if resp.created && resp.events.isEmpty && !resp.canceled { continue }
                            // A progress answer (watch id -1) goes to every watcher, as the Go client broadcasts it.
                            let copies = resp.watchId == -1 ? watchers.value.load(ordering: .relaxed) : 1
                            for _ in 0..<copies { printer.print(resp) }
                        }
                    }
                    for await line in lines {
                        guard let line else {
                            throw CtlFailure(.invalidInput, "Error reading watch request line: EOF")
                        }
                        let args = argify(line)
                        guard let first = args.first else {
                            Out.err("Invalid command: \(line) (watch and progress supported)")
                            continue
                        }
                        switch first {
                        case "watch":
                            guard args.count >= 2 else {
                                Out.err("Invalid command \(line) (command type or key is not provided)")
                                continue
                            }
                            let create: Etcdserverpb.WatchCreateRequest
                            do {
                                create = try WatchFlags.parse(Array(args.dropFirst())).create(WatchFlags.parse(Array(args.dropFirst())).args)
                            } catch let f as CtlFailure {
                                Out.err("Invalid command \(line) (\(f.message))")
                                continue
                            } catch {
                                throw CtlFailure(.badArgs, "\(error)")
                            }
                            var w = Etcdserverpb.WatchRequest()
                            w.requestUnion = .createRequest(create)
                            watchers.value.add(1, ordering: .relaxed)
                            try await writer.send(w)
                        case "progress":
                            var w = Etcdserverpb.WatchRequest()
                            w.requestUnion = .progressRequest(Etcdserverpb.WatchProgressRequest())
                            try await writer.send(w)
                        default:
                            Out.err("Invalid command \(line) (only support watch)")
                        }
                    }
                }
            }
        } catch let f as CtlFailure {
            throw f
        } catch {
            throw CtlFailure(.error, Connection.message(for: error))
        }
        throw CtlFailure(.interrupted, "watch is canceled by the server")
    }
}

/// How many watches an interactive session created (a progress answer is printed once per watch).
final class WatcherCount: Sendable {
    let value = Atomic<Int>(0)
}
