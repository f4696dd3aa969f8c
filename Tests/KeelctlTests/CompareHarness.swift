// Runs the same script of commands with keelctl and with Debian's etcdctl 3.4 against the same server and
// normalises what necessarily differs between the two runs (revisions relative to the run's start, lease
// IDs, durations, raft indexes and DB sizes), so the outputs can be compared byte for byte.
import Foundation
import KeelTestSupport
import Testing

enum Tool: String, Sendable, CaseIterable {
    case keelctl, etcdctl
}

/// One command of a script. Arguments may hold placeholders: {L1}, {L2} (leases granted earlier in this
/// run, hex), {R+n} (the run's start revision + n), {DEAD} (an endpoint nobody listens on), {DIR}.
struct Step: Sendable, CustomStringConvertible {
    var args: [String]
    var stdin: String?
    /// Text keelctl's stdout+stderr must contain (so that two equal outputs are not two empty ones).
    var expect: String?
    /// Compare the lines sorted (member lists ordered by random member IDs, health in completion order).
    var sorted: Bool
    /// A known keel server bug that makes etcdctl (not keelctl) fail this step against keel: the
    /// comparison is recorded as a known issue there (intermittent, so a fix does not fail the test).
    var keelKnownIssue: String?

    init(_ args: [String], stdin: String? = nil, expect: String? = nil, sorted: Bool = false,
         keelKnownIssue: String? = nil) {
        self.args = args
        self.stdin = stdin
        self.expect = expect
        self.sorted = sorted
        self.keelKnownIssue = keelKnownIssue
    }

    var description: String { args.joined(separator: " ") + (stdin.map { " <<< \($0.debugDescription)" } ?? "") }
}

/// What a run of one step produced, normalised.
struct Outcome: Sendable, Equatable, CustomStringConvertible {
    var status: KeelTestSupport.ExitStatus
    var stdout: String
    /// stderr without etcdctl's JSON log lines (zap/grpc warnings).
    var stderr: String
    var description: String { "[\(status)] stdout: \(stdout.debugDescription) stderr: \(stderr.debugDescription)" }
}

struct ScriptRunner: Sendable {
    let endpoint: String
    let keelctl: String
    let dead: String
    let dir: String

    init(endpoint: String, dir: String) throws {
        self.endpoint = endpoint
        self.keelctl = try BuildProducts.require("keelctl")
        self.dead = "127.0.0.1:\(try FreePorts.allocate())"
        self.dir = dir
    }

    /// Runs `args` with one tool (etcdctl with ETCDCTL_API=3), `--endpoints` first.
    func raw(_ tool: Tool, _ args: [String], stdin: String? = nil, timeout: Duration = .seconds(60)) async throws
        -> CommandResult {
        let hasEndpoints = args.contains { $0.hasPrefix("--endpoints") }
        let full = (hasEndpoints ? [] : ["--endpoints", endpoint]) + args
        switch tool {
        case .keelctl: return try await ChildProcess.run(keelctl, full, stdin: stdin, timeout: timeout)
        case .etcdctl: return try await Etcdctl.runRaw(full, stdin: stdin, timeout: timeout)
        }
    }

    /// The server's current revision (from a JSON get header).
    func revision() async throws -> Int64 {
        let r = try await raw(.etcdctl, ["get", "revision-probe", "-w", "json"])
        guard let rev = Self.firstNumber(after: "\"revision\":", in: r.stdout) else {
            throw ChildProcessError("no revision in \(r)")
        }
        return rev
    }

    static func firstNumber(after key: String, in s: String) -> Int64? {
        guard let r = s.range(of: key) else { return nil }
        return Int64(s[r.upperBound...].prefix { $0.isNumber || $0 == "-" })
    }

