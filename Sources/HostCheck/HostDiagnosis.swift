import Control
import KVM
import VMM

/// One line of the doctor's report.
public struct DiagnosticCheck: Sendable, Equatable {
    public enum Status: String, Sendable { case pass, warn, fail, info }
    /// Stable identifier for scripts (`--json`), e.g. `device.access`, `cap.irqchip`.
    public let id: String
    public let title: String
    public let status: Status
    public let detail: String
    /// What to do about it, for anything but a pass.
    public let fix: String?

    public init(_ id: String, _ title: String, _ status: Status, _ detail: String, fix: String? = nil) {
        self.id = id; self.title = title; self.status = status; self.detail = detail; self.fix = fix
    }
}

/// The doctor's judgement of a host: its checks, whether VMs can run and how well,
/// and the exit code. A pure function of `HostFacts`, so it is tested on fixtures.
public struct HostDiagnosis: Sendable {
    public let checks: [DiagnosticCheck]
    public let hostClass: HostClass
    public let quirks: HostQuirks
    public let canRunVMs: Bool
    public let exitCode: Int32
    public let verdict: String

    /// Exit codes of `swiftvisor doctor`.
    public enum Code {
        public static let ok: Int32 = 0
        public static let noCPUSupport: Int32 = 10
        public static let noKVMModule: Int32 = 11
        public static let noDevice: Int32 = 12
        public static let noPermission: Int32 = 13
        public static let kvmUnusable: Int32 = 14
    }

    /// Capabilities Swiftvisor relies on, whether each is required, and what is lost
    /// without it.
    public static let capabilityNeeds: [(Capability, required: Bool, use: String)] = [
        (.userMemory, true, "guest RAM"),
        (.immediateExit, true, "stopping and pausing vCPUs promptly"),
        (.irqchip, true, "interrupts for Linux guests (in-kernel PIC, IOAPIC, LAPIC)"),
        (.pit2, true, "the timer Linux guests calibrate against"),
        (.extendedCPUID, true, "telling guests what the CPU offers"),
        (.setTSSAddress, false, "real-mode guests on Intel hosts"),
        (.ioeventfd, false, "virtio notifications without a user-space exit"),
        (.irqfd, false, "virtio interrupts without a user-space round trip"),
        (.vcpuEvents, false, "host quirks that inject exceptions"),
        (.internalErrorData, false, "detailed emulation-failure reports"),
        (.tscDeadlineTimer, false, "the TSC-deadline timer for guests"),
        (.nrMemorySlots, false, "more than 32 memory slots"),
        (.maxVCPUs, false, "more vCPUs than the recommended number"),
    ]

