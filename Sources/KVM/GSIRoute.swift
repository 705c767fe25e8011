import CKVM

/// Where an interrupt line (GSI) goes, one entry of `KVM_SET_GSI_ROUTING`'s table.
public enum GSIRoute: Sendable, Equatable {
    /// A pin of the in-kernel irqchip: `chip` 0 the master PIC, 1 the slave PIC,
    /// 2 the IOAPIC (`KVM_IRQCHIP_*`).
    case irqchip(chip: UInt32, pin: UInt32)
    /// A message-signalled interrupt (a PCI device's MSI or MSI-X vector).
    case msi(address: UInt64, data: UInt32)

    /// The routes KVM installs by itself with `KVM_CREATE_IRQCHIP`
    /// (`kvm_setup_default_irq_routing`): GSIs 0-15 to both the PICs and the IOAPIC,
    /// 16-23 to the IOAPIC alone. `KVM_SET_GSI_ROUTING` replaces the whole table, so
    /// any table Swiftvisor sets starts from these.
    public static let pcDefaults: [(gsi: UInt32, route: GSIRoute)] = {
        var routes: [(gsi: UInt32, route: GSIRoute)] = []
        for gsi in UInt32(0)..<24 {
            if gsi < 16 { routes.append((gsi, .irqchip(chip: gsi < 8 ? 0 : 1, pin: gsi % 8))) }
            routes.append((gsi, .irqchip(chip: 2, pin: gsi)))
        }
        return routes
    }()
}

/// `struct kvm_irq_routing` with its flexible array of entries, in one aligned
/// allocation.
struct GSIRoutingBuffer {
    private var storage: [UInt64]
    private static let header = MemoryLayout<kvm_irq_routing>.size
    private static let stride = MemoryLayout<kvm_irq_routing_entry>.stride

    init(_ routes: [(gsi: UInt32, route: GSIRoute)]) {
        storage = [UInt64](repeating: 0, count: (GSIRoutingBuffer.header + routes.count * GSIRoutingBuffer.stride + 7) / 8)
        storage.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(routes.count), toByteOffset: 0, as: UInt32.self)
            for (i, r) in routes.enumerated() {
                var e = kvm_irq_routing_entry()
                e.gsi = r.gsi
                switch r.route {
                case let .irqchip(chip, pin):
                    e.type = UInt32(KVM_IRQ_ROUTING_IRQCHIP)
                    e.u.irqchip.irqchip = chip
                    e.u.irqchip.pin = pin
                case let .msi(address, data):
                    e.type = UInt32(KVM_IRQ_ROUTING_MSI)
                    e.u.msi.address_lo = UInt32(truncatingIfNeeded: address)
                    e.u.msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
                    e.u.msi.data = data
                }
                raw.storeBytes(of: e, toByteOffset: GSIRoutingBuffer.header + i * GSIRoutingBuffer.stride, as: kvm_irq_routing_entry.self)
            }
        }
    }

    mutating func withHeader<R>(_ body: (UnsafeMutableRawPointer) -> R) -> R {
        storage.withUnsafeMutableBytes { body($0.baseAddress!) }
    }
}
