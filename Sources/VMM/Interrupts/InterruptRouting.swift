import Boot
import KVM
import Synchronization

/// The VM's GSI routing table: KVM's PC defaults (PICs and IOAPIC) plus the MSI routes
/// devices add, set as one table with `KVM_SET_GSI_ROUTING` (which replaces the whole
/// table each time, so the defaults must always be in it).
final class InterruptRouting: Sendable {
    let vm: VMFileDescriptor
    private struct State {
        var msiRoutes: [(gsi: UInt32, route: GSIRoute)] = []
        var nextGSI = AddressMap.firstMSIRoute
    }
    private let state = Mutex(State())
    /// KVM allows up to KVM_MAX_IRQ_ROUTES (4096) entries; the defaults take 40.
    static let maximumMSIRoutes = 1024

    init(vm: VMFileDescriptor) { self.vm = vm }

    /// Routes a new GSI to the MSI `address`/`data` and returns it (for an irqfd).
    func addMSIRoute(address: UInt64, data: UInt32) throws(KVMError) -> UInt32 {
        try state.withLock { (s: inout State) throws(KVMError) -> UInt32 in
            guard s.msiRoutes.count < InterruptRouting.maximumMSIRoutes else {
                throw KVMError("KVM_SET_GSI_ROUTING", errno: nil, hint: "more than \(InterruptRouting.maximumMSIRoutes) MSI routes")
            }
            let gsi = s.nextGSI
            s.msiRoutes.append((gsi, .msi(address: address, data: data)))
            do throws(KVMError) { try vm.setGSIRouting(GSIRoute.pcDefaults + s.msiRoutes) } catch { s.msiRoutes.removeLast(); throw error }
            s.nextGSI += 1
            return gsi
        }
    }

    /// Points an existing MSI route elsewhere (the guest re-programmed a vector).
    func updateMSIRoute(gsi: UInt32, address: UInt64, data: UInt32) throws(KVMError) {
        try state.withLock { (s: inout State) throws(KVMError) in
            guard let i = s.msiRoutes.firstIndex(where: { $0.gsi == gsi }) else { return }
            s.msiRoutes[i] = (gsi, .msi(address: address, data: data))
            try vm.setGSIRouting(GSIRoute.pcDefaults + s.msiRoutes)
        }
    }
}
