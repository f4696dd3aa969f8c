import Foundation
import PackagePlugin

/// Runs ProtoGen on a target's .proto files at build time.
///
/// - Target `KeelAPI`: every `<package>/Protos/*.proto`.
/// - Any other target: the `.proto` files anywhere inside the target's own directory (exclude
///   them from the target in Package.swift, e.g. `exclude: ["echo.proto"]`, so SwiftPM does not
///   warn about unhandled files). Their import roots are their own directories plus
///   `<package>/Protos`, so a test proto may import etcd's protos; if the target depends on
///   KeelAPI, the generated code imports it.
///
/// Writes one `<name>.pb.swift` per .proto into the plugin work directory. All .proto files are
/// declared as inputs, so editing or adding one reruns the generator.
@main struct ProtoGenPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let sourceTarget = target as? SourceModuleTarget else { return [] }
        let packageProtos = context.package.directoryURL.appending(path: "Protos")
        let sharedProtos = protoFiles(in: packageProtos, recursive: false)

        var inputs: [URL]
        var roots: [URL]
        var imports: [String] = []
        if target.name == "KeelAPI" {
            inputs = sharedProtos
            roots = [packageProtos]
        } else {
            inputs = protoFiles(in: targetDirectory(sourceTarget, package: context.package), recursive: true)
            var dirs: [URL] = []
            for f in inputs {
                let d = f.deletingLastPathComponent()
                if !dirs.contains(d) { dirs.append(d) }
            }
            roots = dirs + [packageProtos]
            if target.recursiveTargetDependencies.contains(where: { $0.name == "KeelAPI" }) {
                imports.append("KeelAPI")
            }
        }
        guard !inputs.isEmpty else { return [] }

        let outDir = context.pluginWorkDirectoryURL.appending(path: "ProtoGen")
        var arguments = ["--output", outDir.path]
        for r in roots { arguments += ["--proto-path", r.path] }
        for m in imports { arguments += ["--import", m] }
        arguments += ["--module-name", sourceTarget.moduleName]
        arguments += inputs.map(\.path)

        let outputs = inputs.map { url -> URL in
            var base = url.lastPathComponent
            if base.hasSuffix(".proto") { base.removeLast(6) }
            return outDir.appending(path: base + ".pb.swift")
        }
        // Imported shared protos are inputs too: a change to them can change generated code.
        let allInputs = inputs + sharedProtos.filter { !inputs.contains($0) }
        return [
            .buildCommand(
                displayName: "ProtoGen: generating Swift for \(inputs.count) .proto file(s) of \(target.name)",
                executable: try context.tool(named: "ProtoGen").url,
                arguments: arguments,
                inputFiles: allInputs,
                outputFiles: outputs
            )
        ]
    }

    /// The target's directory. (`Target.directoryURL` needs tools version 6.1 and `directory`
    /// is deprecated, so derive it from the conventional layout and the target's source files.)
    func targetDirectory(_ target: SourceModuleTarget, package: Package) -> URL {
        let files = target.sourceFiles.map { $0.url.standardizedFileURL.path }
        for base in ["Sources", "Tests", "Plugins"] {
            let dir = package.directoryURL.appending(path: base).appending(path: target.name).standardizedFileURL
            if files.contains(where: { $0.hasPrefix(dir.path + "/") }) { return dir }
        }
        // Custom `path:`: the longest common directory of the sources.
        guard var common = files.first.map({ URL(fileURLWithPath: $0).deletingLastPathComponent().path }) else {
            return package.directoryURL
        }
        for f in files.dropFirst() {
            while !f.hasPrefix(common + "/") && common != "/" {
                common = URL(fileURLWithPath: common).deletingLastPathComponent().path
            }
        }
        return URL(fileURLWithPath: common)
    }

    func protoFiles(in dir: URL, recursive: Bool) -> [URL] {
        let fm = FileManager.default
        var result: [URL] = []
        if recursive {
            guard let e = fm.enumerator(at: dir, includingPropertiesForKeys: nil) else { return [] }
            for case let url as URL in e where url.pathExtension == "proto" {
                result.append(url.standardizedFileURL)
            }
        } else {
            let names = (try? fm.contentsOfDirectory(atPath: dir.path)) ?? []
            for n in names where n.hasSuffix(".proto") {
                result.append(dir.appending(path: n).standardizedFileURL)
            }
        }
        return result.sorted { $0.path < $1.path }
    }
}
