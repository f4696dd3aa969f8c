import Foundation
import Testing

/// Runs Debian's `protoc` (an independent protobuf implementation) on the test protos.
enum Protoc {
    static let protoDir: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Protos").path
    }()

    static let executable: String? = {
        // protoc may exit before reading all of stdin; a write to its closed pipe must not kill us.
        signal(SIGPIPE, SIG_IGN)
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let p = "\(dir)/protoc"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }()

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs protoc with `args`, feeding `input` on stdin; returns stdout.
    static func run(_ args: [String], input: [UInt8]) throws -> [UInt8] {
        guard let exe = executable else { throw Failure(description: "protoc not installed (apt-get install protobuf-compiler)") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["-I", protoDir] + args
        let inPipe = Pipe(), outPipe = Pipe(), errPipe = Pipe()
        p.standardInput = inPipe
        p.standardOutput = outPipe
        p.standardError = errPipe
        try p.run()
        // Write stdin on another thread so a large output cannot deadlock us.
        let inHandle = inPipe.fileHandleForWriting
        let data = Data(input)
        let writer = Thread {
            // The throwing variant: protoc may exit early, and a broken pipe must not trap.
            try? inHandle.write(contentsOf: data)
            try? inHandle.close()
        }
        writer.start()
        let out = outPipe.fileHandleForReading.readDataToEndOfFile()
        let err = errPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw Failure(description: "protoc \(args.joined(separator: " ")) failed: \(String(decoding: err, as: UTF8.self))")
        }
        return [UInt8](out)
    }

    /// `protoc --encode=<type>`: text format -> binary.
    static func encode(_ type: String, text: String, file: String = "everything.proto") throws -> [UInt8] {
        try run(["--encode=\(type)", file], input: Array(text.utf8))
    }

    /// `protoc --decode=<type>`: binary -> text format.
    static func decode(_ type: String, _ bytes: [UInt8], file: String = "everything.proto") throws -> String {
        String(decoding: try run(["--decode=\(type)", file], input: bytes), as: UTF8.self)
    }
}
