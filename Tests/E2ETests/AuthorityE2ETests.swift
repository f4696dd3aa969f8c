import Foundation
import KeelTestSupport
import Testing

/// Debian's etcdctl 3.4 (grpc-go) given an endpoint with a scheme, `http://127.0.0.1:PORT`, sends
/// `:authority: http://127.0.0.1:PORT`; so does `endpoint status --cluster` with the members'
/// client URLs. etcd serves these; Keel's server must too (nghttp2's HTTP messaging checks used
/// to reset such streams with PROTOCOL_ERROR).
@Suite(.serialized) struct AuthorityE2ETests {
    @Test func endpointWithSchemeIsServed() async throws {
        let keel = try await KeelProcess.start()
        let url = "http://127.0.0.1:\(keel.port)"

        let status = try await Etcdctl.run(["endpoint", "status"], endpoints: [url])
        #expect(status.status.succeeded, "\(status)")
        #expect(status.stdout.hasPrefix(url + ", "), "\(status)")

        let put = try await Etcdctl.run(["put", "authority-key", "authority-value"], endpoints: [url])
        #expect(put.status.succeeded && put.stdout == "OK\n", "\(put)")

        let get = try await Etcdctl.run(["get", "authority-key"], endpoints: [url])
        #expect(get.status.succeeded && get.stdout == "authority-key\nauthority-value\n", "\(get)")

        // --cluster dials the members' advertised client URLs (with their scheme).
        let cluster = try await Etcdctl.run(["endpoint", "status", "--cluster"], endpoints: [keel.endpoint])
        #expect(cluster.status.succeeded, "\(cluster)")
        #expect(cluster.stdout.hasPrefix(url + ", "), "\(cluster)")

        #expect(await keel.stop() == .exited(0))
    }
}
