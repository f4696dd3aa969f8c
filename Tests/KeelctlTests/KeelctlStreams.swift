// Long-running verbs (watch; lock and elect once KeelClient has them) as background processes with
// bounded waits: both tools watch the same keys of the same server and must print the same thing.
import Foundation
import KeelTestSupport
import Testing

enum KeelctlStreams {
    static func all(_ runner: ScriptRunner, label: String) async throws {
        try await watch(runner, label: label)
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
