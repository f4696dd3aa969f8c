import Foundation
import Testing
import KeelTestSupport
@testable import ProtoGenCore

func parse(_ src: String, file: String = "t.proto") throws(ProtoError) -> ProtoFile {
    try ProtoParser.parse(source: src, fileName: file)
}

/// Expects a parse error at `line:column` whose message contains `fragment`.
func expectParseError(_ src: String, _ line: Int, _ column: Int, _ fragment: String,
                      sourceLocation: Testing.SourceLocation = #_sourceLocation) {
    do {
        _ = try parse(src)
        Issue.record("expected a parse error containing \"\(fragment)\"", sourceLocation: sourceLocation)
    } catch {
        #expect(error.location.line == line && error.location.column == column,
                "got \(error)", sourceLocation: sourceLocation)
        #expect(error.message.contains(fragment), "got \(error)", sourceLocation: sourceLocation)
        #expect(error.description.hasPrefix("t.proto:\(line):\(column): error: "), sourceLocation: sourceLocation)
    }
}

@Suite struct ParserTests {
    @Test func fullGrammar() throws {
        let f = try parse("""
            // leading comment
            syntax = "proto3"; /* block
            comment */
            package a.b;
            import "x.proto";
            import public "y.proto";
            import weak 'z.proto';
            option java_package = "com" ".example";
            option (custom.opt).field = { a: 1 b: [1, 2] c { d: "}" } e < f: -inf > };
            option (num) = -12.5e3;
            message M {
              option deprecated = true;
              message N { enum E { Z = 0; } }
              enum Kind { option allow_alias = true; A = 0; B = 1; C = 1 [deprecated = true]; NEG = -2147483648; reserved 5 to 7; }
              int32 a = 1 [json_name = "x", (my.opt) = { k: 1 }];
              repeated .a.b.M.N n = 2;
              map<string, N.E> m = 3;
              oneof pick { option (o) = 1; string s = 4; N nn = 5; }
              optional uint64 o = 6;
              reserved 10, 20 to 30, 40 to max;
              reserved "gone", "old";
              repeated int32 p = 7 [packed = false];
              fixed64 big = 0x1f;
              ;
              extend Foo { int32 bar = 100; }
            }
            enum Top { T0 = 0x0; T1 = 01; }
            service S {
              option (svc) = "x";
              rpc A(M) returns (M);
              rpc B(stream M) returns (stream .a.b.M) { option (google.api.http) = { post: "/v3" body: "*" }; }
              rpc C(M) returns (stream M) {}
            }
            extend google.protobuf.FileOptions { string num = 5000; }
            """)
        #expect(f.syntax == "proto3")
        #expect(f.package == "a.b")
        #expect(f.imports.map(\.path) == ["x.proto", "y.proto", "z.proto"])
        #expect(f.imports.map(\.kind) == [.normal, .public, .weak])
        #expect(f.messages.count == 1)
        let m = f.messages[0]
        #expect(m.name == "M")
        #expect(m.messages.map(\.name) == ["N"])
        #expect(m.enums[0].name == "Kind")
        #expect(m.enums[0].allowAlias)
        #expect(m.enums[0].values.map(\.number) == [0, 1, 1, Int32.min])
        #expect(m.fields.map(\.name) == ["a", "n", "m", "s", "nn", "o", "p", "big"])
        #expect(m.fields.map(\.number) == [1, 2, 3, 4, 5, 6, 7, 31])
        #expect(m.fields[0].type == .scalar(.int32))
        #expect(m.fields[1].type == .named(".a.b.M.N"))
        #expect(m.fields[1].label == .repeated)
        #expect(m.fields[2].type == .map(key: .string, value: .named("N.E")))
        #expect(m.fields[3].oneofIndex == 0)
        #expect(m.fields[4].oneofIndex == 0)
        #expect(m.oneofs.map(\.name) == ["pick"])
        #expect(m.fields[5].label == .optional)
        #expect(m.fields[6].packedOption == false)
        #expect(f.enums[0].values.map(\.number) == [0, 1])
        let s = f.services[0]
        #expect(s.methods.map(\.name) == ["A", "B", "C"])
        #expect(s.methods.map(\.clientStreaming) == [false, true, false])
        #expect(s.methods.map(\.serverStreaming) == [false, true, true])
        #expect(s.methods[1].outputType == ".a.b.M")
        #expect(m.fields[0].location == ProtoGenCore.SourceLocation(file: "t.proto", line: 15, column: 3))
    }

