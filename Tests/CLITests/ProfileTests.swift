import Boot
import Foundation
import Glibc
import TestSupport
import VMM
import XCTest

/// `--profile`: a guest whose hot loop sits three calls deep in named functions.
final class ProfileTests: XCTestCase {
    /// Long mode at 0x100000: start calls f1, f1 calls f2, f2 calls f3, which spins;
    /// each function sets up its frame (push rbp; mov rbp, rsp), as compilers do with
    /// frame pointers.
    static let chain: [UInt8] = {
        var code = [UInt8](repeating: 0x90, count: 0x40)
        func put(_ at: Int, _ bytes: [UInt8]) { code.replaceSubrange(at..<(at + bytes.count), with: bytes) }
        put(0x00, [0x48, 0xC7, 0xC4, 0x00, 0x00, 0x09, 0x00, 0x31, 0xED, 0xE8, 0x02, 0, 0, 0, 0xEB, 0xFE]) // mov rsp, 0x90000; xor ebp, ebp; call f1
        put(0x10, [0x55, 0x48, 0x89, 0xE5, 0xE8, 0x07, 0, 0, 0, 0xEB, 0xFE]) // f1: call f2
        put(0x20, [0x55, 0x48, 0x89, 0xE5, 0xE8, 0x07, 0, 0, 0, 0xEB, 0xFE]) // f2: call f3
        put(0x30, [0x55, 0x48, 0x89, 0xE5, 0xEB, 0xFE])                         // f3: jmp $
        return code
    }()
    static let map = "0000000000100000 T start\n0000000000100010 T f1\n0000000000100020 T f2\n0000000000100030 T f3\n"

    func profile(_ extra: [String]) throws -> (folded: String, stderr: String) {
        try KVMTestHost.skipUnlessUsable()
        let image = TemporaryFile(bytes: Self.chain)
        let map = TemporaryFile(bytes: Array(Self.map.utf8))
        let out = TemporaryFile(bytes: [])
        let r = try CLITests.launch(["run", "--image", image.path, "--symbols", map.path, "--profile", out.path, "--timeout", "1"] + extra)
        XCTAssertEqual(r.status, 124, r.stderr)
        return (try String(contentsOfFile: out.path, encoding: .utf8), r.stderr)
    }

    func count(_ folded: String, _ stack: String) -> Int? {
        folded.split(separator: "\n").first { $0.hasPrefix(stack + " ") }.flatMap { Int($0.split(separator: " ").last ?? "") }
    }

    func testTheHotFunctionTopsTheProfileAndItsCallersAreWalked() throws {
        let (folded, stderr) = try profile(["--profile-stacks"])
        // One stack, root first, the privilege level as its root frame.
        XCTAssertEqual(folded.split(separator: "\n").count, 1, folded)
        XCTAssertGreaterThan(count(folded, "cpl0;start;f1;f2;f3") ?? 0, 20, folded)
        XCTAssertTrue(stderr.contains("100.0%"), stderr)
        XCTAssertTrue(stderr.contains("0  f3\n"), stderr)
        XCTAssertTrue(stderr.contains("samples at 99 Hz"), stderr)
    }

    func testLeafOnlyByDefaultAndTheRateIsTheUsers() throws {
        let (folded, stderr) = try profile(["--profile-hz", "200"])
        XCTAssertGreaterThan(count(folded, "cpl0;f3") ?? 0, 40, folded)
        XCTAssertTrue(stderr.contains("samples at 200 Hz"), stderr)
        let bad = try CLITests.launch(["run", "--profile", "/tmp/x", "--profile-hz", "0"])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stderr.contains("profile-hz"), bad.stderr)
        XCTAssertEqual(try CLITests.launch(["run", "--profile-stacks"]).status, 64)
    }

    func testFoldedStacksNameWhatTheSymbolsKnowAndGiveAddressesOtherwise() {
        let profile = GuestProfile(samples: [ProfileSample(cpl: 0, frames: [0x100034, 0x100029]): 3,
                                             ProfileSample(cpl: 3, frames: [0x400000]): 1,
                                             ProfileSample(cpl: 0, frames: [0x100035, 0x100029]): 2],
                                   perVCPU: [4, 2], dropped: 0, hz: 99)
        let symbols = KernelSymbols(systemMap: Self.map)
        XCTAssertEqual(profile.folded(symbols: symbols), "cpl0;f2;f3 5\ncpl3;0x400000 1\n")
        XCTAssertEqual(profile.folded(symbols: nil), "cpl0;0x100029;0x100034 3\ncpl0;0x100029;0x100035 2\ncpl3;0x400000 1\n")
        let table = profile.table(symbols: symbols)
        XCTAssertTrue(table.hasPrefix("profile: 6 samples at 99 Hz (vCPU 0: 4, vCPU 1: 2)\n"), table)
        XCTAssertTrue(table.contains("  83.3%        5    0  f3\n"), table)
        XCTAssertTrue(table.contains("  16.6%        1    3  0x400000\n"), table)
    }
}
