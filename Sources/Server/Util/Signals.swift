import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// Waits for the first of some signals (SIGINT / SIGTERM for a clean shutdown). The signals'
/// default actions are disabled; a dispatch source per signal reports them.
public enum SignalWaiter {
    public static func wait(for signals: [Int32]) async -> Int32 {
        let (stream, input) = AsyncStream<Int32>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let sources = install(signals, input)
        defer { for s in sources { s.cancel() } }
        for await sig in stream { return sig }
        return 0
    }

    private static func install(_ signals: [Int32], _ input: AsyncStream<Int32>.Continuation) -> [any DispatchSourceSignal] {
        signals.map { sig in
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { @Sendable in input.yield(sig) }
            s.resume()
            return s
        }
    }
}