    @Test func fieldNamedLikeKeywords() throws {
        let f = try parse("""
            syntax = "proto3";
            message map { int32 map = 1; }
            message stream { map message = 1; int32 option = 2; string syntax = 3; bool optional = 4; }
            service S { rpc R(stream) returns (map); }
            """)
        #expect(f.messages[1].fields.map(\.name) == ["message", "option", "syntax", "optional"])
        #expect(f.messages[1].fields[0].type == .named("map"))
        // `stream` followed by `)` is a type name here.
        #expect(f.services[0].methods[0].clientStreaming == false)
        #expect(f.services[0].methods[0].inputType == "stream")
    }

    @Test func stringEscapes() throws {
        let f = try parse(#"syntax = "proto3"; import "a\x41\101\n\"\'\\b.proto";"#)
        #expect(f.imports[0].path == "aAA\n\"'\\b.proto")
    }

    @Test func errorPositions() {
        expectParseError("message M {}", 1, 1, "syntax")
        expectParseError("syntax = \"proto2\";", 1, 1, "proto2")
        expectParseError("syntax = \"proto3\";\nmessage M {\n  int32 a = 1\n}", 4, 1, "expected \";\"")
        expectParseError("syntax = \"proto3\";\nmessage M {\n  int32 a = 0;\n}", 3, 13, "field numbers must be positive")
        expectParseError("syntax = \"proto3\";\nmessage M {\n  int32 a = 19000;\n}", 3, 13, "reserved for the protobuf")
        expectParseError("syntax = \"proto3\";\nmessage M {\n  int32 a = 1;\n  string b = 1;\n}", 4, 3, "field number 1 has already been used")
        expectParseError("syntax = \"proto3\";\nmessage M {\n  int32 a = 1;\n  string a = 2;\n}", 4, 3, "already defined")
        expectParseError("syntax = \"proto3\";\nmessage M {\n  reserved 2 to 4;\n  int32 a = 3;\n}", 4, 3, "reserved number 3")
        expectParseError("syntax = \"proto3\";\nmessage M {\n  reserved \"a\";\n  int32 a = 3;\n}", 4, 3, "is reserved")
        expectParseError("syntax = \"proto3\";\nenum E { A = 1; }", 2, 10, "first enum value must be zero")
        expectParseError("syntax = \"proto3\";\nenum E { A = 0; B = 0; }", 2, 17, "allow_alias")
        expectParseError("syntax = \"proto3\";\nenum E {\n  option allow_alias = true;\n  A = 0;\n}", 2, 1, "no aliases")
        expectParseError("syntax = \"proto3\";\nmessage M { map<float, int32> m = 1; }", 2, 17, "key in map fields")
        expectParseError("syntax = \"proto3\";\nmessage M { required int32 a = 1; }", 2, 13, "required fields")
        expectParseError("syntax = \"proto3\";\nmessage M { oneof o { repeated int32 a = 1; } }", 2, 23, "must not have labels")
        expectParseError("syntax = \"proto3\";\nmessage M {\n  int32 a = 1;\n", 4, 1, "missing '}'")
        expectParseError("syntax = \"proto3\";\n/* never closed\n", 2, 1, "unterminated block comment")
        expectParseError("syntax = \"proto3\";\nimport \"a.proto\n;", 2, 8, "unterminated string")
        expectParseError("syntax = \"proto3\";\nmessage M { int32 a = 99999999999999999999; }", 2, 23, "too large")
        expectParseError("syntax = \"proto3\";\nservice S { rpc A(M) returns M; }", 2, 30, "expected \"(\"")
        expectParseError("syntax = \"proto3\";\nservice S { rpc A(M) returns (M); rpc A(M) returns (M); }", 2, 35, "already defined")
        expectParseError("syntax = \"proto3\";\nmessage M { int32 a = 1 [packed = maybe]; }", 2, 26, "\"true\" or \"false\"")
        expectParseError("syntax = \"proto3\";\nfoo bar;", 2, 1, "expected top-level statement")
        expectParseError("syntax = \"proto3\";\nmessage M { int32 a = 1; } $", 2, 28, "found \"$\"")
        // Columns count characters, not bytes.
        expectParseError("syntax = \"proto3\";\n// é\nmessage M { string é = 1; }", 3, 20, "unexpected character")
        expectParseError("syntax = \"proto3\";\npackage a;\npackage b;", 3, 1, "multiple package")
        expectParseError("syntax = \"proto3\";\nmessage M { int32 a = 1 [default = 5]; }", 2, 26, "explicit default values")
    }
}

@Suite struct ResolverTests {
    func load(_ files: [String: String], inputs: [String]) throws(ProtoError) -> Schema {
        let loader = ProtoLoader(importRoots: ["/r"]) { path in files[path] }
        return try loader.load(inputs.map { "/r/" + $0 })
    }

