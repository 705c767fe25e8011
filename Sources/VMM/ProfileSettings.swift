/// `--profile`: how often each vCPU is sampled, and whether its stack is walked.
public struct ProfileSettings: Equatable, Sendable {
    /// Where the folded stacks go (written by whoever runs the machine, at the end).
    public var path: String
    /// Samples a second per vCPU. 99 by default: not a divisor of the guest's own
    /// timer rates, so samples do not fall in step with its ticks.
    public var hz: Int
    /// Walk the frame-pointer chain (RBP) through guest memory, not only RIP.
    public var stacks: Bool

    public static let defaultHz = 99
    public static let maximumHz = 10_000
    /// Frames walked at most, leaf included.
    public static let maximumDepth = 32

    public init(path: String, hz: Int = ProfileSettings.defaultHz, stacks: Bool = false) {
        self.path = path
        self.hz = hz
        self.stacks = stacks
    }
}
