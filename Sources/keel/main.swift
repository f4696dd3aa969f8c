import ArgumentParser

/// Keel's own version and the etcd API version it speaks.
enum KeelVersion {
    static let keel = "0.1.0"
    static let etcdAPI = "3.5"
}

@main
struct Keel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keel",
        abstract: "Keel: a distributed key-value store that speaks the etcd v3 API."
    )

    @Flag(name: .long, help: "Print the version and exit.")
    var version = false

    func run() throws {
        print("keel Version: \(KeelVersion.keel)")
        print("API Version: \(KeelVersion.etcdAPI)")
    }
}