    func fieldType(_ s: Schema, _ file: String, _ message: String, _ field: String) -> FieldType? {
        func find(_ ms: [MessageDecl], _ path: [Substring]) -> MessageDecl? {
            guard let first = path.first, let m = ms.first(where: { $0.name == first }) else { return nil }
            return path.count == 1 ? m : find(m.messages, Array(path.dropFirst()))
        }
        let m = find(s.file(named: file)!.proto.messages, message.split(separator: "."))
        return m?.fields.first { $0.name == field }?.type
    }

    @Test func scopesLikeProtoc() throws {
        let s = try load([
            "/r/a.proto": """
                syntax = "proto3";
                package foo.bar;
                import "b.proto";
                message Outer {
                  message Inner { Inner self_ref = 1; Outer up = 2; Baz b = 3; }
                  Inner i = 1;
                  Top.Deep d = 2;
                  bar.Outer o = 3;            // relative: foo.bar.Outer
                  .foo.Top t = 4;
                  Top t2 = 5;                 // found in enclosing package foo
                  other.Thing th = 6;
                  foo.bar.Outer.Inner fq = 7;
                }
                message Baz {}
                """,
            "/r/b.proto": """
                syntax = "proto3";
                package foo;
                import public "c.proto";
                message Top { message Deep {} }
                """,
            "/r/c.proto": """
                syntax = "proto3";
                package other;
                message Thing {}
                """,
        ], inputs: ["a.proto"])
        #expect(fieldType(s, "a.proto", "Outer", "i") == .named(".foo.bar.Outer.Inner"))
        #expect(fieldType(s, "a.proto", "Outer.Inner", "self_ref") == .named(".foo.bar.Outer.Inner"))
        #expect(fieldType(s, "a.proto", "Outer.Inner", "up") == .named(".foo.bar.Outer"))
        #expect(fieldType(s, "a.proto", "Outer.Inner", "b") == .named(".foo.bar.Baz"))
        #expect(fieldType(s, "a.proto", "Outer", "d") == .named(".foo.Top.Deep"))
        #expect(fieldType(s, "a.proto", "Outer", "o") == .named(".foo.bar.Outer"))
        #expect(fieldType(s, "a.proto", "Outer", "t") == .named(".foo.Top"))
        #expect(fieldType(s, "a.proto", "Outer", "t2") == .named(".foo.Top"))
        #expect(fieldType(s, "a.proto", "Outer", "th") == .named(".other.Thing"))
        #expect(fieldType(s, "a.proto", "Outer", "fq") == .named(".foo.bar.Outer.Inner"))
        #expect(s.files.map(\.isInput) == [true, false, false])
    }

