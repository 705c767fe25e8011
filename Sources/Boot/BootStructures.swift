/// Where the structures a protected- or long-mode guest needs before its own code runs
/// (GDT, stack, identity page tables) sit in one guest's memory: one 60 KiB block, laid
/// out as `BootLayout` describes from `base`.
///
/// Kernels always get the standard block (base 0: the low-memory spots Firecracker and
/// Cloud Hypervisor use). A flat binary may be loaded anywhere, including over those
/// spots (`--load-address 0x1000`), so `FlatBinary` moves the block to just after the
/// image when they would clash: only an image that leaves no room below 4 GiB is refused.
public struct BootStructures: Equatable, Sendable {
    /// Page-aligned; 0 for the standard block.
    public let base: UInt64

    public init(base: UInt64) { self.base = base }

    public static let standard = BootStructures(base: 0)
    /// From the block's base to the end of the last page directory.
    public static let size: UInt64 = BootLayout.firstFree

    public var gdt: UInt64 { base + BootLayout.gdt }
    public var stackTop: UInt64 { base + BootLayout.stackTop }
    public var pml4: UInt64 { base + BootLayout.pml4 }
    public var pdpt: UInt64 { base + BootLayout.pdpt }
    public var pageDirectories: UInt64 { base + BootLayout.pageDirectories }
    /// The identity map: PML4, PDPT and the four page directories, to the block's end.
    public var pageTables: Range<UInt64> { pml4..<(base + BootStructures.size) }
    /// The part of the block a guest must not overlap: from the GDT to the end.
    public var used: Range<UInt64> { gdt..<(base + BootStructures.size) }
}
