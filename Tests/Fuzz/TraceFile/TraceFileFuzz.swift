// Fuzz target: exit-trace files as `swiftvisor trace` reads them (a user may hand it
// any file). Any input is an error or a trace whose summary and lines render, never a
// crash. Built with libFuzzer by scripts/fuzz; without -DFUZZING it replays the files
// it is given.
import FuzzSupport
import VMM

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size <= 1 << 16 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let trace = try? TraceFile.parse(bytes) {
        let summary = TraceSummary(trace.records.filter(TraceFilter(vcpu: 0, from: 1).matches), vcpus: trace.vcpus, dropped: trace.dropped)
        _ = summary.text
        _ = TraceSummary(trace.records, vcpus: trace.vcpus, dropped: trace.dropped).text
        for r in trace.records.prefix(64) { _ = r.line }
    }
    return 0
}

@main
enum Main {
    static func main() { FuzzMain.run(fuzzOneInput) }
}