    @Test func deepNameStopsAtFirstMatchingScope() throws {
        // `Inner.Deep` finds `Inner` in Outer's scope, which has no `Deep`: protoc reports an
        // error rather than looking further out.
        do {
            _ = try load(["/r/a.proto": """
                syntax = "proto3";
                package p;
                message Inner { message Deep {} }
                message Outer {
                  message Inner {}
                  Inner.Deep d = 1;
                }
                """], inputs: ["a.proto"])
            Issue.record("expected an error")
        } catch {
            #expect(error.location.line == 6 && error.location.column == 3)
            #expect(error.message.contains("\"Inner.Deep\" is resolved to \"p.Outer.Inner.Deep\""))
        }
    }

    @Test func resolutionErrors() throws {
        func err(_ files: [String: String]) -> ProtoError? {
            do {
                _ = try load(files, inputs: ["a.proto"])
                return nil
            } catch {
                return error
            }
        }
        let undefined = err(["/r/a.proto": "syntax = \"proto3\";\nmessage M {\n  Nope n = 1;\n}"])
        #expect(undefined?.description == "/r/a.proto:3:3: error: \"Nope\" is not defined.")

        let notImported = err([
            "/r/a.proto": "syntax = \"proto3\";\nimport \"b.proto\";\nmessage M { C c = 1; }",
            "/r/b.proto": "syntax = \"proto3\";\nimport \"c.proto\";",
            "/r/c.proto": "syntax = \"proto3\";\nmessage C {}",
        ])
        #expect(notImported?.message.contains("which is not imported by \"a.proto\"") == true)

        let missing = err(["/r/a.proto": "syntax = \"proto3\";\nimport \"gone.proto\";"])
        #expect(missing?.location.line == 2)
        #expect(missing?.message.contains("\"gone.proto\" was not found") == true)

        let enumAsRequest = err(["/r/a.proto": "syntax = \"proto3\";\nenum E { Z = 0; }\nservice S {\n  rpc A(E) returns (E);\n}"])
        #expect(enumAsRequest?.location.line == 4)
        #expect(enumAsRequest?.message.contains("is not a message type") == true)

        let duplicate = err([
            "/r/a.proto": "syntax = \"proto3\";\npackage p;\nimport \"b.proto\";\nmessage M {}",
            "/r/b.proto": "syntax = \"proto3\";\npackage p;\nmessage M {}",
        ])
        #expect(duplicate?.message.contains("\"p.M\" is already defined") == true)

        let cycle = err([
            "/r/a.proto": "syntax = \"proto3\";\nimport \"b.proto\";",
            "/r/b.proto": "syntax = \"proto3\";\nimport \"a.proto\";",
        ])
        #expect(cycle?.message.contains("import cycle") == true)

        let badPacked = err(["/r/a.proto": "syntax = \"proto3\";\nmessage M {\n  repeated string s = 1 [packed = true];\n}"])
        #expect(badPacked?.location.line == 3)

        let enumScope = err(["/r/a.proto": "syntax = \"proto3\";\npackage p;\nmessage M {\n  int32 none = 1;\n  enum E { none = 0; }\n}"])
        #expect(enumScope?.location.line == 5 && enumScope?.location.column == 12)
        #expect(enumScope?.message.hasPrefix("\"none\" is already defined in \"p.M\". Note that enum values use C++ scoping rules") == true)

        let twoEnums = err(["/r/a.proto": "syntax = \"proto3\";\nenum A { NONE = 0; }\nenum B { NONE = 0; }"])
        #expect(twoEnums?.location.line == 3)

        let fieldVsType = err(["/r/a.proto": "syntax = \"proto3\";\nmessage M {\n  message Inner {}\n  int32 Inner = 1;\n}"])
        #expect(fieldVsType?.message == "\"Inner\" is already defined in \"M\".")

        let parseErr = err(["/r/a.proto": "syntax = \"proto3\";\nmessage {"])
        #expect(parseErr?.description == "/r/a.proto:2:9: error: expected message name, found \"{\"")
    }

