// Fuzz target: the boot image parsers and loaders, on whatever file a user names with
// --kernel or --image: ELF (program headers, notes), Multiboot (the header, its a.out
// address fields, the information it writes), the bzImage setup header (protocol,
// payload location, command-line and initrd limits) and vmlinux's PVH note. Each
// recognised image is also loaded into a small guest, so every address and size a
// header claims meets GuestMemory's bounds; and a bzImage's payload is checked for a
// compression format, as the kernel cache does. Any input is an error or a boot state,
// never a crash. Built with libFuzzer by scripts/fuzz; without -DFUZZING it replays
// the files it is given.
import Boot
import FuzzSupport
import GuestMemory
import KernelImage

let guestSize: UInt64 = 16 << 20
let memory: GuestMemory = {
    do { return try GuestMemory(ranges: [(0, guestSize)]) } catch { fatalError("fuzz-kernel-images: guest memory: \(error)") }
}()
let memoryMap: [(base: UInt64, length: UInt64, type: UInt32)] = [(0, 0x9_FC00, 1), (0x10_0000, guestSize - 0x10_0000, 1)]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size <= 1 << 20 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if ELFImage.isELF(bytes), let elf = try? ELFImage(bytes) {
        // Every segment the parser accepted lies inside the file.
        for s in elf.segments {
            let (end, overflow) = s.fileOffset.addingReportingOverflow(s.fileSize)
            if s.fileOffset < 0 || s.fileSize < 0 || overflow || end > bytes.count { fatalError("a segment beyond the file") }
        }
    }
    if let multiboot = try? Multiboot(bytes) {
        _ = try? multiboot.load(into: memory, commandLine: "console=ttyS0", modules: [(Array(bytes.prefix(100)), "module")],
                                memoryMap: memoryMap)
    }
    if LinuxKernel.recognises(bytes), let kernel = try? LinuxKernel(bytes) {
        _ = try? kernel.load(into: memory, commandLine: "console=ttyS0", initrd: [1, 2, 3], memoryMap: memoryMap, rsdp: 0xE_0000)
        if kernel.pvhEntry != nil {
            _ = try? kernel.loadPVH(into: memory, commandLine: "", initrd: nil, memoryMap: memoryMap, rsdp: nil)
        }
        if let payload = kernel.payload {
            guard payload.lowerBound >= 0, payload.upperBound <= bytes.count else { fatalError("payload beyond the file") }
            _ = CompressionFormat.detect(bytes[payload])
        }
    }
    return 0
}

@main
enum Main {
    static func main() { FuzzMain.run(fuzzOneInput) }
}
