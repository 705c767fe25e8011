import KVM

/// The memory operand of a ModRM-encoded instruction, decoded far enough to find the
/// address it names. The quirk emulator needs this for the few instructions it
/// completes with a memory operand (`ldmxcsr`, `stmxcsr`); it is not a general x86
/// decoder, and refuses what it does not understand (16-bit addressing) so that the
/// failure is reported rather than guessed at.
struct MemoryOperand: Equatable {
    /// Register numbers as the encoding has them: 0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP,
    /// 5 RBP, 6 RSI, 7 RDI, 8-15 R8-R15.
    var base: Int?
    var index: Int?
    var scale: Int = 1
    var displacement: Int64 = 0
    /// Displacement counts from the end of the instruction (64-bit mode only).
    var ripRelative = false
    /// A segment-override prefix (0x26 ES, 0x2E CS, 0x36 SS, 0x3E DS, 0x64 FS, 0x65 GS).
    var segmentOverride: UInt8?
    /// 8 or 4 bytes.
    var addressSize = 8

    /// One instruction of the form `[prefixes] 0F <opcode> ModRM ...` with a memory operand.
    struct Instruction: Equatable {
        /// The byte after 0x0F.
        var opcode: UInt8
        /// ModRM's reg field (the /digit that picks the instruction in a group).
        var reg: Int
        var operand: MemoryOperand
        var length: Int
    }

    /// Decodes a two-byte-opcode instruction with a memory ModRM operand, or nil when
    /// `bytes` is not one (register operand, operand-size or REP prefixes, 16-bit
    /// addressing, truncated bytes). `longMode` is CS.L: 64-bit code.
    static func decodeTwoByte(_ bytes: [UInt8], longMode: Bool) -> Instruction? {
        var i = 0
        var operand = MemoryOperand(addressSize: longMode ? 8 : 4)
        var rex: UInt8 = 0
        func next() -> UInt8? { i < bytes.count ? bytes[i] : nil }
        prefixes: while let b = next() {
            switch b {
            case 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65: operand.segmentOverride = b
            case 0x67: operand.addressSize = longMode ? 4 : 2
            case 0x66, 0xF2, 0xF3: return nil // they change what 0F xx means
            case 0xF0: return nil // LOCK makes these #UD
            default: break prefixes
            }
            i += 1
        }
        if longMode, let b = next(), b & 0xF0 == 0x40 { rex = b; i += 1 }
        guard operand.addressSize != 2, next() == 0x0F else { return nil }
        i += 1
        guard let opcode = next() else { return nil }
        i += 1
        guard let modrm = next() else { return nil }
        i += 1
        let mod = Int(modrm >> 6), reg = Int(modrm >> 3 & 7), rm = Int(modrm & 7)
        guard mod != 3 else { return nil }
        let rexB = Int(rex & 1) << 3, rexX = Int(rex >> 1 & 1) << 3
        var displacementSize = mod == 1 ? 1 : (mod == 2 ? 4 : 0)
        if rm == 4 {
            guard let sib = next() else { return nil }
            i += 1
            let scale = Int(sib >> 6), index = Int(sib >> 3 & 7) | rexX, base = Int(sib & 7)
            operand.scale = 1 << scale
            operand.index = index == 4 ? nil : index // index 100 without REX.X: none
            if base == 5 && mod == 0 {
                displacementSize = 4 // disp32, no base
            } else {
                operand.base = base | rexB
            }
        } else if rm == 5 && mod == 0 {
            displacementSize = 4
            operand.ripRelative = longMode // in 32-bit code: an absolute disp32
        } else {
            operand.base = rm | rexB
        }
        guard i + displacementSize <= bytes.count else { return nil }
        switch displacementSize {
        case 1: operand.displacement = Int64(Int8(bitPattern: bytes[i]))
        case 4:
            let raw = UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24
            operand.displacement = Int64(Int32(bitPattern: raw))
        default: break
        }
        i += displacementSize
        return Instruction(opcode: opcode, reg: reg, operand: operand, length: i)
    }

    /// The linear address the operand names for an instruction of `length` bytes at
    /// the vCPU's RIP. In 64-bit mode only FS and GS have a base; elsewhere the
    /// default segment is DS, or SS for RSP/RBP-based operands.
    func linearAddress(registers r: Registers, special s: SpecialRegisters, length: Int) -> UInt64 {
        var ea = UInt64(bitPattern: displacement)
        if ripRelative { ea &+= r.rip &+ UInt64(length) }
        if let base { ea &+= MemoryOperand.value(of: base, in: r) }
        if let index { ea &+= MemoryOperand.value(of: index, in: r) &* UInt64(scale) }
        if addressSize == 4 { ea &= 0xFFFF_FFFF }
        let longMode = s.cs.l != 0
        let segment: Segment? = switch segmentOverride {
        case 0x64: s.fs
        case 0x65: s.gs
        case 0x26: longMode ? nil : s.es
        case 0x2E: longMode ? nil : s.cs
        case 0x36: longMode ? nil : s.ss
        case 0x3E: longMode ? nil : s.ds
        default: longMode ? nil : (base == 4 || base == 5 ? s.ss : s.ds)
        }
        let linear = ea &+ (segment?.base ?? 0)
        return longMode ? linear : linear & 0xFFFF_FFFF
    }

    static func value(of register: Int, in r: Registers) -> UInt64 {
        switch register {
        case 0: r.rax
        case 1: r.rcx
        case 2: r.rdx
        case 3: r.rbx
        case 4: r.rsp
        case 5: r.rbp
        case 6: r.rsi
        case 7: r.rdi
        case 8: r.r8
        case 9: r.r9
        case 10: r.r10
        case 11: r.r11
        case 12: r.r12
        case 13: r.r13
        case 14: r.r14
        default: r.r15
        }
    }
}
