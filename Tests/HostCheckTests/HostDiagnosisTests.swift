import Foundation
import KVM
import TestSupport
import HostCheck
import VMM
import XCTest

/// The doctor's decisions on fixture hosts, then the real doctor on this machine.
final class HostDiagnosisTests: XCTestCase {
    static let allCapabilities: [Capability: Int] = Dictionary(uniqueKeysWithValues: Capability.allCases.map { ($0, $0 == .nrMemorySlots ? 32764 : 1) })
    static let kvmInfo = HostFacts.KVMInfo(apiVersion: 12, capabilities: allCapabilities)
    static let fastProbe = ProbeResult(exitNanoseconds: 1200, kernelLoopNanoseconds: 0.4, userLoopNanoseconds: 0.4, syscall: .reachesKernel)

    func cpuinfo(vendor: String, model: String, flags: String) -> HostFacts.CPU {
        HostFacts.parseCPUInfo("""
            processor\t: 0
            vendor_id\t: \(vendor)
            model name\t: \(model)
            flags\t\t: fpu vme de pse tsc msr pae \(flags) sse2

            processor\t: 1
            vendor_id\t: SomethingElse
            """)
    }

    func check(_ d: HostDiagnosis, _ id: String) -> DiagnosticCheck? { d.checks.first { $0.id == id } }

    func testParsesTheFirstProcessorOfCPUInfo() {
        let cpu = cpuinfo(vendor: "GenuineIntel", model: "Intel(R) Xeon(R) Gold 6338", flags: "vmx ept")
        XCTAssertEqual(cpu.vendor, "GenuineIntel")
        XCTAssertEqual(cpu.model, "Intel(R) Xeon(R) Gold 6338")
        XCTAssertTrue(cpu.flags.contains("vmx"))
        XCTAssertTrue(cpu.flags.contains("fpu"))
    }

