import Boot
import VMM
/// What `swiftvisor run` prints after a guest stops: the summary a person reads, or
/// the same figures as JSON for scripts.
public struct RunReport: Sendable {
    public let result: MachineResult
    public let config: MachineConfig
    public let portName: @Sendable (UInt16) -> String
    public let exitCode: Int32
    public let vmmResident: (current: UInt64, peak: UInt64, anonymous: UInt64)?

    public init(result: MachineResult, config: MachineConfig, portName: @escaping @Sendable (UInt16) -> String,
                vmmResident: (current: UInt64, peak: UInt64, anonymous: UInt64)?) {
        self.result = result
        self.config = config
        self.portName = portName
        self.exitCode = ProcessExitCode.forStop(result.reason)
        self.vmmResident = vmmResident
    }

    static func ms(_ ns: UInt64) -> String {
        let tenths = ns / 100_000
        return "\(tenths / 10).\(tenths % 10) ms"
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    static func padLeft(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

    /// Why the guest stopped, in one line, and for a guest stopped from outside (time
    /// limit, signal, the console's quit key) where each vCPU was: with the kernel
    /// function when its symbols are known, that is where a hung guest hangs.
    public var stopLines: String {
        var out = "swiftvisor: \(result.reason.summary)\n"
        if result.reason == .timeLimit || result.reason == .hostStop || result.reason.kind == "signal" {
            let rips = result.perVCPU.map(\.finalRIP)
            let symbols = rips.contains { $0 != nil } ? FailureReport.symbols(in: config.effectiveSymbolFile) : nil
            let where_ = rips.enumerated().compactMap { i, rip in
                rip.map { "vCPU \(i) at RIP 0x\(String($0, radix: 16))" + (symbols?.name(for: $0).map { " <\($0)>" } ?? "") }
            }
            if !where_.isEmpty { out += "  " + where_.joined(separator: ", ") + "\n" }
        }
        return out
    }

    /// The human summary: why it stopped, what trapped to the VMM and why, and where
    /// the time went.
    public var text: String {
        let s = result.statistics
        var out = "\n" + stopLines
        out += "  \(config.vcpuCount) vCPU\(config.vcpuCount == 1 ? "" : "s"), \(ByteSize.format(config.memorySize)) RAM; "
        out += "set up in \(RunReport.ms(result.setupNanoseconds)), ran \(RunReport.ms(result.runNanoseconds))\n"
        out += "  VM exits that reached the VMM: \(s.totalExits)\n"
        for kind in ExitKind.allCases where s[kind] > 0 {
            out += "    \(RunReport.pad(kind.name, 14))\(RunReport.padLeft(String(s[kind]), 8))  \(kind.explanation)\n"
        }
        let ports = s.ports.sorted
        if !ports.isEmpty {
            out += "  busiest I/O ports:\n"
            for p in ports.prefix(5) {
                out += "    0x\(RunReport.pad(String(p.address, radix: 16), 6))\(RunReport.padLeft(String(p.count), 8))  \(portName(UInt16(p.address)))\n"
            }
        }
        let pages = s.mmio.sorted
        if !pages.isEmpty {
            out += "  busiest MMIO pages:\n"
            for p in pages.prefix(5) {
                out += "    0x\(RunReport.pad(String(p.address, radix: 16), 10))\(RunReport.padLeft(String(p.count), 8))\n"
            }
        }
        if result.unclaimedAccesses > 0 {
            out += "  accesses no device claimed (answered with all ones): \(result.unclaimedAccesses)\n"
        }
        let perExit = s.totalExits > 0 ? s.vmmNanoseconds / s.totalExits : 0
        out += "  time in the guest (inside KVM_RUN): \(RunReport.ms(s.guestNanoseconds)); "
        out += "in the VMM handling exits: \(RunReport.ms(s.vmmNanoseconds)) (\(perExit / 1000).\(perExit % 1000 / 100) µs per exit)\n"
        out += "  everything else the guest did (its computation, CPUID, MSRs, page tables) ran without leaving KVM\n"
        return out
    }

    public var json: JSONValue {
        let s = result.statistics
        var exits: [(String, JSONValue)] = [("total", .uint(s.totalExits))]
        for kind in ExitKind.allCases { exits.append((kind.name, .uint(s[kind]))) }
        var stop: [(String, JSONValue)] = [("kind", .string(result.reason.kind)), ("summary", .string(result.reason.summary))]
        if case let .exitPort(code) = result.reason { stop.append(("guestExitCode", .int(Int64(code)))) }
        if case let .signal(sig) = result.reason { stop.append(("signal", .int(Int64(sig)))) }
        var memory: [(String, JSONValue)] = [("guestBytes", .uint(config.memorySize)),
                                             ("guestResidentBytes", .uint(result.guestResidentBytes))]
        if let r = vmmResident {
            memory.append(("processPeakResidentBytes", .uint(r.peak)))
            memory.append(("vmmResidentBytes", .uint(r.peak > result.guestResidentBytes ? r.peak - result.guestResidentBytes : 0)))
            memory.append(("processAnonymousBytes", .uint(r.anonymous)))
            memory.append(("vmmAnonymousBytes", .uint(r.anonymous > result.guestResidentBytes ? r.anonymous - result.guestResidentBytes : 0)))
        }
        return .object([
            ("stop", .object(stop)),
            ("exitCode", .int(Int64(exitCode))),
            ("vcpus", .int(Int64(config.vcpuCount))),
            ("setupNanoseconds", .uint(result.setupNanoseconds)),
            ("firstExitNanoseconds", result.firstExitNanoseconds.map { .uint($0) } ?? .null),
            ("runNanoseconds", .uint(result.runNanoseconds)),
            ("guestNanoseconds", .uint(s.guestNanoseconds)),
            ("vmmNanoseconds", .uint(s.vmmNanoseconds)),
            ("entries", .uint(s.entries)),
            ("exits", .object(exits)),
            ("finalRIPs", .array(result.perVCPU.map { s in s.finalRIP.map { .uint($0) } ?? .null })),
            ("ports", .array(s.ports.sorted.map { .object([("port", .uint($0.address)), ("device", .string(portName(UInt16($0.address)))), ("count", .uint($0.count))]) })),
            ("mmioPages", .array(s.mmio.sorted.map { .object([("address", .uint($0.address)), ("count", .uint($0.count))]) })),
            ("unclaimedAccesses", .uint(result.unclaimedAccesses)),
            ("memory", .object(memory)),
        ])
    }
}
