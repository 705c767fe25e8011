// Fuzz target: `swiftvisor run`'s command line, through the one option table both the
// fast path and ArgumentParser's commands use (RunFlags), then into a VM description
// and its validation, as `run` does before it starts anything. The input is the words,
// separated by NUL bytes. Any command line is a usage error (one line) or a valid
// description, never a crash: sizes, addresses, counts, timeouts and disk options are
// all user-typed numbers. Built with libFuzzer by scripts/fuzz; without -DFUZZING it
// replays the files it is given.
import Control
import FuzzSupport
import VMM

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size <= 1 << 14 else { return 0 }
    let words = UnsafeBufferPointer(start: data, count: size).split(separator: 0, omittingEmptySubsequences: false)
        .prefix(64).map { String(decoding: $0, as: UTF8.self) }
    _ = try? RunFlags.parse(words, fastPathOnly: true)
    guard let settings = try? RunFlags.parse(words) else { return 0 }
    if let d = try? settings.description(base: VMDescription(), prepareKernel: { path in (path, true) }, quirksHere: { false }) {
        // What validated must survive the trip the VMM process makes (a JSON document).
        guard let again = try? VMDescription.parse(d.json.rendered), again == d else {
            fatalError("a description from a command line did not survive its JSON round trip: \(words)")
        }
    }
    return 0
}

@main
enum Main {
    static func main() { FuzzMain.run(fuzzOneInput) }
}
