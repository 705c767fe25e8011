// Fuzz target: the control API's HTTP request parser, fed as a client's bytes arrive
// (the server parses after every read). Any input is a request, "incomplete" or an
// HTTP error, never a crash; every prefix of the input is parsed too, as a server would
// see it. Built with libFuzzer by scripts/fuzz; otherwise a replayer.
import Control
import FuzzSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size <= 1 << 16 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // As the bytes arrive in a few reads: the whole, and prefixes at varying cuts.
    var cut = 1
    while cut < bytes.count {
        _ = try? HTTPRequest.parse(Array(bytes[..<cut]))
        cut = cut * 2 + 1
    }
    if case let .complete(_, consumed)? = try? HTTPRequest.parse(bytes) {
        precondition(consumed > 0 && consumed <= bytes.count, "a request consumed \(consumed) of \(bytes.count) bytes")
    }
    return 0
}

@main
enum Main {
    static func main() { FuzzMain.run(fuzzOneInput) }
}
