/// A virtio-net device's Ethernet address: given (`mac=52:54:00:12:34:56`), or made up.
/// A made-up one is locally administered and unicast (first byte `x2`, `x6`, `xA`,
/// `xE`), so it can never be a vendor's; for a named VM it is derived from the name and
/// the device's id, so it is the same at every start (a DHCP lease or a neighbour
/// cache stays valid), and random for an unnamed one.
public struct MACAddress: Equatable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 6, bytes[0] & 1 == 0 else { return nil }
        self.bytes = bytes
    }

    /// `aa:bb:cc:dd:ee:ff` (or with '-'); refuses multicast addresses, which a NIC
    /// cannot have.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).count == 6
            ? text.split(separator: ":", omittingEmptySubsequences: false)
            : text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var b: [UInt8] = []
        for p in parts {
            guard p.count == 2, let v = UInt8(p, radix: 16) else { return nil }
            b.append(v)
        }
        guard b[0] & 1 == 0 else { return nil }
        bytes = b
    }

    /// The stable address for device `id` of the VM `name` (FNV-1a over both).
    public static func derived(vm name: String, device id: String) -> MACAddress {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in Array(name.utf8) + [0] + Array(id.utf8) {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return local(hash)
    }

    /// A random locally administered address.
    public static func random() -> MACAddress {
        var g = SystemRandomNumberGenerator()
        return local(g.next())
    }

    private static func local(_ v: UInt64) -> MACAddress {
        var b = (0..<6).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) }
        b[0] = (b[0] & 0xFC) | 0x02
        return MACAddress(checked: b)
    }

    private init(checked bytes: [UInt8]) { self.bytes = bytes }

    public var description: String {
        bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
    }
}
