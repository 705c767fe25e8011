import ArgumentParser
import Control
import VMM

/// `swiftvisor trace FILE`: an exit trace (`run --trace FILE`) printed, filtered and
/// summarised. The reading and the summary are `TraceFile` and `TraceSummary` (VMM).
struct TraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Print and summarise an exit trace written by `run --trace FILE`.",
        discussion: "Each exit: seconds since the trace started, vCPU, kind, port or MMIO address, size and data, RIP, and the time the VMM spent on it. Then the summary: exits by kind, the busiest ports and MMIO pages, exits per second over time, and percentiles of the VMM's time per exit. Filters apply to both.")

    @Argument(help: "The trace file.") var file: String
    @Option(name: .long, help: "Only this vCPU's exits.") var vcpu: Int?
    @Option(name: .long, parsing: .singleValue, help: ArgumentHelp("Only exits of these kinds (io-in, io-out, mmio-read, mmio-write, hlt, shutdown, system-event, interrupted, internal-error, emulated, fail-entry, other); repeat or separate with commas.", valueName: "kind"))
    var kind: [String] = []
    @Option(name: .long, help: ArgumentHelp("Only port I/O at this port (0x3f8 or 1016).", valueName: "port")) var port: String?
    @Option(name: .long, help: ArgumentHelp("Only exits at or after this many seconds into the trace.", valueName: "seconds")) var from: Double?
    @Option(name: .long, help: ArgumentHelp("Only exits at or before this many seconds into the trace.", valueName: "seconds")) var to: Double?
    @Flag(name: .long, help: "Only the summary, not each exit.") var summary = false
    @Flag(name: .long, help: "JSON lines: one object per exit, then the summary's.") var json = false

    func run() throws {
        try verb(json) {
            var filter = TraceFilter(vcpu: vcpu)
            if !kind.isEmpty {
                var kinds = Set<UInt8>()
                for name in kind.flatMap({ $0.split(separator: ",").map(String.init) }) {
                    guard let k = ExitKind.allCases.first(where: { $0.name == name }) else {
                        throw CLIFailure(message: "--kind: '\(name)' is not an exit kind (\(ExitKind.allCases.map(\.name).joined(separator: ", ")))", code: ProcessExitCode.usage)
                    }
                    kinds.insert(UInt8(k.rawValue))
                }
                filter.kinds = kinds
            }
            if let port {
                guard let p = AddressValue.parse(port), p <= 0xFFFF else { throw CLIFailure(message: "--port: '\(port)' is not a port (0 to 0xffff)", code: ProcessExitCode.usage) }
                filter.port = p
            }
            filter.from = try nanoseconds(from, "--from")
            filter.to = try nanoseconds(to, "--to")
            let bytes: [UInt8]
            do { bytes = try FileContents.read(file, limit: 1 << 32) } catch let e as MachineError { throw CLIFailure(message: e.description, code: ProcessExitCode.forError(e)) }
            let trace: TraceFile
            do { trace = try TraceFile.parse(bytes) } catch let e as TraceFile.Invalid { throw CLIFailure(message: "\(file): \(e.description)", code: ProcessExitCode.badImage) }
            let records = trace.records.filter(filter.matches)
            let s = TraceSummary(records, vcpus: trace.vcpus, dropped: trace.dropped)
            var out: [String] = []
            if !summary { out = records.map { json ? Self.json($0).rendered : $0.line } }
            StandardStream.output(out.joined(separator: "\n") + (out.isEmpty ? "" : "\n") + (json ? Self.json(s).rendered + "\n" : (summary ? "" : "\n") + s.text))
        }
    }

    func nanoseconds(_ seconds: Double?, _ flag: String) throws -> UInt64? {
        guard let seconds else { return nil }
        guard seconds.isFinite, seconds >= 0, seconds <= VMDescription.maximumTimeoutSeconds else {
            throw CLIFailure(message: "\(flag): \(seconds) is not a number of seconds from 0 to \(Int(VMDescription.maximumTimeoutSeconds))", code: ProcessExitCode.usage)
        }
        return UInt64((seconds * 1e9).rounded())
    }

    static func json(_ r: TraceRecord) -> JSONValue {
        var o: [(String, JSONValue)] = [("time", .uint(r.time)), ("vcpu", .int(Int64(r.vcpu))), ("kind", .string(r.exitKind?.name ?? "kind-\(r.kind)"))]
        if r.isPortIO { o.append(("port", .string(TraceSummary.hex(r.address)))) }
        if r.isMMIO { o.append(("address", .string(TraceSummary.hex(r.address)))) }
        if r.flags & TraceRecord.hasAccess != 0 { o += [("size", .int(Int64(r.size))), ("data", .string(TraceSummary.hex(r.data)))] }
        o += [("rip", .string(TraceSummary.hex(r.rip))), ("vmmNanoseconds", .uint(UInt64(r.handlingNanoseconds)))]
        return .object(o)
    }

    static func json(_ s: TraceSummary) -> JSONValue {
        .object([("summary", .object([
            ("exits", .int(Int64(s.total))),
            ("spanNanoseconds", .uint(s.span)),
            ("perVCPU", .array(s.perVCPU.map { .int(Int64($0)) })),
            ("dropped", s.dropped.map { .array($0.map { .uint($0) }) } ?? .null),
            ("byKind", .object(s.byKind.map { ($0.name, .int(Int64($0.count))) })),
            ("ports", .array(s.ports.map { .object([("port", .string(TraceSummary.hex($0.port))), ("count", .int(Int64($0.count)))]) })),
            ("mmioPages", .array(s.pages.map { .object([("page", .string(TraceSummary.hex($0.page))), ("count", .int(Int64($0.count)))]) })),
            ("bucketNanoseconds", .uint(s.bucketNanoseconds)),
            ("timeline", .array(s.timeline.map { .int(Int64($0)) })),
            ("vmmNanoseconds", .object([("p50", .uint(s.handling.p50)), ("p90", .uint(s.handling.p90)), ("p99", .uint(s.handling.p99)), ("max", .uint(s.handling.max))])),
        ]))])
    }
}
