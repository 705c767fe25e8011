import Boot
import Glibc
import VMM

/// Turns a bzImage into the uncompressed vmlinux inside it, on the host, once: the
/// result is kept in a cache keyed by the bzImage's CRC-64 and size, so later boots of
/// the same file skip the work. On hosts whose KVM emulates guest kernel mode, a guest
/// decompressing its own kernel takes minutes; the host does it in a second.
public struct KernelCache: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// `$XDG_CACHE_HOME/swiftvisor/kernels`, else `~/.cache/swiftvisor/kernels`.
    public static func standard() -> KernelCache {
        if let x = getenv("XDG_CACHE_HOME"), x.pointee != 0 { return KernelCache(directory: String(cString: x) + "/swiftvisor/kernels") }
        let home = getenv("HOME").map { String(cString: $0) } ?? "/tmp"
        return KernelCache(directory: home + "/.cache/swiftvisor/kernels")
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public enum Outcome: Sendable, Equatable {
        /// Not a compressed bzImage: boot the file as it is. `linux` says whether it is a
        /// Linux kernel (bzImage or vmlinux) rather than a Multiboot one or anything else.
        case unchanged(linux: Bool)
        /// The vmlinux in the cache, and whether it was already there.
        case extracted(path: String, cached: Bool, format: CompressionFormat)
    }

    /// The file to boot for the kernel at `path`.
    public func prepare(_ path: String) throws(Failure) -> Outcome {
        // The head says what the file is (a Multiboot header lies in the first 8 KiB);
        // only a bzImage is read whole here: a vmlinux can be tens of megabytes, and the
        // VMM reads it anyway.
        let head: [UInt8]
        do { head = try FileContents.read(path, limit: 64 << 10) } catch { throw Failure(description: error.description) }
        let linux = (try? Multiboot.findHeader(head)) == nil && LinuxKernel.recognises(head)
        guard LinuxKernel.isBzImage(head) else { return .unchanged(linux: linux) }
        let bytes: [UInt8]
        do { bytes = try FileContents.read(path) } catch { throw Failure(description: error.description) }
        let kernel: LinuxKernel
        do { kernel = try LinuxKernel(bytes) } catch { return .unchanged(linux: linux) } // the VMM will say what is wrong
        guard kernel.format == .bzImage, let payload = kernel.payload,
              let format = CompressionFormat.detect(bytes[payload]) else { return .unchanged(linux: linux) }
        let key = String(Decompressor.crc64(bytes), radix: 16) + "-" + String(bytes.count)
        let target = directory + "/" + key + ".vmlinux"
        if access(target, R_OK) == 0 { return .extracted(path: target, cached: true, format: format) }
        let vmlinux: [UInt8]
        do { vmlinux = try Decompressor.decompress(bytes[payload], format: format) }
        catch { throw Failure(description: "\(path): \(error.description)") }
        do { _ = try ELFImage(vmlinux) } catch {
            throw Failure(description: "\(path): its \(format.rawValue) payload does not hold a vmlinux ELF (\(error.description))")
        }
        try store(vmlinux, at: target)
        return .extracted(path: target, cached: false, format: format)
    }

    func store(_ bytes: [UInt8], at target: String) throws(Failure) {
        if let why = FileSystem.makeDirectories(directory, mode: 0o755) {
            throw Failure(description: "cannot create the kernel cache \(directory): \(why)")
        }
        if let why = FileSystem.writeAtomically(bytes, to: target, mode: 0o644) {
            throw Failure(description: why)
        }
    }
}
