import KVM
import XCTest

/// The XSAVE area's header, without KVM: Linux copies a component out of the buffer
/// given to `KVM_SET_XSAVE` only when `XSTATE_BV` names it, so every write must mark
/// its component, and never one the guest may not use.
final class XSaveAreaTests: XCTestCase {
    func testWritingMXCSRMarksTheSSEComponentAndNothingElse() {
        var area = XSaveArea(permittedComponents: 0b111)
        XCTAssertEqual(area.xstateBV, 0, "a fresh area claims no component")
        area.mxcsr = 0x7F80
        XCTAssertEqual(area.mxcsr, 0x7F80)
        XCTAssertEqual(area.xstateBV, XSaveComponent.sse.mask, "MXCSR travels with SSE")
        XCTAssertEqual(area.xcompBV, 0, "the standard format KVM_SET_XSAVE takes")
        // Where the bits live: MXCSR at byte 24, XSTATE_BV at 512, both little-endian.
        let bytes = area.bytes
        XCTAssertEqual(bytes.count, 4096)
        XCTAssertEqual(Array(bytes[24..<28]), [0x80, 0x7F, 0, 0])
        XCTAssertEqual(Array(bytes[512..<520]), [0x02, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(Array(bytes[520..<528]), [0, 0, 0, 0, 0, 0, 0, 0])
    }

    func testMarkingKeepsWhatIsAlreadyPresentAndRespectsThePermittedSet() {
        var area = XSaveArea(permittedComponents: XSaveArea.legacyComponents)
        area.markPresent(.x87)
        area.mxcsr = 0x1F80
        XCTAssertEqual(area.xstateBV, 0b11)
        area.markPresent(.avx) // not in this guest's XCR0: never claimed
        XCTAssertEqual(area.xstateBV, 0b11)
        XCTAssertEqual(area.permittedComponents & XSaveComponent.avx.mask, 0)
    }

    func testMXCSRMaskDefaultsAsTheProcessorDocumentsIt() {
        XCTAssertEqual(XSaveArea().mxcsrMask, 0xFFBF, "a zero mask field means 0xFFBF (SDM vol. 1, 11.6.6)")
    }
}