    @Test func cyclesAreBoxed() throws {
        let s = try load(["/r/a.proto": """
            syntax = "proto3";
            package p;
            message A { B b = 1; repeated A many = 2; }
            message B { A a = 1; C c = 2; }
            message C { repeated C list = 1; map<int32, C> m = 2; }
            message D { D self = 1; }
            """], inputs: ["a.proto"])
        let g = SwiftGenerator(schema: s)
        #expect(g.needsBox(from: "p.A", to: "p.B"))
        #expect(g.needsBox(from: "p.B", to: "p.A"))
        #expect(!g.needsBox(from: "p.B", to: "p.C"))
        #expect(!g.needsBox(from: "p.C", to: "p.C"))
        #expect(g.needsBox(from: "p.D", to: "p.D"))
    }
}

@Suite struct NamingTests {
    @Test func lowerCamel() {
        #expect(SwiftNaming.lowerCamel("range_end") == "rangeEnd")
        #expect(SwiftNaming.lowerCamel("keys_only") == "keysOnly")
        #expect(SwiftNaming.lowerCamel("NOT_EQUAL") == "notEqual")
        #expect(SwiftNaming.lowerCamel("NOSPACE") == "nospace")
        #expect(SwiftNaming.lowerCamel("ID") == "id")
        #expect(SwiftNaming.lowerCamel("TTL") == "ttl")
        #expect(SwiftNaming.lowerCamel("grantedTTL") == "grantedTTL")
        #expect(SwiftNaming.lowerCamel("peerURLs") == "peerURLs")
        #expect(SwiftNaming.lowerCamel("MsgApp") == "msgApp")
        #expect(SwiftNaming.lowerCamel("HTTPServer") == "httpServer")
        #expect(SwiftNaming.lowerCamel("request_delete_range") == "requestDeleteRange")
        #expect(SwiftNaming.lowerCamel("cluster_id") == "clusterId")
        #expect(SwiftNaming.lowerCamel("Range") == "range")
        #expect(SwiftNaming.lowerCamel("HashKV") == "hashKV")
        #expect(SwiftNaming.lowerCamel("_x") == "x")
        #expect(SwiftNaming.lowerCamel("remaining_TTL") == "remainingTTL")
        #expect(SwiftNaming.lowerCamel("Remaining_TTL") == "remainingTTL")
        #expect(SwiftNaming.lowerCamel("v1_2") == "v12")
    }

