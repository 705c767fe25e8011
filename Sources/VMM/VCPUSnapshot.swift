/// A vCPU as `GET /vm/stats` shows it: its thread's phase and where the guest last was
/// (read on the vCPU's own thread when a client asked, so at most one request old).
public struct VCPUSnapshot: Sendable {
    public let index: Int
    public let phase: String
    /// Linear address (CS base + RIP); nil before the first sample.
    public let rip: UInt64?
    public let cpl: UInt8?
}
