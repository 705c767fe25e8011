import GuestMemory
import KVM
import Synchronization

/// A vCPU's samples, counted by stack. Written on the vCPU's thread (at most `hz`
/// times a second, never on the exit path), read once the machine has stopped.
final class ProfileRecorder: Sendable {
    /// Distinct stacks kept; more are counted in `dropped` (a guest cannot grow this).
    static let maximumStacks = 100_000
    private let counts = Mutex<(samples: [ProfileSample: UInt64], dropped: UInt64)>(([:], 0))

    func record(_ sample: ProfileSample) {
        counts.withLock { c in
            if let n = c.samples[sample] { c.samples[sample] = n &+ 1 }
            else if c.samples.count < ProfileRecorder.maximumStacks { c.samples[sample] = 1 }
            else { c.dropped &+= 1 }
        }
    }

    var snapshot: (samples: [ProfileSample: UInt64], dropped: UInt64) { counts.withLock { $0 } }

    /// Where `vcpu` stands now: RIP, the CPL, and with `stacks` the return addresses up
    /// the RBP chain, each frame read through the guest's page tables (KVM_TRANSLATE)
    /// and bounded: at most `maximumDepth` frames, each further up the stack than the
    /// last, so a corrupt or hostile chain ends the walk rather than loops.
    static func sample(_ vcpu: VCPU, memory: GuestMemory, stacks: Bool) -> ProfileSample? {
        guard let regs = try? vcpu.registers(), let sregs = try? vcpu.specialRegisters() else { return nil }
        let protected = sregs.cr0 & 1 != 0
        let cpl = protected ? sregs.cs.dpl : 0
        let longMode = sregs.efer & (1 << 10) != 0 && sregs.cs.l != 0
        var frames = [sregs.cs.base &+ regs.rip]
        guard stacks, protected else { return ProfileSample(cpl: cpl, frames: frames) }
        let word: UInt64 = longMode ? 8 : 4
        let paging = sregs.cr0 & (1 << 31) != 0
        func read(_ linear: UInt64) -> UInt64? {
            guard linear % word == 0 else { return nil }
            let physical = paging ? ((try? vcpu.translate(linear)) ?? nil) : linear
            guard let physical else { return nil }
            return word == 8 ? try? memory.read(UInt64.self, at: GuestAddress(physical))
                             : (try? memory.read(UInt32.self, at: GuestAddress(physical))).map(UInt64.init)
        }
        var frame = sregs.ss.base &+ (longMode ? regs.rbp : regs.rbp & 0xFFFF_FFFF)
        while frames.count < ProfileSettings.maximumDepth, frame != 0 {
            let (slot, overflow) = frame.addingReportingOverflow(word)
            guard !overflow, let returnAddress = read(slot), returnAddress != 0, let next = read(frame) else { break }
            frames.append(returnAddress)
            guard next > frame else { break }
            frame = next
        }
        return ProfileSample(cpl: cpl, frames: frames)
    }
}
