// Long-running verbs (watch, lock, elect) as background processes with bounded waits: both tools watch
// the same keys of the same server and must print the same thing; locks exclude each other across tools.
import Foundation
import KeelTestSupport
import Testing

enum KeelctlStreams {
    static func all(_ runner: ScriptRunner, label: String) async throws {
        try await watch(runner, label: label)
        try await lock(runner, label: label)
        try await elect(runner, label: label)
        try await keepAlive(runner, label: label)
    }

    /// lease keep-alive (not --once): both tools renew the same 6 s lease until it is revoked, then print
    /// "lease <id> expired or revoked." and exit 0. How many renewals each printed depends on timing, so
    /// the distinct lines are compared.
    static func keepAlive(_ runner: ScriptRunner, label: String) async throws {
        let g = try await runner.raw(.etcdctl, ["lease", "grant", "6"])
        guard let id = g.stdout.split(separator: " ").dropFirst().first.map(String.init) else {
            Issue.record("\(label): lease grant: \(g)")
            return
        }
        let ps = try spawnBoth(runner, ["lease", "keep-alive", id])
        defer { for p in ps.values { p.kill() } }
        await waitAll([ps], "keepalived with TTL(6)", label)
        let r = try await runner.raw(.etcdctl, ["lease", "revoke", id])
        #expect(r.status.succeeded, "\(r)")
        var lines: [Tool: Set<String>] = [:]
        for (tool, p) in ps {
            #expect(await p.wait(timeout: .seconds(60)) == .exited(0), "\(label) \(tool) keep-alive: \(p.stdout) \(p.stderr)")
            #expect(p.stdout.hasSuffix("lease \(id) expired or revoked.\n"), "\(label) \(tool): \(p.stdout.debugDescription)")
            lines[tool] = Set(p.stdout.split(separator: "\n").map(String.init))
        }
        #expect(lines[.keelctl] == lines[.etcdctl], "\(label): \(lines)")
    }

    static func spawn(_ runner: ScriptRunner, _ tool: Tool, _ args: [String]) throws -> ChildProcess {
        let full = ["--endpoints", runner.endpoint] + args
        return tool == .keelctl
            ? try ChildProcess.spawn(runner.keelctl, full)
            : try ChildProcess.spawn(RepoPaths.etcdctl, full, extraEnvironment: ["ETCDCTL_API": "3"])
    }

    /// "<name>/<lease ID in hex>\n" + value line, as etcdctl prints a lock or an elected leader.
    static func isKeyLine(_ s: String, name: String, value: String) -> Bool {
        let lines = s.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count == 3, lines[1] == value, lines[2].isEmpty, lines[0].hasPrefix(name + "/") else { return false }
        let hex = lines[0].dropFirst(name.count + 1)
        return (1...16).contains(hex.count) && hex.allSatisfy(\.isHexDigit)   // etcd: %x of the lease, unpadded
    }

