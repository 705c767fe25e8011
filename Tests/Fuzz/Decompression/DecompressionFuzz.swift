// Fuzz target: host-side kernel decompression (xz, lzma, gzip, zstd, lz4 through
// Debian's libraries), as the kernel cache runs it on a bzImage's payload. The first
// byte picks the format (so each decoder is reached whatever the magic says), the rest
// is the stream; the output limit is small so that a decompression bomb shows up as the
// limit's error, not as memory, and so is the decoders' (16 MiB: a header claiming a
// bigger dictionary or window is refused before the allocation, which under ASan costs
// an eighth of its size in shadow memory written per input). A corrupt stream is an error naming the format, never a
// crash or a read past the input. Built with libFuzzer by scripts/fuzz; without
// -DFUZZING it replays the files it is given.
import FuzzSupport
import KernelImage

let formats = CompressionFormat.allCases
let limit = 4 << 20

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size >= 1, size <= 1 << 20 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let format = formats[Int(bytes[0]) % formats.count]
    let stream = bytes[1...]
    _ = CompressionFormat.detect(stream)
    if let out = try? Decompressor.decompress(stream, format: format, limit: limit, decoderMemory: 16 << 20), out.count > limit {
        fatalError("\(format): \(out.count) bytes out, over the \(limit)-byte limit")
    }
    return 0
}

@main
enum Main {
    static func main() { FuzzMain.run(fuzzOneInput) }
}
