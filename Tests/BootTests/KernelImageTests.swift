import Boot
import CLZ4
import CLzma
import CZlib
import CZstd
import Glibc
import KernelImage
import TestSupport
import Foundation
import XCTest

/// Compression round trips through the same libraries, and bzImages whose payload is
/// compressed each way, as Linux's build does it.
final class KernelImageTests: XCTestCase {
    static let vmlinux = CraftedImage.elf64(code: [UInt8](repeating: 0x90, count: 50_000) + [0xF4])

    static func compress(_ data: [UInt8], _ format: CompressionFormat) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: data.count + 65536)
        var n = 0
        switch format {
        case .xz:
            var pos = 0
            let r = data.withUnsafeBufferPointer { i in out.withUnsafeMutableBufferPointer { o in
                lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, nil, i.baseAddress, i.count, o.baseAddress, &pos, o.count) } }
            precondition(r == LZMA_OK)
            n = pos
        case .gzip:
            var stream = z_stream()
            deflateInit2_(&stream, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
            var input = data
            input.withUnsafeMutableBufferPointer { i in out.withUnsafeMutableBufferPointer { o in
                stream.next_in = i.baseAddress; stream.avail_in = UInt32(i.count)
                stream.next_out = o.baseAddress; stream.avail_out = UInt32(o.count)
                deflate(&stream, Z_FINISH) } }
            n = Int(stream.total_out)
            deflateEnd(&stream)
        case .zstd:
            n = data.withUnsafeBytes { i in out.withUnsafeMutableBytes { o in ZSTD_compress(o.baseAddress, o.count, i.baseAddress, i.count, 3) } }
        case .lz4:
            // Legacy format: magic, then one block with its 32-bit size.
            var block = [UInt8](repeating: 0, count: Int(LZ4_compressBound(Int32(data.count))))
            let size = data.withUnsafeBytes { i in block.withUnsafeMutableBytes { o in
                LZ4_compress_default(i.baseAddress!.assumingMemoryBound(to: CChar.self), o.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(i.count), Int32(o.count)) } }
            let s = UInt32(size)
            return [0x02, 0x21, 0x4C, 0x18, UInt8(s & 0xFF), UInt8((s >> 8) & 0xFF), UInt8((s >> 16) & 0xFF), UInt8(s >> 24)] + block.prefix(Int(size))
        default:
            fatalError("no encoder for \(format) in the tests")
        }
        return Array(out.prefix(n))
    }

    /// Linux appends the decompressed size after the payload.
    static func withSizeTrailer(_ payload: [UInt8], size: Int) -> [UInt8] {
        payload + [UInt8(size & 0xFF), UInt8((size >> 8) & 0xFF), UInt8((size >> 16) & 0xFF), UInt8((size >> 24) & 0xFF)]
    }

    func testEveryFormatRoundTripsAndIsDetected() throws {
        for format: CompressionFormat in [.xz, .gzip, .zstd, .lz4] {
            let packed = Self.withSizeTrailer(Self.compress(Self.vmlinux, format), size: Self.vmlinux.count)
            XCTAssertEqual(CompressionFormat.detect(packed[...]), format)
            XCTAssertEqual(try Decompressor.decompress(packed[...], format: format), Self.vmlinux, format.rawValue)
        }
        XCTAssertEqual(CompressionFormat.detect(Array("BZh91AY".utf8)[...]), .bzip2)
        XCTAssertNil(CompressionFormat.detect([0x7F, 0x45, 0x4C, 0x46][...]))
    }

    func testCorruptTruncatedAndOversizedPayloadsAreErrors() throws {
        for format: CompressionFormat in [.xz, .gzip, .zstd, .lz4] {
            var packed = Self.compress(Self.vmlinux, format)
            let truncated = Array(packed.prefix(packed.count / 2))
            XCTAssertThrowsError(try Decompressor.decompress(truncated[...], format: format), "truncated \(format)")
            packed[packed.count / 2] ^= 0xFF
            packed[packed.count / 2 + 1] ^= 0xFF
            // Corruption is an error, or (zstd without a frame checksum) different bytes,
            // which the cache then refuses as not an ELF.
            if let garbled = try? Decompressor.decompress(packed[...], format: format) {
                XCTAssertNotEqual(garbled, Self.vmlinux, "corrupt \(format)")
            }
            let bomb = Self.compress([UInt8](repeating: 0, count: 4 << 20), format)
            XCTAssertThrowsError(try Decompressor.decompress(bomb[...], format: format, limit: 1 << 20), "limit \(format)") { e in
                XCTAssertTrue("\(e)".contains("larger than"), "\(e)")
            }
        }
        XCTAssertThrowsError(try Decompressor.decompress(Array("BZh9".utf8)[...], format: .bzip2)) { e in
            XCTAssertTrue("\(e)".contains("cannot decompress"), "\(e)")
        }
    }

    /// Found by the decompression fuzz target: an lzma header claiming a 4 GiB dictionary
    /// made liblzma allocate it before reading any data.
    func testAHugeLZMADictionaryIsRefusedBeforeItIsAllocated() {
        let header: [UInt8] = [0x5D, 0x00, 0x00, 0xFF, 0xFF] + [UInt8](repeating: 0xFF, count: 8) + [UInt8](repeating: 0, count: 32)
        XCTAssertThrowsError(try Decompressor.decompress(header[...], format: .lzma)) { e in
            XCTAssertTrue("\(e)".contains("needs more than 256 MiB"), "\(e)")
        }
    }

    func testBzImagePayloadIsExtractedOnceAndCached() throws {
        let cache = KernelCache(directory: "/tmp/swiftvisor-kernel-cache-\(getpid())")
        defer { _ = try? FileManager.default.removeItem(atPath: cache.directory) }
        for format: CompressionFormat in [.xz, .zstd] {
            let payload = Self.withSizeTrailer(Self.compress(Self.vmlinux, format), size: Self.vmlinux.count)
            var image = CraftedImage.bzImage(payload: payload)
            // payload_offset (relative to the protected-mode code) and payload_length.
            for i in 0..<4 { image[0x248 + i] = 0; image[0x24C + i] = UInt8(truncatingIfNeeded: payload.count >> (8 * i)) }
            let file = TemporaryFile(bytes: image)
            let outcome = try cache.prepare(file.path)
            guard case let .extracted(path, cached, detected) = outcome else { return XCTFail("not extracted: \(outcome) \({ () -> String in do { _ = try LinuxKernel(image); return "ok" } catch { return "\(error)" } }())") }
            XCTAssertFalse(cached)
            XCTAssertEqual(detected, format)
            XCTAssertEqual(try Array(Data(contentsOf: URL(fileURLWithPath: path))), Self.vmlinux)
            guard case let .extracted(again, cachedNow, _) = try cache.prepare(file.path) else { return XCTFail("not extracted") }
            XCTAssertEqual(again, path)
            XCTAssertTrue(cachedNow, "the second boot uses the cache")
        }
        // A vmlinux, a Multiboot kernel or anything else is left alone.
        let vmlinuxFile = TemporaryFile(bytes: Self.vmlinux), multibootFile = TemporaryFile(bytes: CraftedImage.multibootELF())
        XCTAssertEqual(try cache.prepare(vmlinuxFile.path), .unchanged(linux: true))
        XCTAssertEqual(try cache.prepare(multibootFile.path), .unchanged(linux: false))
        var notELF = CraftedImage.bzImage(payload: Self.compress([UInt8](repeating: 7, count: 1000), .xz))
        for i in 0..<4 { notELF[0x248 + i] = 0; notELF[0x24C + i] = UInt8(truncatingIfNeeded: (notELF.count - 0xA00) >> (8 * i)) }
        let notELFFile = TemporaryFile(bytes: notELF)
        XCTAssertThrowsError(try cache.prepare(notELFFile.path)) { e in
            XCTAssertTrue("\(e)".contains("does not hold a vmlinux ELF"), "\(e)")
        }
    }
}