    @Test func namespacesAndKeywords() {
        #expect(SwiftNaming.namespace(forPackage: "etcdserverpb") == "Etcdserverpb")
        #expect(SwiftNaming.namespace(forPackage: "mvccpb") == "Mvccpb")
        #expect(SwiftNaming.namespace(forPackage: "keel.test") == "Keel_Test")
        #expect(SwiftNaming.namespace(forPackage: "my_pkg.v1") == "MyPkg_V1")
        #expect(SwiftNaming.quoted("default") == "`default`")
        #expect(SwiftNaming.quoted("range") == "range")
        #expect(SwiftNaming.typeName("Type", isEnum: true) == "TypeEnum")
        #expect(SwiftNaming.typeName("Type") == "TypeMessage")
        #expect(SwiftNaming.typeName("Self") == "Self_")
        #expect(SwiftNaming.typeName("KeyValue") == "KeyValue")
    }
}

@Suite struct ImportLookupTests {
    @Test func importsFallBackToBaseNameInRootsAndIgnoreDescriptorProto() throws {
        let files = [
            "/r/rpc.proto": """
                syntax = "proto3";
                package etcdserverpb;
                import "etcd/api/mvccpb/kv.proto";
                import "google/protobuf/descriptor.proto";
                extend google.protobuf.FieldOptions { string etcd_version_field = 50000; }
                message RangeResponse { repeated mvccpb.KeyValue kvs = 2 [(etcd_version_field) = "3.1"]; }
                """,
            "/r/kv.proto": "syntax = \"proto3\";\npackage mvccpb;\nmessage KeyValue { bytes key = 1; }",
        ]
        let loader = ProtoLoader(importRoots: ["/r"]) { files[$0] }
        let s = try loader.load(["/r/rpc.proto"])
        #expect(s.files.map(\.name) == ["rpc.proto", "kv.proto"])
        #expect(s.file(named: "rpc.proto")?.proto.messages[0].fields[0].type == .named(".mvccpb.KeyValue"))
        let out = try SwiftGenerator(schema: s).generate()
        #expect(out.map(\.fileName) == ["rpc.pb.swift"])
        #expect(out[0].source.contains("public var kvs: [Mvccpb.KeyValue] = []"))
        #expect(out[0].source.contains("public enum Etcdserverpb {}"))
    }
}

@Suite struct CommentTests {
    @Test func leadingAndTrailingCommentsAreKept() throws {
        let f = try parse("""
            syntax = "proto3";

            // Detached: a blank line follows.

            // M is documented.
            /* More
             * docs. */
            message M {
              // a's doc
              int32 a = 1; // trailing a
              repeated int32 b = 2;  /* trailing b */
              // oneof doc
              oneof o { string c = 3; }
            }
            enum E {
              Z = 0; // zero
              // one
              ONE = 1;
            }
            // S doc
            service S {
              // R doc
              rpc R(M) returns (M); // trailing R
            }
            """)
        let m = f.messages[0]
        #expect(m.comments == ["M is documented.", "More", "docs."])
        #expect(m.fields[0].comments == ["a's doc", "trailing a"])
        #expect(m.fields[1].comments == ["trailing b"])
        #expect(m.oneofs[0].comments == ["oneof doc"])
        #expect(m.fields[2].comments == [])
        #expect(f.enums[0].values[0].comments == ["zero"])
        #expect(f.enums[0].values[1].comments == ["one"])
        #expect(f.services[0].comments == ["S doc"])
        #expect(f.services[0].methods[0].comments == ["R doc", "trailing R"])
    }
}

@Suite struct ParserFuzzTests {
    /// Mutated .proto sources must either parse or give a positioned error, never trap.
    @Test func mutatedSourcesNeverTrap() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Protos")
        let source = Array(try String(contentsOf: dir.appendingPathComponent("everything.proto"), encoding: .utf8).utf8)
        let other = try String(contentsOf: dir.appendingPathComponent("other.proto"), encoding: .utf8)
        var rng = SplitMix64(seed: 0x70726f74)
        let alphabet = Array("{}[]()<>;=,.\"'/*\\-+0x9azAZ_ \n\té".utf8)
        var parsed = 0, failed = 0
        for _ in 0..<1500 {
            var b = source
            for _ in 0..<(1 + rng.next() % 3) {
                let i = Int(rng.next() % UInt64(b.count))
                switch rng.next() % 4 {
                case 0: b[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                case 1: b.remove(at: i)
                case 2: b.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: i)
                default: b.removeSubrange(i..<min(b.count, i + Int(rng.next() % 40)))
                }
            }
            let text = String(decoding: b, as: UTF8.self)
            let files = ["/r/everything.proto": text, "/r/other.proto": other]
            do {
                let schema = try ProtoLoader(importRoots: ["/r"]) { files[$0] }.load(["/r/everything.proto"])
                _ = try SwiftGenerator(schema: schema).generate()
                parsed += 1
            } catch {
                #expect(error.location.line >= 1 && error.location.column >= 1)
                #expect(!error.message.isEmpty)
                failed += 1
            }
        }
        #expect(parsed + failed == 1500)
        #expect(failed > 100)
    }
}
