import CNGHTTP2
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP client for robustness tests: writes whatever bytes a test wants (valid or not)
/// and reads HTTP/2 frames back. Always used from a detached task, always closed.
final class RawSocket {
    let fd: Int32
    /// HPACK decoder for the server's header blocks: one per connection, since HPACK's dynamic
    /// table spans every stream on it.
    let inflater = H2Raw.Inflater()

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw POSIXError(.ECONNREFUSED) }
        var tv = timeval(tv_sec: 30, tv_usec: 0)  // bounded reads (generous: the whole unit group shares 2 cores)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    /// Abortive close (RST) when `reset`, else a normal close.
    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    private var buffer: [UInt8] = []

    /// The next frame, or nil at EOF / timeout.
    func readFrame() -> (type: UInt8, flags: UInt8, stream: Int32, payload: [UInt8])? {
        while true {
            if buffer.count >= 9 {
                let len = Int(buffer[0]) << 16 | Int(buffer[1]) << 8 | Int(buffer[2])
                if buffer.count >= 9 + len {
                    let f = (buffer[3], buffer[4],
                             Int32(bitPattern: UInt32(buffer[5]) << 24 | UInt32(buffer[6]) << 16 | UInt32(buffer[7]) << 8 | UInt32(buffer[8])) & 0x7fff_ffff,
                             Array(buffer[9..<(9 + len)]))
                    buffer.removeFirst(9 + len)
                    return f
                }
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            // A socket with a receive timeout is not restarted after a signal (signal(7)): EINTR
            // is not the end of the connection.
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// Reads frames until `stop` returns true or the connection ends; returns all of them.
    func readFrames(until stop: ((type: UInt8, flags: UInt8, stream: Int32, payload: [UInt8])) -> Bool)
        -> [(type: UInt8, flags: UInt8, stream: Int32, payload: [UInt8])] {
        var out: [(type: UInt8, flags: UInt8, stream: Int32, payload: [UInt8])] = []
        while let f = readFrame() {
            out.append(f)
            if stop(f) { break }
        }
        return out
    }

    enum EndStreamFrame { case any, headersOnly }

    /// Reads frames until END_STREAM on `stream` (on any frame, or only on a HEADERS frame) and
    /// returns the header fields of that stream's HEADERS frames, HPACK-decoded in order.
    func readHeaders(stream: Int32, untilEndStreamOn end: EndStreamFrame = .any) -> [(String, String)] {
        var headers: [(String, String)] = []
        _ = readFrames { f in
            if f.type == 1 && f.stream == stream { headers += inflater.decode(H2Raw.headerBlock(f)) }
            return f.stream == stream && f.flags & 1 != 0 && (end == .any || f.type == 1)
        }
        return headers
    }
}

enum H2Raw {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(type: UInt8, flags: UInt8 = 0, stream: Int32 = 0, payload: [UInt8], claimedLength: Int? = nil) -> [UInt8] {
        let len = claimedLength ?? payload.count
        var f: [UInt8] = [UInt8(len >> 16 & 0xff), UInt8(len >> 8 & 0xff), UInt8(len & 0xff), type, flags]
        let s = UInt32(bitPattern: stream)
        f += [UInt8(s >> 24), UInt8(s >> 16 & 0xff), UInt8(s >> 8 & 0xff), UInt8(s & 0xff)]
        return f + payload
    }

    static let settings = frame(type: 4, payload: [])
    static let settingsAck = frame(type: 4, flags: 1, payload: [])

    /// HPACK "literal header field without indexing, new name", no Huffman (names/values < 127 bytes).
    static func hpack(_ headers: [(String, String)]) -> [UInt8] {
        var out: [UInt8] = []
        for (n, v) in headers {
            out.append(0)
            out.append(UInt8(n.utf8.count)); out += Array(n.utf8)
            out.append(UInt8(v.utf8.count)); out += Array(v.utf8)
        }
        return out
    }

    static func grpcRequestHeaders(stream: Int32, path: String = "/echotest.Echo/Get", endStream: Bool = false) -> [UInt8] {
        let block = hpack([(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
                           ("content-type", "application/grpc"), ("te", "trailers")])
        return frame(type: 1, flags: 0x4 | (endStream ? 0x1 : 0), stream: stream, payload: block)
    }

    static func data(stream: Int32, _ payload: [UInt8], endStream: Bool = false) -> [UInt8] {
        frame(type: 0, flags: endStream ? 1 : 0, stream: stream, payload: payload)
    }

    /// Decodes header blocks with nghttp2's HPACK inflater (one per connection: HPACK is stateful).
    final class Inflater {
        var inflater: OpaquePointer?
        init() { nghttp2_hd_inflate_new(&inflater) }
        deinit { nghttp2_hd_inflate_del(inflater) }
        func decode(_ block: [UInt8]) -> [(String, String)] {
            var out: [(String, String)] = []
            var rest = block[...]
            while true {
                var nv = nghttp2_nv()
                var flags: Int32 = 0
                let n = rest.withUnsafeBufferPointer {
                    nghttp2_hd_inflate_hd2(inflater, &nv, &flags, $0.baseAddress, $0.count, 1)
                }
                if n < 0 { break }
                rest = rest.dropFirst(n)
                if flags & Int32(NGHTTP2_HD_INFLATE_EMIT.rawValue) != 0 {
                    out.append((String(decoding: UnsafeBufferPointer(start: nv.name, count: nv.namelen), as: UTF8.self),
                                String(decoding: UnsafeBufferPointer(start: nv.value, count: nv.valuelen), as: UTF8.self)))
                }
                if flags & Int32(NGHTTP2_HD_INFLATE_FINAL.rawValue) != 0 {
                    nghttp2_hd_inflate_end_headers(inflater)
                    break
                }
                if n == 0 && rest.isEmpty { break }
            }
            return out
        }
    }

    /// HEADERS payload without padding/priority (the server sends neither).
    static func headerBlock(_ f: (type: UInt8, flags: UInt8, stream: Int32, payload: [UInt8])) -> [UInt8] {
        var p = f.payload[...]
        var pad = 0
        if f.flags & 0x8 != 0 { pad = Int(p.first ?? 0); p = p.dropFirst() }
        if f.flags & 0x20 != 0 { p = p.dropFirst(5) }
        return Array(p.dropLast(pad))
    }
}
