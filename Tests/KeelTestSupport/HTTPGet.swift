// One plain HTTP/1.1 GET on a fresh TCP connection to 127.0.0.1 (what curl or Prometheus do on
// an etcd client port). Blocking, with a 10 s receive timeout: call it off the cooperative pool
// (e.g. NIOThreadPool) or accept the short block in a test. (SERVER)
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct HTTPGetReply: Sendable {
    public var status: Int
    /// The raw response head (status line and headers).
    public var head: String
    public var body: String
}

public func plainHTTPGet(port: Int, path: String) throws -> HTTPGetReply {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ChildProcessError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    let ok = withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard ok else { throw ChildProcessError("connect 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
    let req = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    var sent = 0
    while sent < req.count {
        let n = req[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw ChildProcessError("send: \(String(cString: strerror(errno)))") }
        sent += n
    }
    var data = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    // A socket with a receive timeout is never restarted after a signal (signal(7)): other tests
    // spawning processes make recv fail with EINTR, which is not the end of the reply. Bounded.
    let deadline = ContinuousClock.now + .seconds(30)
    while true {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
        if n < 0 && errno == EINTR && ContinuousClock.now < deadline { continue }
        if n <= 0 { break }
        data += buf[0..<n]
    }
    let text = String(decoding: data, as: UTF8.self)
    guard text.hasPrefix("HTTP/1.1 "), let sep = text.range(of: "\r\n\r\n") else {
        throw ChildProcessError("not an HTTP/1.1 reply: \(text.prefix(200))")
    }
    return HTTPGetReply(status: Int(text.dropFirst(9).prefix(3)) ?? 0, head: String(text[..<sep.lowerBound]),
                        body: String(text[sep.upperBound...]))
}