    public static func diagnose(_ f: HostFacts) -> HostDiagnosis {
        var checks: [DiagnosticCheck] = []
        let flags = f.cpu.flags
        let vmx = flags.contains("vmx"), svm = flags.contains("svm")
        let kvmWorks = f.device.exists && f.device.readWrite && f.kvm != nil
        let vendorModule = ["kvm_intel", "kvm_amd", "kvm_pvm"].first { f.modules.contains($0) }
        let wantedModule = vmx ? "kvm_intel" : svm ? "kvm_amd" : nil

        checks.append(DiagnosticCheck("cpu", "CPU", .info, "\(f.cpu.model) (\(f.cpu.vendor))"))

        // Hardware virtualization.
        if vmx || svm {
            checks.append(DiagnosticCheck("cpu.virtualization", "virtualization", .pass,
                                          vmx ? "Intel VT-x (vmx flag)" : "AMD-V (svm flag)"))
        } else if kvmWorks {
            checks.append(DiagnosticCheck("cpu.virtualization", "virtualization", .warn,
                "no vmx/svm flag, yet KVM works: this host is itself a VM whose KVM is nested or emulated\(vendorModule.map { " (\($0))" } ?? "")",
                fix: "nothing needed to run VMs; for full speed use a bare-metal host or a VM with nested virtualization (vmx/svm exposed)"))
        } else if flags.contains("hypervisor") {
            checks.append(DiagnosticCheck("cpu.virtualization", "virtualization", .fail,
                "no vmx/svm flag: this is a VM without nested virtualization",
                fix: "enable nested virtualization on the outer hypervisor (expose vmx/svm to this VM), or use a bare-metal host"))
        } else {
            checks.append(DiagnosticCheck("cpu.virtualization", "virtualization", .fail,
                "no vmx/svm flag: the CPU lacks VT-x/AMD-V or the firmware disabled it",
                fix: "enable Intel VT-x or AMD-V (SVM) in the BIOS/UEFI setup, then reboot"))
        }

        if let h = f.hypervisor {
            checks.append(DiagnosticCheck("host.hypervisor", "hypervisor", .info,
                "this host runs under \(h): guests here are nested and depend on what it offers"))
        } else {
            checks.append(DiagnosticCheck("host.hypervisor", "hypervisor", .pass, "bare metal (no hypervisor flag)"))
        }

        // Kernel modules.
        let moduleCheck: DiagnosticCheck
        if f.modules.contains("kvm"), let m = vendorModule {
            var detail = "kvm and \(m) loaded"
            for key in ["\(m)/nested", "\(m)/nested_pvm"] { if let v = f.parameters[key] { detail += " (\(key.split(separator: "/")[1])=\(v))" } }
            moduleCheck = DiagnosticCheck("kvm.module", "KVM module", .pass, detail)
        } else if kvmWorks {
            moduleCheck = DiagnosticCheck("kvm.module", "KVM module", .warn, "KVM modules not visible (containers hide /sys/module), but \(f.devicePath) works",
                                          fix: "nothing needed")
        } else if let wanted = wantedModule {
            let missing = f.modules.contains("kvm") ? wanted : "kvm and \(wanted)"
            moduleCheck = DiagnosticCheck("kvm.module", "KVM module", .fail, "\(missing) not loaded",
                fix: "sudo modprobe \(wanted); if it fails with 'Operation not supported', virtualization is disabled in the firmware: enable it in the BIOS/UEFI setup")
        } else {
            moduleCheck = DiagnosticCheck("kvm.module", "KVM module", .fail, "no KVM module loaded",
                fix: "this CPU offers no virtualization to load kvm_intel or kvm_amd for; see the virtualization check")
        }
        checks.append(moduleCheck)

        // The device.
        if !f.device.exists {
            checks.append(DiagnosticCheck("device.exists", f.devicePath, .fail, "\(f.devicePath) does not exist",
                fix: vendorModule != nil ? "the KVM module is loaded but created no device: check `dmesg | grep -i kvm` (virtualization disabled in the firmware?), or create it with `sudo mknod \(f.devicePath) c 10 232`"
                                         : "load the KVM module first (see above); udev then creates \(f.devicePath)"))
        } else if !f.device.isCharacterDevice {
            checks.append(DiagnosticCheck("device.exists", f.devicePath, .fail, "\(f.devicePath) exists but is not a character device",
                fix: "remove it and reload the KVM module: `sudo rm \(f.devicePath) && sudo modprobe -r \(wantedModule ?? "kvm_intel") && sudo modprobe \(wantedModule ?? "kvm_intel")`"))
        } else if !f.device.readWrite {
            let fix = f.device.group != "root" && !f.device.group.isEmpty
                ? "sudo usermod -aG \(f.device.group) \(f.user), then log out and in again (or run `newgrp \(f.device.group)`)"
                : "give a group access, e.g. `sudo groupadd -f kvm && sudo chgrp kvm \(f.devicePath) && sudo chmod 660 \(f.devicePath) && sudo usermod -aG kvm \(f.user)` (a udev rule makes it last)"
            checks.append(DiagnosticCheck("device.access", f.devicePath, .fail,
                "\(f.user) cannot read and write \(f.devicePath) (group \(f.device.group), mode \(String(f.device.mode, radix: 8)))", fix: fix))
        } else {
            checks.append(DiagnosticCheck("device.access", f.devicePath, .pass,
                "character device, group \(f.device.group), mode \(String(f.device.mode, radix: 8)), readable and writable by \(f.user)\(f.isRoot ? " (root)" : "")"))
        }

        // API and capabilities.
        var missingRequired: [String] = []
        if let k = f.kvm {
            if k.apiVersion == KVMSystem.expectedAPIVersion {
                checks.append(DiagnosticCheck("kvm.api", "KVM API", .pass, "version \(k.apiVersion)"))
            } else {
                checks.append(DiagnosticCheck("kvm.api", "KVM API", .fail, "version \(k.apiVersion), Swiftvisor needs \(KVMSystem.expectedAPIVersion)",
                                              fix: "use a mainstream Linux kernel (any since 2.6.22 speaks version 12)"))
                missingRequired.append("API version")
            }
            for (cap, required, use) in capabilityNeeds {
                let value = k.capabilities[cap] ?? 0
                let id = "cap." + cap.kernelName.dropFirst("KVM_CAP_".count).lowercased()
                if value > 0 {
                    let extra = cap == .nrMemorySlots || cap == .maxVCPUs ? ": \(value)" : ""
                    checks.append(DiagnosticCheck(id, cap.kernelName, .pass, "\(required ? "required" : "optional")\(extra): \(use)"))
                } else if required {
                    missingRequired.append(cap.kernelName)
                    checks.append(DiagnosticCheck(id, cap.kernelName, .fail, "required, missing: no \(use)", fix: "use a newer host kernel"))
                } else {
                    checks.append(DiagnosticCheck(id, cap.kernelName, .warn, "optional, missing: no \(use)", fix: "a newer host kernel adds it"))
                }
            }
        } else if f.device.exists && f.device.readWrite {
            checks.append(DiagnosticCheck("kvm.api", "KVM API", .fail, "cannot open \(f.devicePath): \(f.kvmError ?? "unknown error")",
                                          fix: "check `dmesg | grep -i kvm`"))
        }

        // The live probe.
        let hostClass = HostClass.classify(f.probe)
        var probeFailed = false
        if let p = f.probe {
            if let e = p.exitNanoseconds {
                checks.append(DiagnosticCheck("probe.exit", "exit round trip", .info,
                    "\(format(e / 1000, digits: 1)) µs per port-I/O exit (guest to VMM and back)"))
            }
            if let k = p.kernelInstructionsPerSecond, let u = p.userInstructionsPerSecond {
                checks.append(DiagnosticCheck("probe.user-mode", "guest user mode", .pass, "\(rate(u)) instructions/s"))
                if hostClass == .emulatedKernelMode {
                    checks.append(DiagnosticCheck("probe.kernel-mode", "guest kernel mode", .warn,
                        "\(rate(k)) instructions/s, \(format(u / k, digits: 0))x slower than user mode: KVM emulates guest kernel mode here; kernels boot slowly",
                        fix: "for fast guest kernels use a host with VT-x/AMD-V; here prefer small kernels and an uncompressed initramfs, and do heavy work in guest user mode"))
                } else {
                    checks.append(DiagnosticCheck("probe.kernel-mode", "guest kernel mode", .pass, "\(rate(k)) instructions/s: runs on the processor"))
                }
            }
            switch p.syscall {
            case .reachesKernel:
                checks.append(DiagnosticCheck("probe.syscall", "guest system calls", .pass, "SYSCALL from ring 3 reaches the guest kernel in ring 0"))
            case .staysInUserMode:
                checks.append(DiagnosticCheck("probe.syscall", "guest system calls", .warn,
                    "SYSCALL from ring 3 reaches its handler still in ring 3: an ordinary Linux guest's user space cannot make system calls here",
                    fix: "guests whose work runs in kernel mode or makes no system calls are fine; a Linux guest needs a kernel that completes such misdelivered system calls itself (see README \"This host\")"))
            case .failed:
                checks.append(DiagnosticCheck("probe.syscall", "guest system calls", .warn, "the system-call probe did not finish", fix: "see the probe errors"))
            case .notRun:
                break
            }
            for e in p.errors {
                probeFailed = true
                checks.append(DiagnosticCheck("probe.error", "probe", .fail, e, fix: "report this with the output of `swiftvisor doctor --json`"))
            }
            checks.append(DiagnosticCheck("host.class", "host class", .info, hostClass.rawValue))
        }
        let quirks = HostQuirks.forHost(hostClass, syscall: f.probe?.syscall ?? .notRun)
        if f.probe != nil {
            if quirks.isEmpty {
                checks.append(DiagnosticCheck("host.quirks", "host quirks", .pass, "none needed"))
            } else {
                checks.append(DiagnosticCheck("host.quirks", "host quirks", .info,
                    "Swiftvisor turns on for kernels: Linux command line += \(quirks.kernelCommandLine.joined(separator: " ")); completed by the VMM: \(quirks.emulatedInstructions.joined(separator: ", "))"))
            }
        }

        // Optional parts: networking and vsock.
        let tun = f.optionalDevices["/dev/net/tun"] == true
        if !tun {
            checks.append(DiagnosticCheck("optional.tun", "/dev/net/tun", .warn, "missing: no guest networking (--net needs a TAP)", fix: "sudo modprobe tun"))
        } else if f.isRoot {
            checks.append(DiagnosticCheck("optional.tun", "/dev/net/tun", .pass, "present: --net tap=NAME opens a TAP, and tap=auto (or a NAME that does not exist) makes one"))
        } else {
            checks.append(DiagnosticCheck("optional.tun", "/dev/net/tun", .info,
                "present: --net opens TAPs made for this user; making one (tap=auto) needs CAP_NET_ADMIN",
                fix: "sudo ip tuntap add dev tap0 mode tap user $(id -un) && sudo ip link set tap0 up"))
        }
        // Swiftvisor serves both devices in its own process; the kernel's vhost paths
        // would take their data path out of it.
        for (path, what, module) in [("/dev/vhost-net", "virtio-net", "vhost_net"), ("/dev/vhost-vsock", "vsock", "vhost_vsock")] {
            let id = "optional." + (path.split(separator: "/").last.map(String.init) ?? path)
            if f.optionalDevices[path] == true {
                checks.append(DiagnosticCheck(id, path, .info, "present; Swiftvisor serves \(what) in its own process (the vhost path is not used yet)"))
            } else {
                checks.append(DiagnosticCheck(id, path, .info, "missing: Swiftvisor serves \(what) in its own process, which needs no module (other VMMs use it)",
                                              fix: "sudo modprobe \(module)"))
            }
        }
        // The jailed launch (README "Jailed launch").
        if f.isRoot {
            checks.append(DiagnosticCheck("jail.namespaces", "--jail", .pass, "running as root: the jail can make its namespaces and mounts"))
        } else {
            checks.append(DiagnosticCheck("jail.namespaces", "--jail", .warn, "not root: --jail cannot make its namespaces and mounts",
                                          fix: "run jailed VMs as root (sudo swiftvisor run --jail ...)"))
        }
        if let mount = f.cgroupMount, f.cgroupControllers.contains("memory") || f.cgroupControllers.contains("cpu") {
            checks.append(DiagnosticCheck("jail.cgroup", "jail cgroup", .pass, "cgroup v2 at \(mount) offers \(f.cgroupControllers.joined(separator: ", ")): --jail limits memory and CPU"))
        } else {
            let why = f.cgroupMount.map { "cgroup v2 at \($0) offers no memory or cpu controller (cgroup v1 holds them)" } ?? "no cgroup v2 hierarchy"
            checks.append(DiagnosticCheck("jail.cgroup", "jail cgroup", .warn, "\(why): --jail runs without a cgroup (its resource limits still apply)",
                                          fix: "boot the host with systemd.unified_cgroup_hierarchy=1 (cgroup v2 only)"))
        }
        if f.hugePages > 0 {
            checks.append(DiagnosticCheck("optional.hugepages", "huge pages", .pass, "\(f.hugePages) reserved"))
        } else {
            checks.append(DiagnosticCheck("optional.hugepages", "huge pages", .warn, "none reserved: guest RAM uses 4 KiB pages",
                                          fix: "echo 512 | sudo tee /proc/sys/vm/nr_hugepages"))
        }

        // Verdict.
        let code: Int32
        if kvmWorks && missingRequired.isEmpty && !probeFailed {
            code = Code.ok
        } else if !f.device.exists || !f.device.isCharacterDevice {
            if vendorModule == nil && !f.modules.contains("kvm") {
                code = (vmx || svm) ? Code.noKVMModule : Code.noCPUSupport
            } else {
                code = Code.noDevice
            }
        } else if !f.device.readWrite {
            code = Code.noPermission
        } else {
            code = Code.kvmUnusable
        }
        let verdict: String
        switch code {
        case Code.ok:
            verdict = hostClass == .emulatedKernelMode
                ? "this host can run VMs; guest kernel mode is emulated here, so kernels run slowly"
                : "this host can run VMs" + (hostClass == .hardwareAssisted ? " at full speed" : "")
        case Code.noCPUSupport: verdict = "this host cannot run VMs: no hardware virtualization"
        case Code.noKVMModule: verdict = "this host cannot run VMs yet: the KVM module is not loaded"
        case Code.noDevice: verdict = "this host cannot run VMs yet: \(f.devicePath) is missing"
        case Code.noPermission: verdict = "this host can run VMs, but not as \(f.user): no access to \(f.devicePath)"
        default: verdict = "this host cannot run VMs: KVM is present but unusable"
        }
        return HostDiagnosis(checks: checks, hostClass: hostClass, quirks: quirks, canRunVMs: code == Code.ok,
                             exitCode: code, verdict: verdict)
    }

