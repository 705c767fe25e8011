// Fuzz target: the JSON parser and the VM description decoder (what config files and
// PUT /vm/config hand the VMM). Any input is an error value or a description, never a
// crash; a description that decodes must survive its own JSON round trip, and its
// jail (if any) must plan without trapping. Built with
// libFuzzer by scripts/fuzz; without -DFUZZING it replays the files it is given.
import Control
import FuzzSupport
import Glibc

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size <= 1 << 16 else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let d = try? VMDescription.parse(text) {
        guard let again = try? VMDescription.parse(d.json.rendered), again == d else {
            fatalError("a description did not survive its JSON round trip: \(text)")
        }
        // A jail's limits are sums of user numbers: planning one must not trap.
        _ = d.jail?.plan(for: d, stateFolder: "/state/vm", workingDirectory: "/work", cgroupName: "vm")
    }
    return 0
}

@main
enum Main {
    static func main() { FuzzMain.run(fuzzOneInput) }
}