    static func lock(_ runner: ScriptRunner, label: String) async throws {
        // A holder and a waiter (keelctl): the waiter gets the lock only once the holder let go (SIGTERM unlocks).
        let a = try spawn(runner, .keelctl, ["lock", "t/lk"])
        defer { a.kill() }
        #expect(await a.waitForOutput(timeout: .seconds(60)) { !$0.isEmpty }, "\(label): lock holder: \(a.stderr)")
        #expect(isKeyLine(a.stdout, name: "t/lk", value: ""), "\(label): \(a.stdout.debugDescription)")
        let b = try spawn(runner, .keelctl, ["lock", "t/lk"])
        defer { b.kill() }
        // The waiter has put its key (two keys under the prefix) and printed nothing: it is waiting.
        var keys = 0
        for _ in 0..<300 {
            keys = try await runner.raw(.etcdctl, ["get", "t/lk/", "--prefix", "--keys-only"]).stdout
                .split(separator: "\n").count
            if keys == 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(keys == 2, "\(label): waiter key not there")
        #expect(b.stdout.isEmpty && b.isRunning, "\(label): second lock while the first is held: \(b.stdout.debugDescription)")
        a.terminate()
        #expect(await a.wait(timeout: .seconds(30)) == .exited(0), "\(label): holder exit \(a.stderr)")
        #expect(await b.waitForOutput(timeout: .seconds(60)) { !$0.isEmpty }, "\(label): waiter never got the lock")
        #expect(isKeyLine(b.stdout, name: "t/lk", value: "") && b.stdout != a.stdout, "\(label): \(b.stdout.debugDescription)")
        b.terminate()
        #expect(await b.wait(timeout: .seconds(30)) == .exited(0))

        // A holder that dies (SIGKILL, no unlock): its 3 s session lease expires and the waiter gets the lock.
        let dying = try spawn(runner, .keelctl, ["lock", "--ttl", "3", "t/lk"])
        defer { dying.kill() }
        #expect(await dying.waitForOutput(timeout: .seconds(60)) { !$0.isEmpty })
        let next = try spawn(runner, .keelctl, ["lock", "t/lk"])
        defer { next.kill() }
        dying.kill()
        #expect(await next.waitForOutput(timeout: .seconds(60)) { !$0.isEmpty }, "\(label): lock not taken over after the holder died")
        next.terminate()
        _ = await next.wait(timeout: .seconds(30))

        // Exec mode, keelctl and etcdctl mixed: the critical sections never overlap.
        let file = runner.dir + "/critical"
        let section = "echo start >> '\(file)'; sleep 0.2; echo \"$ETCD_LOCK_KEY\" >> '\(file)'; echo end >> '\(file)'"
        let procs = try [Tool.keelctl, .etcdctl, .keelctl, .etcdctl].map {
            try spawn(runner, $0, ["lock", "t/lx", "--", "sh", "-c", section])
        }
        defer { for p in procs { p.kill() } }
        for p in procs { #expect(await p.wait(timeout: .seconds(120)) == .exited(0), "\(label): \(p.stderr)") }
        let lines = (try? String(contentsOfFile: file, encoding: .utf8))?.split(separator: "\n") ?? []
        #expect(lines.count == 12, "\(label): \(lines)")
        for i in stride(from: 0, to: lines.count - 2, by: 3) {
            #expect(lines[i] == "start" && lines[i + 1].hasPrefix("t/lx/") && lines[i + 2] == "end", "\(label): overlap in \(lines)")
        }
        // Same output for the simple case with both tools (the key differs by lease: compare the shape).
        for tool in Tool.allCases {
            let r = try await runner.raw(tool, ["lock", "t/ly", "--", "echo", "held"])
            #expect(r.status.succeeded && r.stdout == "held\n", "\(label) \(tool): \(r)")
        }
        let bad = try await runner.raw(.keelctl, ["lock"])
        let badE = try await runner.raw(.etcdctl, ["lock"])
        #expect(bad.status == badE.status && bad.stderr == badE.stderr.split(separator: "\n").filter { !$0.hasPrefix("{") }.joined() + "\n",
                "\(bad) vs \(badE)")
    }

    static func elect(_ runner: ScriptRunner, label: String) async throws {
        let leader = try spawn(runner, .keelctl, ["elect", "t/el", "p1"])
        defer { leader.kill() }
        #expect(await leader.waitForOutput(timeout: .seconds(60)) { !$0.isEmpty }, "\(label): \(leader.stderr)")
        #expect(isKeyLine(leader.stdout, name: "t/el", value: "p1"), "\(label): \(leader.stdout.debugDescription)")
        let second = try spawn(runner, .etcdctl, ["elect", "t/el", "p2"])
        defer { second.kill() }
        let observers = try spawnBoth(runner, ["elect", "-l", "t/el"])
        defer { for p in observers.values { p.kill() } }
        await waitAll([observers], "p1\n", label)
        leader.terminate()   // resigns
        #expect(await leader.wait(timeout: .seconds(30)) == .exited(0))
        #expect(await second.waitForOutput(containing: "p2\n", timeout: .seconds(60)), "\(label): \(second.stdout)")
        await waitAll([observers], "p2\n", label)
        for p in observers.values { p.terminate() }
        for p in observers.values { #expect(await p.wait(timeout: .seconds(30)) == .exited(0)) }
        #expect(observers[.keelctl]!.stdout == observers[.etcdctl]!.stdout,
                "\(label): observers \(observers[.keelctl]!.stdout.debugDescription) vs \(observers[.etcdctl]!.stdout.debugDescription)")
        second.terminate()
        _ = await second.wait(timeout: .seconds(30))
        for args in [["elect", "t/el"], ["elect", "-l", "t/el", "p"], ["elect"]] {
            let k = try await runner.raw(.keelctl, args)
            let e = try await runner.raw(.etcdctl, args)
            #expect(k.status == e.status && k.stderr == e.stderr, "\(label) \(args): \(k) vs \(e)")
        }
    }

    /// Starts `args` with both tools in the background.
    static func spawnBoth(_ runner: ScriptRunner, _ args: [String]) throws -> [Tool: ChildProcess] {
        var out: [Tool: ChildProcess] = [:]
        for tool in Tool.allCases {
            let full = ["--endpoints", runner.endpoint] + args
            out[tool] = tool == .keelctl
                ? try ChildProcess.spawn(runner.keelctl, full)
                : try ChildProcess.spawn(RepoPaths.etcdctl, full, extraEnvironment: ["ETCDCTL_API": "3"])
        }
        return out
    }

    /// Waits (bounded) until every process printed `text` on stdout.
    static func waitAll(_ ps: [[Tool: ChildProcess]], _ text: String, _ label: String) async {
        for group in ps {
            for (tool, p) in group {
                let ok = await p.waitForOutput(containing: text, timeout: .seconds(60))
                #expect(ok, "\(label): \(tool) never printed \(text.debugDescription): \(p.stdout.debugDescription) \(p.stderr.debugDescription)")
            }
        }
    }

    static func put(_ runner: ScriptRunner, _ args: [String]) async throws {
        let r = try await runner.raw(.etcdctl, args)
        #expect(r.status.succeeded, "\(args): \(r)")
    }

    static func watch(_ runner: ScriptRunner, label: String) async throws {
        _ = try await runner.raw(.etcdctl, ["del", "t/", "--prefix"])
        let base = try await runner.revision()
        // History first: watchers that start from base+1 replay it whatever their start-up timing.
        try await put(runner, ["put", "t/w1", "a"])
        try await put(runner, ["put", "t/w1", "b"])
        try await put(runner, ["del", "t/w1"])
        try await put(runner, ["put", "t/w2", "x y"])
        try await put(runner, ["put", "t/other", "not watched"])
        try await put(runner, ["put", "t/w3", "history-end"])
        let next = base + 7
        let history = try spawnBoth(runner, ["watch", "t/w", "--prefix", "--prev-kv", "--rev", String(base + 1)])
        let single = try spawnBoth(runner, ["watch", "t/w1", "--rev", String(base + 1)])
        // Live only: from the next revision, one event per response (JSON compares response by response).
        let json = try spawnBoth(runner, ["watch", "t/w", "--prefix", "-w", "json", "--rev", String(next)])
        let exec = try spawnBoth(runner, ["watch", "t/w9", "--rev", String(next), "--", "sh", "-c",
                                          "echo \"exec $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\""])
        var interactive: [Tool: ChildProcess] = [:]
        for tool in Tool.allCases {
            let bin = tool == .keelctl ? runner.keelctl : RepoPaths.etcdctl
            let script = "(printf 'watch t/w2 --rev \(base + 1)\\nwatch t/w9 --rev \(next)\\n'; sleep 300) | "
                + "ETCDCTL_API=3 '\(bin)' --endpoints \(runner.endpoint) watch -i"
            interactive[tool] = try ChildProcess.spawn("/bin/sh", ["-c", script])
        }
        let all = [history, single, json, exec, interactive]
        defer { for g in all { for p in g.values { p.kill() } } }

        await waitAll([history], "history-end", label)
        await waitAll([interactive], "x y", label)
        await waitAll([single], "DELETE\nt/w1\n\n", label)
        try await put(runner, ["put", "t/w9", "live one"])
        await waitAll([json], "\"bGl2ZSBvbmU=\"", label)   // base64("live one")
        await waitAll([exec, interactive], "live one", label)
        try await put(runner, ["del", "t/w9"])
        await waitAll([json], "\"type\":1", label)
        await waitAll([exec], "exec \"DELETE\"", label)
        await waitAll([interactive], "DELETE\nt/w9\n\n", label)

        for (name, g) in [("history", history), ("single", single), ("json", json), ("exec", exec),
                          ("interactive", interactive)] {
            let k = g[.keelctl]!, e = g[.etcdctl]!
            k.terminate()
            e.terminate()
            _ = await k.waitOrKill(timeout: .seconds(10))
            _ = await e.waitOrKill(timeout: .seconds(10))
            #expect(!k.stdout.isEmpty, "\(label) watch \(name): keelctl printed nothing")
            #expect(k.stdout == e.stdout, "\(label) watch \(name):\n keelctl: \(k.stdout.debugDescription)\n etcdctl: \(e.stdout.debugDescription)")
        }
        // The simple history watcher saw exactly the watched events, in order, with previous values.
        let expected = "PUT\nt/w1\na\nPUT\nt/w1\na\nt/w1\nb\nDELETE\nt/w1\nb\nt/w1\n\nPUT\nt/w2\nx y\nPUT\nt/w3\nhistory-end\n"
            + "PUT\nt/w9\nlive one\nDELETE\nt/w9\nlive one\nt/w9\n\n"
        #expect(history[.keelctl]!.stdout == expected, "\(label): \(history[.keelctl]!.stdout.debugDescription)")
    }
}
