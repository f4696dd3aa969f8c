// MVCCStore as the watch hub's history source.
import KeelAPI
import Storage

extension MVCCStore: WatchEventSource {
    public var watchRevision: Int64 { revision }
    public var watchCompactedRevision: Int64 { compactedRevision }

    public func watchEvents(from start: Int64, to end: Int64, key: [UInt8], rangeEnd: [UInt8], prevKV: Bool,
                            limit: Int) throws(WatchHistoryError) -> [Mvccpb.Event] {
        do {
            return try events(from: start, to: end, key: key, rangeEnd: rangeEnd, prevKV: prevKV, limit: limit)
        } catch .compacted(let c) {
            throw .compacted(compactRevision: c)
        } catch {
            throw .failed(error.message)
        }
    }
}
