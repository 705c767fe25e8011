/// Where a device's MSI-X messages go: the VMM turns each vector's message into a KVM
/// route and an irqfd (devices never talk to KVM).
public protocol MSIVectorSink: Sendable {
    /// Sends vector `index`'s message, `address`/`data` as the guest programmed them.
    func send(vector: Int, address: UInt64, data: UInt32)
}

/// An MSI-X table and pending-bit array (PCI Local Bus 3.0, 6.8.2) with the function-
/// wide enable and mask from the capability's message control: what a vector does when
/// the device signals it (sent, or held pending while masked and sent on unmask).
public struct MSIXTable: Sendable, Equatable {
    public static let entrySize = 16
    public static let capabilityID: UInt8 = 0x11
    static let vectorMasked: UInt32 = 1

    struct Entry: Sendable, Equatable {
        var addressLow: UInt32 = 0
        var addressHigh: UInt32 = 0
        var data: UInt32 = 0
        var control: UInt32 = MSIXTable.vectorMasked
        var address: UInt64 { UInt64(addressHigh) << 32 | UInt64(addressLow) }
    }
    private var entries: [Entry]
    private var pending: [Bool]
    public private(set) var enabled = false
    public private(set) var functionMasked = false

    public init(vectors: Int) {
        entries = Array(repeating: Entry(), count: vectors)
        pending = Array(repeating: false, count: vectors)
    }

    public var count: Int { entries.count }
    public var tableSize: Int { entries.count * MSIXTable.entrySize }
    public var pendingArraySize: Int { (entries.count + 63) / 64 * 8 }

    /// The capability body after its id and next pointer: message control, table
    /// offset/BIR, PBA offset/BIR; only message control's enable and mask are writable.
    public static func capability(vectors: Int, bar: UInt8, tableOffset: UInt32, pendingOffset: UInt32) -> (body: [UInt8], writable: [UInt8]) {
        let control = UInt16(vectors - 1)
        var b: [UInt8] = [UInt8(truncatingIfNeeded: control), UInt8(truncatingIfNeeded: control >> 8)]
        for v in [tableOffset | UInt32(bar), pendingOffset | UInt32(bar)] {
            for i in 0..<4 { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
        }
        return (b, [0x00, 0xC0])
    }

    /// The guest wrote message control (bit 15 enable, bit 14 function mask). Returns
    /// the vectors to send now (pending ones just unmasked).
    public mutating func setControl(_ control: UInt16) -> [Int] {
        enabled = control & 0x8000 != 0
        functionMasked = control & 0x4000 != 0
        return releasePending()
    }

    mutating func releasePending() -> [Int] {
        guard enabled, !functionMasked else { return [] }
        var out: [Int] = []
        for i in entries.indices where pending[i] && entries[i].control & MSIXTable.vectorMasked == 0 {
            pending[i] = false
            out.append(i)
        }
        return out
    }

    /// Reads the table (`pba` false) or the pending-bit array.
    public func read(pba: Bool, offset: Int, size: Int) -> UInt64 {
        guard size == 4 || size == 8, offset >= 0, offset % size == 0 else { return 0 }
        var v: UInt64 = 0
        for part in 0..<(size / 4) {
            v |= UInt64(read32(pba: pba, offset: offset + 4 * part)) << (32 * UInt64(part))
        }
        return v
    }

    private func read32(pba: Bool, offset: Int) -> UInt32 {
        if pba {
            var word: UInt32 = 0
            for bit in 0..<32 {
                let i = offset * 8 + bit
                if i < pending.count && pending[i] { word |= 1 << UInt32(bit) }
            }
            return word
        }
        let i = offset / MSIXTable.entrySize
        guard i < entries.count else { return 0 }
        switch offset % MSIXTable.entrySize {
        case 0: return entries[i].addressLow
        case 4: return entries[i].addressHigh
        case 8: return entries[i].data
        default: return entries[i].control
        }
    }

    /// Writes the table (the pending-bit array is read-only). Returns the vectors to
    /// send now (an entry unmasked with its bit pending).
    public mutating func write(offset: Int, size: Int, value: UInt64) -> [Int] {
        guard size == 4 || size == 8, offset >= 0, offset % size == 0 else { return [] }
        for part in 0..<(size / 4) {
            let o = offset + 4 * part
            let i = o / MSIXTable.entrySize
            guard i < entries.count else { continue }
            let v = UInt32(truncatingIfNeeded: value >> (32 * UInt64(part)))
            switch o % MSIXTable.entrySize {
            case 0: entries[i].addressLow = v & ~3
            case 4: entries[i].addressHigh = v
            case 8: entries[i].data = v
            default: entries[i].control = v & MSIXTable.vectorMasked
            }
        }
        return releasePending()
    }

    /// The device signals `vector`: its message to send now, or nil (held pending while
    /// masked; dropped when MSI-X is off or the vector does not exist).
    public mutating func signal(_ vector: Int) -> (address: UInt64, data: UInt32)? {
        guard enabled, vector >= 0, vector < entries.count else { return nil }
        if functionMasked || entries[vector].control & MSIXTable.vectorMasked != 0 {
            pending[vector] = true
            return nil
        }
        return (entries[vector].address, entries[vector].data)
    }

    public func message(_ vector: Int) -> (address: UInt64, data: UInt32) {
        (entries[vector].address, entries[vector].data)
    }
}

extension MSIXTable {
    /// The table, pending bits, enable and function mask, for a snapshot.
    func encode(into w: inout StateWriter) {
        w.put(enabled); w.put(functionMasked)
        w.put(UInt32(entries.count))
        for (e, p) in zip(entries, pending) { w.put(e.addressLow); w.put(e.addressHigh); w.put(e.data); w.put(e.control); w.put(p) }
    }

    /// Reads what `encode` wrote into a table of the same size.
    mutating func restore(from r: inout StateReader) throws(StateError) {
        let enabled = try r.getBool(), masked = try r.getBool()
        let n = Int(try r.get(UInt32.self))
        guard n == entries.count else { throw StateError("an MSI-X table of \(n) vectors where the function has \(entries.count)") }
        var entries: [Entry] = [], pending: [Bool] = []
        for _ in 0..<n {
            entries.append(Entry(addressLow: try r.get(), addressHigh: try r.get(), data: try r.get(), control: try r.get() & MSIXTable.vectorMasked))
            pending.append(try r.getBool())
        }
        (self.entries, self.pending, self.enabled, self.functionMasked) = (entries, pending, enabled, masked)
    }
}
