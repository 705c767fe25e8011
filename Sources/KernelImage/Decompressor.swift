import CLZ4
import CLzma
import CZlib
import CZstd

/// Decompresses a kernel payload with Debian's libraries (liblzma, zlib, libzstd,
/// liblz4). The output is capped, so a hostile file cannot make the host allocate
/// without bound; a corrupt stream is an error that names the format.
public enum Decompressor {
    public static let maximumOutput = 1 << 30
    /// What liblzma may allocate for one stream: kernels use 32 MiB (xz) or 64 MiB
    /// (lzma -9) dictionaries.
    public static let decoderMemoryLimit: UInt64 = 256 << 20
    /// Output is gathered this much at a time (a kernel is tens of MiB; a corrupt
    /// stream that ends at once costs no more than this).
    static let chunkSize = 256 << 10
    /// The first chunk is smaller: most streams that fail, fail at once, and a zeroed
    /// 256 KiB buffer per attempt was most of what the decompression fuzz target spent.
    static let firstChunkSize = 16 << 10

    /// After a pass that filled `chunk`, a bigger one (up to `chunkSize`).
    static func grow(_ chunk: inout [UInt8], produced: Int) {
        if produced == chunk.count && chunk.count < chunkSize {
            chunk = [UInt8](repeating: 0, count: min(chunk.count * 4, chunkSize))
        }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// `limit` bounds the output; `decoderMemory` what a decoder may allocate for its
    /// dictionary or window (the fuzz target uses a small one: a header claiming a
    /// large dictionary is then the limit's error at once, not a large allocation).
    public static func decompress(_ input: ArraySlice<UInt8>, format: CompressionFormat,
                                  limit: Int = maximumOutput, decoderMemory: UInt64 = decoderMemoryLimit) throws(Failure) -> [UInt8] {
        let data = Array(input)
        switch format {
        case .xz, .lzma: return try lzma(data, alone: format == .lzma, limit: limit, memory: decoderMemory)
        case .gzip: return try gzip(data, limit: limit)
        case .zstd: return try zstd(data, limit: limit, memory: decoderMemory)
        case .lz4: return try lz4(data, limit: limit)
        case .bzip2, .lzo:
            throw Failure(description: "the kernel is compressed with \(format.rawValue), which Swiftvisor cannot decompress on the host; use an xz, gzip, zstd or lz4 kernel, or an uncompressed vmlinux")
        }
    }

    static func lzma(_ data: [UInt8], alone: Bool, limit: Int, memory: UInt64) throws(Failure) -> [UInt8] {
        var stream = lzma_stream()
        // The decoder's memory is bounded too: a header may claim a 4 GiB dictionary,
        // which liblzma would allocate before reading a byte of data.
        let r = alone ? lzma_alone_decoder(&stream, memory) : lzma_stream_decoder(&stream, memory, 0)
        guard r == LZMA_OK else { throw Failure(description: "liblzma could not start (code \(r.rawValue))") }
        defer { lzma_end(&stream) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: firstChunkSize)
        var status = LZMA_OK
        data.withUnsafeBufferPointer { input in
            stream.next_in = input.baseAddress
            stream.avail_in = input.count
            while status == LZMA_OK && out.count <= limit {
                let produced = chunk.withUnsafeMutableBufferPointer { buffer in
                    stream.next_out = buffer.baseAddress
                    stream.avail_out = buffer.count
                    status = lzma_code(&stream, stream.avail_in == 0 ? LZMA_FINISH : LZMA_RUN)
                    out += buffer.prefix(buffer.count - stream.avail_out)
                    return buffer.count - stream.avail_out
                }
                grow(&chunk, produced: produced)
            }
        }
        guard out.count <= limit else { throw Failure(description: "the decompressed kernel is larger than \(limit >> 20) MiB") }
        if status == LZMA_MEMLIMIT_ERROR {
            throw Failure(description: "the \(alone ? "lzma" : "xz") kernel payload needs more than \(memory >> 20) MiB to decompress (its dictionary): not a kernel's")
        }
        // The kernel's xz payload is followed by its 4-byte size: data after the stream is fine.
        guard status == LZMA_STREAM_END || (status == LZMA_DATA_ERROR && !out.isEmpty && stream.avail_in <= 8) else {
            throw Failure(description: "the \(alone ? "lzma" : "xz") kernel payload is corrupt (liblzma code \(status.rawValue))")
        }
        return out
    }

    static func gzip(_ data: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Failure(description: "zlib could not start")
        }
        defer { inflateEnd(&stream) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: firstChunkSize)
        var status = Z_OK
        var input = data
        input.withUnsafeMutableBufferPointer { buffer in
            stream.next_in = buffer.baseAddress
            stream.avail_in = UInt32(buffer.count)
            while status == Z_OK && out.count <= limit {
                let produced = chunk.withUnsafeMutableBufferPointer { o in
                    stream.next_out = o.baseAddress
                    stream.avail_out = UInt32(o.count)
                    status = inflate(&stream, Z_NO_FLUSH)
                    out += o.prefix(o.count - Int(stream.avail_out))
                    return o.count - Int(stream.avail_out)
                }
                grow(&chunk, produced: produced)
            }
        }
        guard out.count <= limit else { throw Failure(description: "the decompressed kernel is larger than \(limit >> 20) MiB") }
        guard status == Z_STREAM_END else { throw Failure(description: "the gzip kernel payload is corrupt (zlib code \(status))") }
        return out
    }

