/// Where a serial port's transmitted bytes go: a terminal, a log file, a test buffer.
public protocol SerialOutput: Sendable {
    func write(_ byte: UInt8)
}
