/// Saved state that cannot be taken back: truncated, corrupt, or of another layout.
public struct StateError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