    static func zstd(_ data: [UInt8], limit: Int, memory: UInt64) throws(Failure) -> [UInt8] {
        guard let stream = ZSTD_createDStream() else { throw Failure(description: "libzstd could not start") }
        defer { ZSTD_freeDStream(stream) }
        ZSTD_initDStream(stream)
        // The window a frame may ask for: zstd's default cap (2^27, what `zstd -22
        // --ultra` kernels use), lower if the memory allowed is.
        let windowLog = min(27, max(10, 63 - memory.leadingZeroBitCount))
        _ = ZSTD_DCtx_setParameter(stream, ZSTD_d_windowLogMax, Int32(windowLog))
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: firstChunkSize)
        var failure: String? = nil
        var finished = false
        data.withUnsafeBytes { raw in
            var input = ZSTD_inBuffer(src: raw.baseAddress, size: raw.count, pos: 0)
            // Stop after a complete frame when only the kernel's 4-byte size field is left.
            while input.pos < input.size && out.count <= limit && failure == nil && !(finished && input.size - input.pos <= 8) {
                let produced = chunk.withUnsafeMutableBytes { o in
                    var output = ZSTD_outBuffer(dst: o.baseAddress, size: o.count, pos: 0)
                    let r = ZSTD_decompressStream(stream, &output, &input)
                    if ZSTD_isError(r) != 0 {
                        // Trailing bytes after a complete frame (the kernel's size field) are not an error.
                        if finished && input.size - input.pos <= 8 { input.pos = input.size } else { failure = String(cString: ZSTD_getErrorName(r)) }
                    }
                    finished = r == 0
                    out += o.prefix(output.pos)
                    return output.pos
                }
                grow(&chunk, produced: produced)
            }
        }
        if let failure { throw Failure(description: "the zstd kernel payload is corrupt (\(failure))") }
        guard out.count <= limit else { throw Failure(description: "the decompressed kernel is larger than \(limit >> 20) MiB") }
        guard finished else { throw Failure(description: "the zstd kernel payload is truncated") }
        return out
    }

    /// The kernel uses lz4's legacy format: a magic, then blocks of (32-bit compressed
    /// size, data), each decompressing to at most 8 MiB.
    static func lz4(_ data: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        let magic: [UInt8] = [0x02, 0x21, 0x4C, 0x18]
        var i = 0
        var out: [UInt8] = []
        while i + 4 <= data.count {
            if Array(data[i..<(i + 4)]) == magic { i += 4; continue }
            let size = Int(UInt32(data[i]) | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2]) << 16 | UInt32(data[i + 3]) << 24)
            i += 4
            if size == 0 { break }
            guard size <= data.count - i else {
                if out.isEmpty { throw Failure(description: "the lz4 kernel payload is truncated") }
                break // the trailing size field
            }
            guard size <= Int(Int32.max) else { throw Failure(description: "the lz4 kernel payload has a block of \(size) bytes (more than lz4 allows)") }
            // Each block into fresh, uninitialised memory: only what lz4 wrote is kept. A
            // byte of lz4 input expands to at most 255 bytes of output, so a small block
            // gets a small buffer, not the format's 8 MiB.
            let (expanded, overflow) = size.multipliedReportingOverflow(by: 255)
            let capacity = overflow ? 8 << 20 : min(8 << 20, expanded + 64)
            var n: Int32 = 0
            let block = [UInt8](unsafeUninitializedCapacity: capacity) { dst, count in
                n = data.withUnsafeBytes { src in
                    LZ4_decompress_safe(src.baseAddress!.advanced(by: i).assumingMemoryBound(to: CChar.self),
                                        UnsafeMutableRawPointer(dst.baseAddress!).assumingMemoryBound(to: CChar.self),
                                        Int32(size), Int32(dst.count))
                }
                count = max(Int(n), 0)
            }
            guard n >= 0 else { throw Failure(description: "the lz4 kernel payload is corrupt (block at byte \(i))") }
            out += block
            guard out.count <= limit else { throw Failure(description: "the decompressed kernel is larger than \(limit >> 20) MiB") }
            i += size
        }
        guard !out.isEmpty else { throw Failure(description: "the lz4 kernel payload is empty") }
        return out
    }

    /// CRC-64 (ECMA-182, as xz uses) of `data`, for cache keys.
    public static func crc64(_ data: [UInt8]) -> UInt64 {
        data.withUnsafeBufferPointer { lzma_crc64($0.baseAddress, $0.count, 0) }
    }
}