    /// Runs the whole script with `tool` from a clean key space under t/ and returns each step's outcome.
    /// `vars`: more placeholders ({NAME} -> value) for this tool's run; outputs show them as {NAME} again.
    func run(_ tool: Tool, _ steps: [Step], vars: [String: String] = [:]) async throws -> [(Step, Outcome, CommandResult)] {
        _ = try await raw(.etcdctl, ["del", "t/", "--prefix"])
        let base = try await revision()
        var leases: [Int64] = []
        var vars = vars
        var out: [(Step, Outcome, CommandResult)] = []
        for step in steps {
            let args = step.args.map { a in
                vars.reduce(substitute(a, base: base, leases: leases)) { $0.replacingOccurrences(of: "{\($1.key)}", with: $1.value) }
            }
            let r = try await raw(tool, args, stdin: step.stdin)
            if Array(step.args.prefix(2)) == ["member", "add"], r.status.succeeded {
                // "Member <%16x> added to cluster ...": the new member's ID is {M1}, {M2}, ...
                let words = r.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" })
                if words.count > 1, let id = UInt64(words[1], radix: 16) {
                    let n = vars.keys.filter { $0.hasPrefix("M") && $0.dropFirst().allSatisfy(\.isNumber) }.count + 1
                    vars["M\(n)"] = String(id, radix: 16)
                    vars["M\(n)dec"] = String(id)
                }
            }
            if Array(step.args.prefix(2)) == ["lease", "grant"], r.status.succeeded {
                if let id = r.stdout.split(separator: " ").dropFirst().first.flatMap({ Int64($0, radix: 16) }) {
                    leases.append(id)
                } else if let id = Self.firstNumber(after: "\"ID\":", in: r.stdout) {
                    leases.append(id)
                }
            }
            var o = normalise(r, base: base, leases: leases, table: args.contains("table"))
            for (k, v) in vars.sorted(by: { $0.value.count > $1.value.count }) where v.count > 3 {
                o.stdout = o.stdout.replacingOccurrences(of: v, with: "{\(k)}")
                o.stderr = o.stderr.replacingOccurrences(of: v, with: "{\(k)}")
            }
            // "Member %16x ...": a random member ID with fewer than 16 hex digits is padded with spaces.
            o.stdout = replace(o.stdout, #"Member +\{"#) { _ in "Member {" }
            if step.sorted {
                func sortLines(_ s: String) -> String {
                    s.split(separator: "\n").map { line -> String in
                        // ETCD_INITIAL_CLUSTER="a=u1,b=u2": members in response order.
                        guard line.hasPrefix("ETCD_INITIAL_CLUSTER=\"") else { return String(line) }
                        let items = line.dropFirst(22).dropLast().split(separator: ",").map(String.init).sorted()
                        return "ETCD_INITIAL_CLUSTER=\"" + items.joined(separator: ",") + "\""
                    }.sorted().joined(separator: "\n")
                }
                o.stdout = sortLines(o.stdout)
                o.stderr = sortLines(o.stderr)
            }
            out.append((step, o, r))
        }
        for id in leases { _ = try? await raw(.etcdctl, ["lease", "revoke", String(id, radix: 16)]) }
        return out
    }

    func substitute(_ arg: String, base: Int64, leases: [Int64]) -> String {
        var a = arg.replacingOccurrences(of: "{DEAD}", with: dead).replacingOccurrences(of: "{DIR}", with: dir)
        for (i, id) in leases.enumerated() { a = a.replacingOccurrences(of: "{L\(i + 1)}", with: String(id, radix: 16)) }
        while let r = a.range(of: #"\{R\+(\d+)\}"#, options: .regularExpression) {
            let n = Int64(a[r].dropFirst(3).dropLast()) ?? 0
            a.replaceSubrange(r, with: String(base + n))
        }
        return a
    }

    func normalise(_ r: CommandResult, base: Int64, leases: [Int64], table: Bool) -> Outcome {
        func norm(_ s: String) -> String {
            var t = s
            for (i, id) in leases.enumerated() {
                let hex = String(id, radix: 16)
                t = t.replacingOccurrences(of: String(repeating: "0", count: max(0, 16 - hex.count)) + hex, with: "<L\(i + 1)>")
                t = t.replacingOccurrences(of: String(id), with: "<L\(i + 1)>")
            }
            // Revisions relative to the run's start.
            t = replace(t, #"("(?:revision|create_revision|mod_revision|CompactRevision|compact_revision)":|"(?:Prev)?(?:Revision|CreateRevision|ModRevision)" : |compacted revision |progress notify: )(\d+)"#) { g in
                let v = Int64(g[2]) ?? 0
                return g[1] + (v >= base ? "R+\(v - base)" : g[2])
            }
            // Durations, remaining TTLs, raft indexes and sizes move between the two runs.
            t = replace(t, #"took = \S+|"took":"[^"]*""#) { _ in "took=T" }
            t = replace(t, #"remaining\(\d+s\)|"ttl":[1-9]\d*"#) { _ in "remaining=T" }
            t = replace(t, #""(raftIndex|raftAppliedIndex|dbSize|dbSizeInUse)":\d+"#) { g in "\"\(g[1])\":N" }
            // endpoint hashkv: the hash follows the run's history ("ep, hash" and "hash":N).
            t = replace(t, #"(?m)^([^,\n ]+:\d+), \d+$|"hash":\d+"#) { g in g[1].isEmpty ? "\"hash\":H" : g[1] + ", H" }
            // endpoint status, simple: "ep, id, version, db size, leader, learner, term, index, applied, errors"
            t = replace(t, #"(?m)^([^,\n]+, [0-9a-f]+, [^,\n]+, )[^,\n]+(, (?:true|false), (?:true|false), \d+, )\d+, \d+"#) { g in
                g[1] + "SIZE" + g[2] + "N, N"
            }
            if table {
                // Column widths follow the values: compare the cells only, digits as #.
                t = t.split(separator: "\n").map { line in
                    String(line.filter { $0 != " " && $0 != "-" && $0 != "+" }).replacingOccurrences(
                        of: #"[0-9.]+(ns|µs|ms|s|kB|MB|B)?"#, with: "#", options: .regularExpression)
                }.joined(separator: "\n")
            }
            return t
        }
        let stderr = r.stderr.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("{") }.joined(separator: "\n")
        return Outcome(status: r.status, stdout: norm(r.stdout), stderr: norm(stderr))
    }

    /// Regex replace with a closure over the capture groups (group 0 = the match).
    func replace(_ s: String, _ pattern: String, _ f: ([String]) -> String) -> String {
        guard let re = try? NSRegularExpression(pattern: pattern) else { return s }
        let ns = s as NSString
        var out = ""
        var last = 0
        for m in re.matches(in: s, range: NSRange(location: 0, length: ns.length)) {
            out += ns.substring(with: NSRange(location: last, length: m.range.location - last))
            let groups = (0..<m.numberOfRanges).map { i -> String in
                let r = m.range(at: i)
                return r.location == NSNotFound ? "" : ns.substring(with: r)
            }
            out += f(groups)
            last = m.range.location + m.range.length
        }
        out += ns.substring(from: last)
        return out
    }

    /// Runs the script with both tools and expects the same normalised outcome for every step.
    func compare(_ steps: [Step], label: String, vars: [Tool: [String: String]] = [:]) async throws {
        let mine = try await run(.keelctl, steps, vars: vars[.keelctl] ?? [:])
        let theirs = try await run(.etcdctl, steps, vars: vars[.etcdctl] ?? [:])
        for ((step, k, kraw), (_, e, _)) in zip(mine, theirs) {
            if let issue = step.keelKnownIssue, label.hasPrefix("keel") {
                withKnownIssue(Comment(rawValue: issue), isIntermittent: true) {
                    #expect(k == e, "\(label): `\(step)`\n keelctl: \(k)\n etcdctl: \(e)")
                }
            } else {
                #expect(k == e, "\(label): `\(step)`\n keelctl: \(k)\n etcdctl: \(e)")
            }
            if let want = step.expect {
                #expect((kraw.stdout + kraw.stderr).contains(want), "\(label): `\(step)` should print \(want.debugDescription): \(kraw)")
            }
        }
    }
}
