import Devices
import KVM
import Synchronization

/// One PCI function's MSI-X vectors as KVM delivers them: each vector, the first time
/// it fires, gets a GSI with an MSI route (`InterruptRouting`) and an irqfd on it;
/// afterwards a send is one eventfd write, plus a route update only when the guest has
/// re-programmed the vector's message.
final class MSIXRoutes: MSIVectorSink {
    let vm: VMFileDescriptor
    let routing: InterruptRouting
    private struct Vector {
        let irqfd: IRQFDInterrupt
        var address: UInt64
        var data: UInt32
    }
    private let vectors = Mutex<[Int: Vector]>([:])
    /// Sends that KVM refused (no route or irqfd could be made): counted, not fatal.
    let failures = Atomic<UInt64>(0)

    init(vm: VMFileDescriptor, routing: InterruptRouting) {
        self.vm = vm
        self.routing = routing
    }

    func send(vector: Int, address: UInt64, data: UInt32) {
        vectors.withLock { v in
            if var current = v[vector] {
                if current.address != address || current.data != data {
                    do throws(KVMError) { try routing.updateMSIRoute(gsi: current.irqfd.gsi, address: address, data: data) }
                    catch { failures.add(1, ordering: .relaxed); return }
                    current.address = address
                    current.data = data
                    v[vector] = current
                }
                current.irqfd.trigger()
                return
            }
            do throws(KVMError) {
                let gsi = try routing.addMSIRoute(address: address, data: data)
                let irqfd = try IRQFDInterrupt(vm: vm, gsi: gsi)
                v[vector] = Vector(irqfd: irqfd, address: address, data: data)
                irqfd.trigger()
            } catch {
                failures.add(1, ordering: .relaxed)
            }
        }
    }
}