    func testIntelBareMetalHost() {
        let f = HostFacts(cpu: cpuinfo(vendor: "GenuineIntel", model: "Xeon", flags: "vmx ept"), modules: ["kvm", "kvm_intel"],
                          parameters: ["kvm_intel/nested": "Y"], device: .init(exists: true), user: "ada",
                          kvm: Self.kvmInfo, optionalDevices: ["/dev/net/tun": true], probe: Self.fastProbe)
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, 0)
        XCTAssertTrue(d.canRunVMs)
        XCTAssertEqual(d.hostClass, .hardwareAssisted)
        XCTAssertEqual(d.quirks, .none)
        XCTAssertEqual(check(d, "cpu.virtualization")?.status, .pass)
        XCTAssertEqual(check(d, "cpu.virtualization")?.detail, "Intel VT-x (vmx flag)")
        XCTAssertEqual(check(d, "kvm.module")?.detail, "kvm and kvm_intel loaded (nested=Y)")
        XCTAssertEqual(check(d, "probe.kernel-mode")?.status, .pass)
        XCTAssertEqual(check(d, "host.quirks")?.detail, "none needed")
        XCTAssertEqual(d.verdict, "this host can run VMs at full speed")
        XCTAssertFalse(d.checks.contains { $0.status == .fail })
    }

    func testAMDHostWithoutTheModuleLoaded() {
        let f = HostFacts(cpu: cpuinfo(vendor: "AuthenticAMD", model: "EPYC 7763", flags: "svm npt"), modules: [],
                          device: .missing, kvm: nil, kvmError: "open /dev/kvm failed: No such file or directory")
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, HostDiagnosis.Code.noKVMModule)
        XCTAssertEqual(check(d, "cpu.virtualization")?.detail, "AMD-V (svm flag)")
        XCTAssertEqual(check(d, "kvm.module")?.status, .fail)
        XCTAssertTrue(check(d, "kvm.module")?.fix?.contains("sudo modprobe kvm_amd") == true)
        XCTAssertTrue(check(d, "kvm.module")?.fix?.contains("firmware") == true)
        XCTAssertEqual(check(d, "device.exists")?.status, .fail)
        XCTAssertFalse(d.canRunVMs)
    }

    func testBareMetalWithVirtualizationDisabledInFirmware() {
        let f = HostFacts(cpu: cpuinfo(vendor: "GenuineIntel", model: "Core i7", flags: "sse4_2"), modules: [],
                          device: .missing, kvm: nil)
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, HostDiagnosis.Code.noCPUSupport)
        XCTAssertTrue(check(d, "cpu.virtualization")?.fix?.contains("BIOS/UEFI") == true)
        XCTAssertEqual(d.verdict, "this host cannot run VMs: no hardware virtualization")
    }

    func testNestedHostWithoutFlagsButWorkingKVM() {
        let f = HostFacts(cpu: cpuinfo(vendor: "GenuineIntel", model: "Xeon", flags: "hypervisor"), hypervisor: "KVM",
                          modules: ["kvm", "kvm_intel"], device: .init(exists: true), kvm: Self.kvmInfo, probe: Self.fastProbe)
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, 0)
        XCTAssertEqual(check(d, "cpu.virtualization")?.status, .warn)
        XCTAssertTrue(check(d, "cpu.virtualization")?.detail.contains("nested or emulated") == true)
        XCTAssertEqual(check(d, "host.hypervisor")?.status, .info)
        XCTAssertEqual(d.hostClass, .hardwareAssisted)
    }

    func testGuestWithoutNestedVirtualization() {
        let f = HostFacts(cpu: cpuinfo(vendor: "GenuineIntel", model: "Xeon", flags: "hypervisor"), hypervisor: "Hyper-V",
                          modules: [], device: .missing, kvm: nil)
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, HostDiagnosis.Code.noCPUSupport)
        XCTAssertTrue(check(d, "cpu.virtualization")?.fix?.contains("enable nested virtualization") == true)
    }

    func testModuleLoadedButNoDevice() {
        let f = HostFacts(cpu: cpuinfo(vendor: "GenuineIntel", model: "Xeon", flags: "vmx"), modules: ["kvm", "kvm_intel"],
                          device: .missing, kvm: nil)
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, HostDiagnosis.Code.noDevice)
        XCTAssertTrue(check(d, "device.exists")?.fix?.contains("mknod /dev/kvm c 10 232") == true)
    }

    func testUserWithoutPermission() {
        let f = HostFacts(cpu: cpuinfo(vendor: "GenuineIntel", model: "Xeon", flags: "vmx"), modules: ["kvm", "kvm_intel"],
                          device: .init(exists: true, readWrite: false, group: "kvm", mode: 0o660), user: "ada",
                          kvm: nil, kvmError: "open /dev/kvm failed: Permission denied")
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, HostDiagnosis.Code.noPermission)
        let c = check(d, "device.access")
        XCTAssertEqual(c?.status, .fail)
        XCTAssertEqual(c?.detail, "ada cannot read and write /dev/kvm (group kvm, mode 660)")
        XCTAssertEqual(c?.fix, "sudo usermod -aG kvm ada, then log out and in again (or run `newgrp kvm`)")
        XCTAssertEqual(d.verdict, "this host can run VMs, but not as ada: no access to /dev/kvm")

        let rootOwned = HostFacts(cpu: f.cpu, modules: f.modules, device: .init(exists: true, readWrite: false, group: "root", mode: 0o600),
                                  user: "ada", kvm: nil)
        XCTAssertTrue(check(HostDiagnosis.diagnose(rootOwned), "device.access")?.fix?.contains("chgrp kvm /dev/kvm") == true)
    }

    func testPVMHostWithEmulatedKernelModeAndBrokenSystemCalls() {
        let probe = ProbeResult(exitNanoseconds: 11_000, kernelLoopNanoseconds: 1400, userLoopNanoseconds: 1.4, syscall: .staysInUserMode)
        let f = HostFacts(cpu: cpuinfo(vendor: "AuthenticAMD", model: "AMD EPYC", flags: "hypervisor"), hypervisor: "KVM",
                          modules: ["kvm", "kvm_pvm"], device: .init(exists: true, group: "root", mode: 0o600), user: "root", isRoot: true,
                          kvm: Self.kvmInfo, probe: probe)
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, 0, "PVM runs VMs")
        XCTAssertEqual(d.hostClass, .emulatedKernelMode)
        XCTAssertEqual(check(d, "kvm.module")?.detail, "kvm and kvm_pvm loaded")
        XCTAssertEqual(check(d, "cpu.virtualization")?.status, .warn)
        XCTAssertTrue(check(d, "cpu.virtualization")?.detail.contains("(kvm_pvm)") == true)
        XCTAssertEqual(check(d, "probe.kernel-mode")?.status, .warn)
        XCTAssertEqual(check(d, "probe.syscall")?.status, .warn)
        XCTAssertTrue(check(d, "probe.syscall")?.detail.contains("still in ring 3") == true)
        XCTAssertTrue(d.quirks.kernelCommandLine.contains("noxsave"))
        XCTAssertTrue(d.quirks.emulatedInstructions.contains { $0.hasPrefix("int3") })
        XCTAssertEqual(d.quirks.reasons.count, 2)
        XCTAssertEqual(d.verdict, "this host can run VMs; guest kernel mode is emulated here, so kernels run slowly")
    }

    func testMissingRequiredCapabilityOrBadAPIMakesKVMUnusable() {
        var caps = Self.allCapabilities
        caps[.immediateExit] = 0
        caps[.irqfd] = 0
        let f = HostFacts(cpu: cpuinfo(vendor: "GenuineIntel", model: "Xeon", flags: "vmx"), modules: ["kvm", "kvm_intel"],
                          device: .init(exists: true), kvm: .init(apiVersion: 12, capabilities: caps))
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, HostDiagnosis.Code.kvmUnusable)
        XCTAssertEqual(check(d, "cap.immediate_exit")?.status, .fail)
        XCTAssertEqual(check(d, "cap.irqfd")?.status, .warn, "optional capabilities only warn")
        let old = HostFacts(cpu: f.cpu, modules: f.modules, device: f.device, kvm: .init(apiVersion: 11, capabilities: Self.allCapabilities))
        XCTAssertEqual(HostDiagnosis.diagnose(old).exitCode, HostDiagnosis.Code.kvmUnusable)
    }

    func testAFailedProbeIsAFailure() {
        let probe = ProbeResult(exitNanoseconds: nil, kernelLoopNanoseconds: nil, userLoopNanoseconds: nil, syscall: .failed,
                                errors: ["kernel-mode loop: stopped: the time limit ran out"])
        let f = HostFacts(cpu: cpuinfo(vendor: "GenuineIntel", model: "Xeon", flags: "vmx"), modules: ["kvm", "kvm_intel"],
                          device: .init(exists: true), kvm: Self.kvmInfo, probe: probe)
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, HostDiagnosis.Code.kvmUnusable)
        XCTAssertEqual(d.hostClass, .unknown)
        XCTAssertEqual(check(d, "probe.error")?.status, .fail)
    }

    func testOptionalPartsOnlyWarn() {
        let f = HostFacts(cpu: cpuinfo(vendor: "GenuineIntel", model: "Xeon", flags: "vmx"), modules: ["kvm", "kvm_intel"],
                          device: .init(exists: true), kvm: Self.kvmInfo,
                          optionalDevices: ["/dev/net/tun": false, "/dev/vhost-vsock": false, "/dev/vhost-net": true], hugePages: 0)
        let d = HostDiagnosis.diagnose(f)
        XCTAssertEqual(d.exitCode, 0)
        XCTAssertEqual(check(d, "optional.tun")?.status, .warn)
        XCTAssertEqual(check(d, "optional.vhost-vsock")?.fix, "sudo modprobe vhost_vsock")
        XCTAssertEqual(check(d, "optional.vhost-net")?.status, .info, "not used: virtio-net is served in user space")
        XCTAssertEqual(check(d, "optional.hugepages")?.status, .warn)
    }

    func testJSONHasAStableShape() throws {
        let f = HostFacts(cpu: cpuinfo(vendor: "GenuineIntel", model: "Xeon", flags: "vmx"), modules: ["kvm", "kvm_intel"],
                          device: .init(exists: true), kvm: Self.kvmInfo, probe: Self.fastProbe)
        let text = HostDiagnosis.diagnose(f).json.rendered
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        XCTAssertEqual(Set(o.keys), ["verdict", "canRunVMs", "exitCode", "hostClass", "quirks", "checks"])
        let first = try XCTUnwrap((o["checks"] as? [[String: Any]])?.first)
        XCTAssertEqual(Set(first.keys), ["id", "title", "status", "detail", "fix"])
    }

    // MARK: this machine

    func testTheRealDoctorFindsKVMUsableHere() throws {
        try KVMTestHost.skipUnlessUsable()
        let facts = HostFacts.gather()
        let d = HostDiagnosis.diagnose(facts)
        XCTAssertEqual(d.exitCode, 0, d.checks.filter { $0.status == .fail }.map { "\($0.id): \($0.detail)" }.joined(separator: "; "))
        XCTAssertNotNil(facts.kvm)
        let probe = try XCTUnwrap(facts.probe)
        XCTAssertEqual(probe.errors, [])
        XCTAssertNotNil(probe.exitNanoseconds)
        XCTAssertNotEqual(d.hostClass, .unknown)
        XCTAssertNotEqual(probe.syscall, .failed)
        // Kernel-mode speed decides the class, and the quirks follow it.
        XCTAssertEqual(d.quirks.isEmpty, d.hostClass == .hardwareAssisted)
    }
}