    static func rate(_ perSecond: Double) -> String {
        perSecond >= 1e9 ? "\(format(perSecond / 1e9, digits: 1)) G" : perSecond >= 1e6 ? "\(format(perSecond / 1e6, digits: 1)) M" : "\(format(perSecond / 1e3, digits: 1)) k"
    }

    static func format(_ v: Double, digits: Int) -> String {
        guard v.isFinite, abs(v) < 1e15 else { return "?" } // beyond what an Int holds once scaled
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let r = (v * scale).rounded() / scale
        if digits == 0 { return String(Int(r)) }
        let whole = Int(r), frac = Int(((r - Double(whole)) * scale).rounded())
        let f = String(frac)
        return "\(whole).\(String(repeating: "0", count: max(0, digits - f.count)))\(f)"
    }

    public var json: JSONValue {
        .object([
            ("verdict", .string(verdict)),
            ("canRunVMs", .bool(canRunVMs)),
            ("exitCode", .int(Int64(exitCode))),
            ("hostClass", .string(hostClass.rawValue)),
            ("quirks", .object([("kernelCommandLine", .array(quirks.kernelCommandLine.map { .string($0) })),
                                ("emulatedInstructions", .array(quirks.emulatedInstructions.map { .string($0) })),
                                ("reasons", .array(quirks.reasons.map { .string($0) }))])),
            ("checks", .array(checks.map { c in
                var o: [(String, JSONValue)] = [("id", .string(c.id)), ("title", .string(c.title)),
                                                ("status", .string(c.status.rawValue)), ("detail", .string(c.detail))]
                o.append(("fix", c.fix.map { .string($0) } ?? .null))
                return .object(o)
            })),
        ])
    }
}

extension HostDiagnosis {
    /// The probe's figures for `--json`.
    public static func probeJSON(_ p: ProbeResult?) -> JSONValue {
        guard let p else { return .null }
        func num(_ d: Double?) -> JSONValue { d.map { .double(($0 * 10).rounded() / 10) } ?? .null }
        return .object([
            ("exitNanoseconds", num(p.exitNanoseconds)),
            ("kernelLoopNanoseconds", num(p.kernelLoopNanoseconds)),
            ("userLoopNanoseconds", num(p.userLoopNanoseconds)),
            ("kernelInstructionsPerSecond", num(p.kernelInstructionsPerSecond)),
            ("userInstructionsPerSecond", num(p.userInstructionsPerSecond)),
            ("syscall", .string(p.syscall.rawValue)),
            ("errors", .array(p.errors.map { .string($0) })),
        ])
    }
}
