// lock <name> [cmd...] and elect <name> [proposal] | -l (etcdctl/ctlv3/command/{lock,elect}_command.go)
// on KeelClient's Concurrency.Session / Mutex / Election (etcd's clientv3/concurrency recipes).
import ArgumentParser
import Foundation
import KeelAPI
import KeelClient
import Synchronization

/// SIGINT / SIGTERM as an async event (etcdctl unlocks or resigns on them, then exits 0). A handler
/// writes the signal to a pipe (the only async-signal-safe thing it does); a thread reads it and wakes
/// every waiter, now and later.
let signalPipe: (read: Int32, write: Int32) = {
    var fds: [Int32] = [-1, -1]
    _ = pipe(&fds)
    return (fds[0], fds[1])
}()

final class SignalLatch: Sendable {
    static let shared = SignalLatch()
    private let state = Mutex<(fired: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    private init() {
        _ = signalPipe   // created before any handler can run
        for sig in [SIGINT, SIGTERM] {
            signal(sig) { sig in
                var b = UInt8(truncatingIfNeeded: sig)
                _ = write(signalPipe.write, &b, 1)
            }
        }
        let t = Thread { [self] in
            var b: UInt8 = 0
            while read(signalPipe.read, &b, 1) < 0 && errno == EINTR {}
            let waiters = state.withLock { st in
                st.fired = true
                defer { st.waiters = [] }
                return st.waiters
            }
            for w in waiters { w.resume() }
        }
        t.start()
    }

    /// Returns once SIGINT or SIGTERM arrived (at once if one already did).
    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { st in
                if st.fired { return true }
                st.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

/// What ends a held lock or leadership: a signal, or the session's lease.
enum HoldEnd: Sendable { case signal, sessionEnded }

func hold(_ session: Concurrency.Session) async -> HoldEnd {
    // Unstructured tasks: neither wait ends on cancellation, and the process exits right after.
    let (first, cont) = AsyncStream<HoldEnd>.makeStream()
    Task {
        await SignalLatch.shared.wait()
        cont.yield(.signal)
    }
    Task {
        _ = await session.done()
        cont.yield(.sessionEnded)
    }
    for await end in first { return end }
    return .signal
}

extension ConcurrencyError {
    /// etcdctl's text for the recipe errors.
    var ctlMessage: String {
        if case .client(let e) = self { return CtlFailure.message(for: e) }
        return description
    }
}

extension Error {
    var recipeMessage: String { (self as? ConcurrencyError)?.ctlMessage ?? "\(self)" }
}

struct Lock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Acquires a named lock")
    @OptionGroup var global: GlobalOptions
    @Option(help: "timeout for session") var ttl: Int = 10
    /// The name, then the command (options of the command after "--", as etcdctl).
    @Argument var args: [String] = []

    func run() async throws {
        guard let name = args.first else {
            throw CtlFailure(.badArgs, "lock takes a lock name argument and an optional command to execute")
        }
        let command = Array(args.dropFirst())
        let c = try global.connect()
        let latch = SignalLatch.shared
        let session: Concurrency.Session
        do { session = try await Concurrency.Session(client: c.client, ttl: Int64(ttl)) } catch {
            throw CtlFailure(.error, error.ctlMessage)
        }
        let mutex = Concurrency.Mutex(session: session, prefix: name)
        // A signal while waiting cancels the wait (etcdctl: "context canceled", exit 1).
        let waiter = Task { try await mutex.lock() }
        let watcher = Task {
            await latch.wait()
            waiter.cancel()
        }
        do { try await waiter.value } catch { throw CtlFailure(.error, error.recipeMessage) }
        watcher.cancel()
        let key = await mutex.key
        if !command.isEmpty {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = command
            var env = ProcessInfo.processInfo.environment
            env["ETCD_LOCK_KEY"] = text(key)
            env["ETCD_LOCK_REV"] = String(await mutex.header?.revision ?? 0)
            p.environment = env
            var failure: CtlFailure?
            do {
                try p.run()
                p.waitUntilExit()
                if p.terminationStatus != 0 { failure = CtlFailure(.error, "exit status \(p.terminationStatus)") }
            } catch {
                failure = CtlFailure(.error, "exec: \(goQuote(command[0])): \(error)")
            }
            do { try await mutex.unlock() } catch { failure = failure ?? CtlFailure(.error, error.ctlMessage) }
            if let failure { throw failure }
            return
        }
        var r = Etcdserverpb.RangeRequest()
        r.key = key
        let resp = try await c.unary(Etcdserverpb.KV.range, r, idempotent: true)
        if resp.kvs.isEmpty { throw CtlFailure(.error, "lock lost on init") }
        try KVPrint.get(resp, c)
        switch await hold(session) {
        case .signal:
            do { try await mutex.unlock() } catch { throw CtlFailure(.error, error.ctlMessage) }
        case .sessionEnded:
            throw CtlFailure(.error, "session expired")
        }
    }
}

struct Elect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Observes and participates in leader election")
    @OptionGroup var global: GlobalOptions
    @Flag(name: .shortAndLong, help: "observation mode") var listen = false
    @Argument var args: [String] = []

    func run() async throws {
        guard args.count == 1 || args.count == 2 else {
            throw CtlFailure(.badArgs, "elect takes one election name argument and an optional proposal argument")
        }
        if args.count == 1 && !listen { throw CtlFailure(.badArgs, "no proposal argument but -l not set") }
        if args.count == 2 && listen { throw CtlFailure(.badArgs, "proposal given but -l is set") }
        let c = try global.connect()
        let latch = SignalLatch.shared
        let session: Concurrency.Session
        do { session = try await Concurrency.Session(client: c.client) } catch { throw CtlFailure(.error, error.ctlMessage) }
        let election = Concurrency.Election(session: session, prefix: args[0])
        if listen {
            // Every leader (and proclaimed value) as a get prints it, until a signal.
            let observer = Task { () throws -> Void in
                for try await kv in election.observe() {
                    var resp = Etcdserverpb.RangeResponse()
                    resp.kvs = [kv]
                    resp.count = 1
                    try KVPrint.get(resp, c)
                }
            }
            let stopper = Task {
                await latch.wait()
                observer.cancel()
            }
            let result = await observer.result
            stopper.cancel()
            if case .failure = result, !observer.isCancelled { throw CtlFailure(.error, "elect: observer lost") }
            return
        }
        let campaign = Task { try await election.campaign(args[1]) }
        let watcher = Task {
            await latch.wait()
            campaign.cancel()
        }
        do { try await campaign.value } catch { throw CtlFailure(.error, error.recipeMessage) }
        watcher.cancel()
        var r = Etcdserverpb.RangeRequest()
        r.key = await election.leaderKey
        try KVPrint.get(try await c.unary(Etcdserverpb.KV.range, r, idempotent: true), c)
        switch await hold(session) {
        case .signal:
            do { try await election.resign() } catch { throw CtlFailure(.error, error.ctlMessage) }
        case .sessionEnded:
            throw CtlFailure(.error, "elect: session expired")
        }
    }
}
