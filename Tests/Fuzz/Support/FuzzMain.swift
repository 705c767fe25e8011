import Glibc

/// A fuzz target's `main`. Built by scripts/fuzz (-DFUZZING, with libFuzzer linked in),
/// it hands the target to libFuzzer's driver; built as an ordinary executable, it runs
/// each file named on its command line through the target once, so that the kept crash
/// inputs (`Tests/Fuzz/*/regressions/`) are replayed by ordinary builds and tests.
public enum FuzzMain {
    public typealias Target = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

    public static func run(_ target: Target) -> Never {
        #if FUZZING
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, target))
        #else
        for path in CommandLine.arguments.dropFirst() {
            guard let f = fopen(path, "rb") else {
                print("cannot open \(path)")
                exit(66)
            }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = fread(&buffer, 1, buffer.count, f)
                if n <= 0 { break }
                bytes += buffer[..<n]
            }
            fclose(f)
            _ = bytes.withUnsafeBufferPointer { target($0.baseAddress, $0.count) }
            print("\(path): ok")
        }
        exit(0)
        #endif
    }
}

#if FUZZING
/// libFuzzer's entry for programs with their own `main` (SwiftPM names an executable's
/// main itself, so libFuzzer's cannot be used).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ target: FuzzMain.Target) -> CInt
#endif
