/// Swiftvisor's version: what `--version` prints and a snapshot records of its maker.
public enum VMMVersion {
    public static let current = "0.1.0"
}
