import Testing
import ProtoWire

@Suite struct GeneratedSmokeTests {
    @Test func roundTrip() throws {
        var m = Keel_Test.Scalars()
        m.i32 = -1
        m.str = "hi"
        let bytes = m.serializedBytes()
        #expect(bytes.count == m.serializedSize)
        let back = try Keel_Test.Scalars(serializedBytes: bytes)
        #expect(back == m)
    }
}
