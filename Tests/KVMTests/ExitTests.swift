import Boot
import GuestMemory
import KVM
import TestSupport
import XCTest

/// Each test runs a few bytes of machine code and checks the exits KVM reports.
final class ExitTests: XCTestCase {
    func expectIO(_ e: VMExit, port: UInt16, _ direction: IOExit.Direction, size: Int = 1,
                  file: StaticString = #filePath, line: UInt = #line) -> IOExit? {
        guard case let .io(io) = e else { XCTFail("expected port I/O, got \(e)", file: file, line: line); return nil }
        XCTAssertEqual(io.port, port, file: file, line: line)
        XCTAssertEqual(io.direction, direction, file: file, line: line)
        XCTAssertEqual(io.size, size, file: file, line: line)
        return io
    }

    func expectHLT(_ e: VMExit, file: StaticString = #filePath, line: UInt = #line) {
        guard case .hlt = e else { return XCTFail("expected HLT, got \(e)", file: file, line: line) }
    }

    // MARK: real mode

    func testRealModePortOutInAndHLT() throws {
        let t = try TestVM(mode: .real, code: [
            0xBA, 0xF8, 0x03, // mov dx, 0x3f8
            0xB0, 0x41,       // mov al, 'A'
            0xEE,             // out dx, al
            0xEC,             // in al, dx
            0xF4,             // hlt
        ])
        let out = expectIO(try t.next(), port: 0x3F8, .out)
        XCTAssertEqual(out?.count, 1)
        XCTAssertEqual(out?.data[0], 0x41)
        let inn = expectIO(try t.next(), port: 0x3F8, .in)
        inn?.data.store(0x7A, size: 1) // answer the IN
        expectHLT(try t.next())
        XCTAssertEqual(try t.vcpu.registers().rax & 0xFF, 0x7A, "the guest must see the value the VMM put in the IN")
        XCTAssertEqual(try t.vcpu.registers().rip, 0x7C08, "RIP is past the HLT")
    }

    func testRealModeStringIOMovesSeveralElementsPerExit() throws {
        var code: [UInt8] = [
            0xBE, 0x20, 0x7C,       // mov si, 0x7c20   (source: "WXYZ")
            0xB9, 0x04, 0x00,       // mov cx, 4
            0xBA, 0xF8, 0x03,       // mov dx, 0x3f8
            0xFC,                   // cld
            0xF3, 0x6E,             // rep outsb
            0xBF, 0x40, 0x7C,       // mov di, 0x7c40   (destination)
            0xB9, 0x04, 0x00,       // mov cx, 4
            0xF3, 0x6C,             // rep insb
            0xF4,                   // hlt
        ]
        code += [UInt8](repeating: 0x90, count: 0x20 - code.count) + Array("WXYZ".utf8)
        let t = try TestVM(mode: .real, code: code)

        // KVM may deliver string I/O one element per exit (OUTS here) or several at
        // once (its emulator reads ahead for INS): the VMM must handle both.
        var sent: [UInt8] = []
        var inCounts: [Int] = []
        var received = 0
        var exit = try t.next()
        while case let .io(io) = exit, io.direction == .out {
            XCTAssertEqual(io.port, 0x3F8)
            sent += io.data.bytes
            exit = try t.next()
        }
        XCTAssertEqual(String(decoding: sent, as: UTF8.self), "WXYZ")
        let answer = Array("abcd".utf8)
        while case let .io(io) = exit, io.direction == .in {
            inCounts.append(io.count)
            for i in 0..<io.count { io.data[i] = answer[received + i] }
            received += io.count
            exit = try t.next()
        }
        XCTAssertEqual(inCounts, [4], "rep insb should reach the VMM as one exit moving 4 bytes")
        expectHLT(exit)
        XCTAssertEqual(try t.memory.read(bytes: 4, at: GuestAddress(0x7C40)), answer)
    }

    func testRealModeMMIOWriteAndRead() throws {
        // 64 KiB of RAM; 0x20000 (segment 0x2000) has none behind it.
        let t = try TestVM(mode: .real, code: [
            0xB8, 0x00, 0x20,             // mov ax, 0x2000
            0x8E, 0xD8,                   // mov ds, ax
            0xC6, 0x06, 0x10, 0x00, 0x5A, // mov byte [0x10], 0x5a
            0x8B, 0x1E, 0x20, 0x00,       // mov bx, [0x20]
            0xF4,                         // hlt
        ], memorySize: 0x10000)
        guard case let .mmio(w) = try t.next() else { return XCTFail("expected an MMIO write") }
        XCTAssertEqual(w.address, 0x20010)
        XCTAssertTrue(w.isWrite)
        XCTAssertEqual(w.length, 1)
        XCTAssertEqual(w.data.load(size: 1), 0x5A)
        guard case let .mmio(r) = try t.next() else { return XCTFail("expected an MMIO read") }
        XCTAssertEqual(r.address, 0x20020)
        XCTAssertFalse(r.isWrite)
        XCTAssertEqual(r.length, 2)
        r.data.store(0xBEEF, size: 2)
        expectHLT(try t.next())
        XCTAssertEqual(try t.vcpu.registers().rbx & 0xFFFF, 0xBEEF)
    }

    // MARK: protected mode

