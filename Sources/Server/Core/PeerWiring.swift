import GRPC
import KeelAPI
import Logging
import NIOCore
import NIOPosix
import Raft

/// What the Raft loop needs from the peer transport (PEER's PeerTransport conforms): send
/// messages without blocking, stream a snapshot file. Kept as a protocol so the loop can be
/// driven by an in-memory transport in unit tests.
protocol RaftSender: Sendable {
    func send(_ messages: [Raft.Message])
    func sendSnapshot(_ message: Raft.Message, file: String)
}
