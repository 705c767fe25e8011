import CKVM
import CLinux
import Glibc
import KVM
import TestSupport
import XCTest

final class KVMSystemTests: XCTestCase {
    func testOpensDevAndReportsAPIVersionAndCapabilities() throws {
        try KVMTestHost.skipUnlessUsable()
        let kvm = try KVMSystem()
        XCTAssertEqual(kvm.apiVersion, 12)
        XCTAssertGreaterThan(try kvm.vcpuMmapSize(), 0)
        XCTAssertGreaterThanOrEqual(kvm.maxMemorySlots, 32)
        XCTAssertGreaterThanOrEqual(kvm.maxVCPUs, 1)
        XCTAssertNotEqual(kvm.check(.userMemory), 0)
        let cpuid = try kvm.supportedCPUID()
        XCTAssertTrue(cpuid.contains { $0.function == 0 }, "CPUID leaf 0 must be supported")
    }

    func testCapabilityNumbersMatchTheKernelHeader() {
        let expected: [Capability: Int32] = [
            .irqchip: KVM_CAP_IRQCHIP, .hlt: KVM_CAP_HLT, .userMemory: KVM_CAP_USER_MEMORY,
            .setTSSAddress: KVM_CAP_SET_TSS_ADDR, .extendedCPUID: KVM_CAP_EXT_CPUID, .nrVCPUs: KVM_CAP_NR_VCPUS,
            .nrMemorySlots: KVM_CAP_NR_MEMSLOTS, .pit: KVM_CAP_PIT, .syncMMU: KVM_CAP_SYNC_MMU,
            .irqInjectStatus: KVM_CAP_IRQ_INJECT_STATUS, .irqRouting: KVM_CAP_IRQ_ROUTING, .irqfd: KVM_CAP_IRQFD,
            .pit2: KVM_CAP_PIT2, .setIdentityMapAddress: KVM_CAP_SET_IDENTITY_MAP_ADDR, .ioeventfd: KVM_CAP_IOEVENTFD,
            .vcpuEvents: KVM_CAP_VCPU_EVENTS, .internalErrorData: KVM_CAP_INTERNAL_ERROR_DATA,
            .maxVCPUs: KVM_CAP_MAX_VCPUS, .tscDeadlineTimer: KVM_CAP_TSC_DEADLINE_TIMER,
            .immediateExit: KVM_CAP_IMMEDIATE_EXIT, .splitIRQChip: KVM_CAP_SPLIT_IRQCHIP,
            .x86UserSpaceMSR: KVM_CAP_X86_USER_SPACE_MSR, .syncRegisters: KVM_CAP_SYNC_REGS,
        ]
        for c in Capability.allCases {
            XCTAssertEqual(c.rawValue, expected[c], "\(c.kernelName)")
        }
    }

    func testMissingDeviceIsATypedErrorWithAHint() {
        XCTAssertThrowsError(try KVMSystem(path: "/nonexistent/kvm")) { error in
            guard let e = error as? KVMError else { return XCTFail("not a KVMError: \(error)") }
            XCTAssertEqual(e.errno, .noSuchFileOrDirectory)
            XCTAssertTrue(e.description.contains("open /nonexistent/kvm failed"))
            XCTAssertTrue(e.description.contains("modprobe"), e.description)
        }
    }

    func testPermissionHintSaysHowToGetAccess() {
        let hint = KVMSystem.hint(for: .permissionDenied)
        XCTAssertTrue(hint.contains("usermod -aG kvm"), hint)
    }

    func testRegistersMSRsAndEventsRoundTrip() throws {
        let t = try TestVM(mode: .real, code: [0xF4])
        var regs = try t.vcpu.registers()
        regs.rax = 0x1234_5678
        regs.rbx = 42
        try t.vcpu.setRegisters(regs)
        XCTAssertEqual(try t.vcpu.registers().rax, 0x1234_5678)
        XCTAssertEqual(try t.vcpu.registers().rbx, 42)

        // IA32_SYSENTER_CS (0x174) is writable on every KVM host.
        try t.vcpu.setMSRs([(index: 0x174, value: 0x10)])
        XCTAssertEqual(try t.vcpu.msrs([0x174]), [0x10])

        // The x87 control word round-trips on every host. (MXCSR does not on PVM
        // hosts, whose KVM_GET_FPU reports it as 0: see README "This host".)
        var fpu = try t.vcpu.fpu()
        fpu.fcw = 0x037E
        try t.vcpu.setFPU(fpu)
        XCTAssertEqual(try t.vcpu.fpu().fcw, 0x037E)

        let events = try t.vcpu.events()
        XCTAssertEqual(events.exception.injected, 0)
        try t.vcpu.setEvents(events)
        XCTAssertEqual(try t.vcpu.mpState(), 0) // runnable
    }
}

/// Interrupt plumbing the device model uses: the routing table and irqfds.
final class InterruptIoctlTests: XCTestCase {
    func testGSIRoutingKeepsThePCDefaultsAndTakesMSIRoutesAndIRQFDs() throws {
        try KVMTestHost.skipUnlessUsable()
        XCTAssertEqual(GSIRoute.pcDefaults.count, 40, "0-15 on PIC and IOAPIC, 16-23 on the IOAPIC")
        XCTAssertTrue(GSIRoute.pcDefaults.contains { $0.gsi == 4 && $0.route == .irqchip(chip: 0, pin: 4) })
        XCTAssertTrue(GSIRoute.pcDefaults.contains { $0.gsi == 9 && $0.route == .irqchip(chip: 1, pin: 1) })
        XCTAssertTrue(GSIRoute.pcDefaults.contains { $0.gsi == 20 && $0.route == .irqchip(chip: 2, pin: 20) })
        let kvm = try KVMSystem()
        let vm = try kvm.createVM()
        try vm.createIRQChip()
        try vm.setGSIRouting(GSIRoute.pcDefaults + [(24, .msi(address: 0xFEE0_0000, data: 0x41))])
        let fd = eventfd(0, Int32(EFD_CLOEXEC))
        defer { close(fd) }
        try vm.registerIRQFD(eventFD: fd, gsi: 24)
        XCTAssertThrowsError(try vm.registerIRQFD(eventFD: fd, gsi: 24), "one eventfd, one registration")
        try vm.unregisterIRQFD(eventFD: fd, gsi: 24)
        try vm.registerIOEvent(eventFD: fd, address: 0xD000_0050, length: 4, pio: false)
        try vm.unregisterIOEvent(eventFD: fd, address: 0xD000_0050, length: 4, pio: false)
        XCTAssertThrowsError(try vm.unregisterIOEvent(eventFD: fd, address: 0xD000_0050, length: 4, pio: false), "already gone")
    }
}
