// ProtoGen: generates Swift for .proto files (run by ProtoGenPlugin, usable by hand).
//
//   ProtoGen --output <dir> [--proto-path <import root>]... [--import <Swift module>]...
//            [--module-name <Swift module being generated>] <file.proto>...
//
// Writes one `<name>.pb.swift` per input file into <dir>. Diagnostics go to stderr as
// `file:line:column: error: message`, and the exit status is 1.
import Foundation
import ProtoGenCore

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(1)
}

var output: String?
var roots: [String] = []
var imports: [String] = []
var moduleName: String?
var inputs: [String] = []
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--output", "-o":
        guard let v = args.popFirst() else { fail("ProtoGen: --output needs a directory") }
        output = v
    case "--proto-path", "-I":
        guard let v = args.popFirst() else { fail("ProtoGen: --proto-path needs a directory") }
        roots.append(v)
    case "--import":
        guard let v = args.popFirst() else { fail("ProtoGen: --import needs a module name") }
        imports.append(v)
    case "--module-name":
        guard let v = args.popFirst() else { fail("ProtoGen: --module-name needs a name") }
        moduleName = v
    case "--help", "-h":
        print("usage: ProtoGen --output <dir> [--proto-path <dir>]... [--import <module>]... [--module-name <module>] <file.proto>...")
        exit(0)
    default:
        if a.hasPrefix("-") { fail("ProtoGen: unknown option \(a)") }
        inputs.append(a)
    }
}
guard let outDir = output else { fail("ProtoGen: missing --output <dir>") }
if roots.isEmpty {
    // Default import roots: the directories of the inputs.
    for i in inputs {
        let d = (i as NSString).deletingLastPathComponent
        if !roots.contains(d) { roots.append(d.isEmpty ? "." : d) }
    }
}

do {
    let schema = try ProtoLoader(importRoots: roots).load(inputs)
    let files = try SwiftGenerator(schema: schema, extraImports: imports, moduleName: moduleName).generate()
    try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
    for (name, source) in files {
        let path = (outDir as NSString).appendingPathComponent(name)
        let data = Data(source.utf8)
        // Leave unchanged files alone so their modification time does not trigger rebuilds.
        if let existing = FileManager.default.contents(atPath: path), existing == data { continue }
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }
} catch let e as ProtoError {
    fail(e.description)
} catch {
    fail("ProtoGen: \(error)")
}