    func testProtectedModeMMIOAndPort() throws {
        let t = try TestVM(mode: .protected, code: [
            0xBB, 0x00, 0x00, 0x00, 0xD0,             // mov ebx, 0xd0000000
            0xC7, 0x03, 0xEF, 0xBE, 0xAD, 0xDE,       // mov dword [ebx], 0xdeadbeef
            0x8B, 0x43, 0x04,                         // mov eax, [ebx+4]
            0x66, 0xBA, 0x01, 0x05,                   // mov dx, 0x501
            0xEE,                                     // out dx, al
            0xF4,                                     // hlt
        ])
        guard case let .mmio(w) = try t.next() else { return XCTFail("expected an MMIO write") }
        XCTAssertEqual(w.address, 0xD000_0000)
        XCTAssertEqual(w.length, 4)
        XCTAssertEqual(w.data.load(size: 4), 0xDEAD_BEEF)
        guard case let .mmio(r) = try t.next() else { return XCTFail("expected an MMIO read") }
        XCTAssertEqual(r.address, 0xD000_0004)
        r.data.store(0x33, size: 4)
        let out = expectIO(try t.next(), port: 0x501, .out)
        XCTAssertEqual(out?.data[0], 0x33)
        expectHLT(try t.next())
        let sregs = try t.vcpu.specialRegisters()
        XCTAssertEqual(sregs.cr0 & 1, 1, "protected mode")
        XCTAssertEqual(sregs.cs.db, 1, "32-bit code")
    }

    func testTripleFaultIsAShutdownExit() throws {
        // An IDT of limit 0 (read from zeroed memory) makes #UD undeliverable: #GP,
        // then #DF, then a triple fault.
        let t = try TestVM(mode: .protected, code: [
            0x0F, 0x01, 0x1D, 0x00, 0x70, 0x00, 0x00, // lidt [0x7000]
            0x0F, 0x0B,                               // ud2
        ])
        let e = try t.next()
        guard case .shutdown = e else { return XCTFail("expected KVM_EXIT_SHUTDOWN, got \(e)") }
    }

    // MARK: long mode

    func testLongModeMMIOAndPort() throws {
        let t = try TestVM(mode: .long, code: [
            0x48, 0xBB, 0x00, 0x00, 0x00, 0xD0, 0, 0, 0, 0,   // mov rbx, 0xd0000000
            0x48, 0xC7, 0x03, 0x78, 0x56, 0x34, 0x12,         // mov qword [rbx], 0x12345678
            0x48, 0x8B, 0x43, 0x08,                           // mov rax, [rbx+8]
            0x66, 0xBA, 0x01, 0x05,                           // mov dx, 0x501
            0xEF,                                             // out dx, eax
            0xF4,                                             // hlt
        ])
        guard case let .mmio(w) = try t.next() else { return XCTFail("expected an MMIO write") }
        XCTAssertEqual(w.address, 0xD000_0000)
        XCTAssertEqual(w.length, 8)
        XCTAssertEqual(w.data.load(size: 8), 0x1234_5678)
        guard case let .mmio(r) = try t.next() else { return XCTFail("expected an MMIO read") }
        XCTAssertEqual(r.address, 0xD000_0008)
        XCTAssertEqual(r.length, 8)
        r.data.store(0xAABB_CCDD_1122_3344, size: 8)
        let out = expectIO(try t.next(), port: 0x501, .out, size: 4)
        XCTAssertEqual(out?.data.load(size: 4), 0x1122_3344)
        expectHLT(try t.next())
        let sregs = try t.vcpu.specialRegisters()
        XCTAssertNotEqual(sregs.efer & (1 << 10), 0, "EFER.LMA: long mode active")
        XCTAssertEqual(sregs.cs.l, 1, "64-bit code segment")
    }

    func testHLTReportsTheInterruptFlag() throws {
        let t = try TestVM(mode: .long, code: [0xFB, 0xF4, 0xFA, 0xF4]) // sti; hlt; cli; hlt
        guard case let .hlt(first) = try t.next() else { return XCTFail("expected HLT") }
        XCTAssertTrue(first)
        guard case let .hlt(second) = try t.next() else { return XCTFail("expected HLT") }
        XCTAssertFalse(second)
    }

    func testEmulationFailureCarriesItsInstruction() throws {
        // POPCNT with an MMIO operand goes to KVM's instruction emulator, which does not
        // implement it: KVM_EXIT_INTERNAL_ERROR, suberror 1.
        let t = try TestVM(mode: .long, code: [
            0x48, 0xBB, 0x00, 0x00, 0x00, 0xD0, 0, 0, 0, 0,   // mov rbx, 0xd0000000
            0xF3, 0x48, 0x0F, 0xB8, 0x03,                     // popcnt rax, [rbx]
            0xF4,
        ])
        let e = try t.next()
        guard case let .internalError(ie) = e else { return XCTFail("expected an internal error, got \(e)") }
        XCTAssertEqual(ie.suberror, 1, ie.description)
        XCTAssertEqual(try t.vcpu.registers().rip, 0x10_000A, "RIP stays on the failing instruction")
        if let bytes = ie.instructionBytes {
            XCTAssertEqual(Array(bytes.prefix(5)), [0xF3, 0x48, 0x0F, 0xB8, 0x03])
        }
    }

    func testImmediateExitKicksAVCPUOutOfTheGuest() throws {
        let t = try TestVM(mode: .long, code: [0xEB, 0xFE]) // jmp $
        t.vcpu.requestImmediateExit()
        guard case .interrupted = try t.vcpu.run() else { return XCTFail("expected an interrupted run") }
    }
}
