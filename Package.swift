// swift-tools-version:6.0
// Swiftvisor: a KVM virtual machine monitor. Module map: see README.md "Layout".
import PackageDescription

let package = Package(
    name: "Swiftvisor",
    products: [
        .executable(name: "swiftvisor", targets: ["swiftvisor"]),
        .executable(name: "swiftvisor-cli", targets: ["swiftvisor-cli"]),
        .library(name: "VMM", targets: ["VMM"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        .systemLibrary(name: "CKVM", path: "Modulemaps/CKVM"),
        .systemLibrary(name: "CLinux", path: "Modulemaps/CLinux"),
        .systemLibrary(name: "CLzma", path: "Modulemaps/CLzma"),
        .systemLibrary(name: "CZlib", path: "Modulemaps/CZlib"),
        .systemLibrary(name: "CZstd", path: "Modulemaps/CZstd"),
        .systemLibrary(name: "CLZ4", path: "Modulemaps/CLZ4"),
        .systemLibrary(name: "CURing", path: "Modulemaps/CURing"),
        .target(name: "KVM", dependencies: ["CKVM", .product(name: "SystemPackage", package: "swift-system")]),
        .target(name: "GuestMemory", dependencies: [.product(name: "SystemPackage", package: "swift-system")]),
        // Only for thread-sanitizer builds (SANITIZE_THREAD): a Mutex ThreadSanitizer sees.
        .target(name: "SanitizerSupport"),
        .target(name: "Devices", dependencies: ["GuestMemory", "CLinux", "CURing", "SanitizerSupport"]),
        .target(name: "Boot", dependencies: ["GuestMemory"], exclude: ["Guests"]),
        .target(name: "VMM", dependencies: ["KVM", "GuestMemory", "Devices", "Boot", "CLinux", "SanitizerSupport",
                                            .product(name: "SystemPackage", package: "swift-system")]),
        // `swiftvisor doctor`'s logic: host facts, the live probe, the diagnosis. Used by the
        // command, kept out of the long-running VMM process.
        .target(name: "HostCheck", dependencies: ["VMM", "Control", "KVM", "Boot", "Devices", "CLinux"]),
        // Host-side kernel decompression and its cache. Kept out of Boot so that the
        // long-running VMM process does not load four compression libraries.
        .target(name: "KernelImage", dependencies: ["Boot", "VMM", "CLzma", "CZlib", "CZstd", "CLZ4"]),
        // The control API (HTTP/JSON over a Unix socket), its client, the state directory.
        .target(name: "Control", dependencies: ["VMM", "Devices", "CLinux", "SanitizerSupport"], exclude: ["openapi.json"]),
        // The command users type and the VMM process, which runs a machine for its whole
        // life: a fast-path `run` and launch documents here, everything else handed to
        // swiftvisor-cli. It links no ArgumentParser and no Foundation, to start fast and
        // stay small (see README "Two executables").
        .executableTarget(name: "swiftvisor", dependencies: ["VMM", "Control", "Devices", "GuestMemory", "CLinux"]),
        // scripts/bench --virtio-blk: the block device model driven as a guest driver would,
        // beside its I/O engine alone.
        .executableTarget(name: "swiftvisor-blk-bench", dependencies: ["Devices", "GuestMemory", "VMM", "Control", "CLinux"]),
        // scripts/bench --virtio-net: the network and vsock device models driven as a guest
        // driver would, beside the host's own TAP and Unix-socket figures.
        .executableTarget(name: "swiftvisor-net-bench", dependencies: ["Devices", "GuestMemory", "VMM", "Control", "CLinux"]),
        // Fuzz targets (scripts/fuzz builds them with libFuzzer and -DFUZZING; otherwise
        // they replay the inputs they are given, such as their kept regressions).
        .target(name: "FuzzSupport", path: "Tests/Fuzz/Support"),
        .executableTarget(name: "fuzz-virtio-devices", dependencies: ["Devices", "GuestMemory", "CLinux", "FuzzSupport"],
                          path: "Tests/Fuzz/VirtioDevices", exclude: ["corpus", "regressions"]),
        .executableTarget(name: "fuzz-vm-description", dependencies: ["Control", "FuzzSupport"],
                          path: "Tests/Fuzz/VMDescription", exclude: ["corpus", "regressions"]),
        .executableTarget(name: "fuzz-http-request", dependencies: ["Control", "FuzzSupport"],
                          path: "Tests/Fuzz/HTTPRequest", exclude: ["corpus", "regressions"]),
        .executableTarget(name: "fuzz-kernel-images", dependencies: ["Boot", "GuestMemory", "KernelImage", "FuzzSupport"],
                          path: "Tests/Fuzz/KernelImages", exclude: ["corpus", "regressions"]),
        .executableTarget(name: "fuzz-kernel-symbols", dependencies: ["Boot", "FuzzSupport"],
                          path: "Tests/Fuzz/KernelSymbols", exclude: ["corpus", "regressions"]),
        .executableTarget(name: "fuzz-decompression", dependencies: ["KernelImage", "FuzzSupport"],
                          path: "Tests/Fuzz/Decompression", exclude: ["corpus", "regressions"]),
        .executableTarget(name: "fuzz-run-options", dependencies: ["Control", "VMM", "FuzzSupport"],
                          path: "Tests/Fuzz/RunOptions", exclude: ["corpus", "regressions"]),
        .executableTarget(name: "fuzz-trace-file", dependencies: ["VMM", "FuzzSupport"],
                          path: "Tests/Fuzz/TraceFile", exclude: ["corpus", "regressions"]),
        .executableTarget(name: "fuzz-snapshot-state", dependencies: ["Control", "Devices", "GuestMemory", "VMM", "FuzzSupport"],
                          path: "Tests/Fuzz/SnapshotState", exclude: ["corpus", "regressions"]),
        .executableTarget(name: "fuzz-device-bus", dependencies: ["Boot", "Devices", "GuestMemory", "VMM", "FuzzSupport"],
                          path: "Tests/Fuzz/DeviceBus", exclude: ["corpus", "regressions"]),
        // The commands as ArgumentParser types: help, errors and every verb; it validates,
        // then execs swiftvisor to run a VM.
        .executableTarget(name: "swiftvisor-cli", dependencies: [
            "VMM", "KVM", "Control", "KernelImage", "HostCheck", "Devices", "CLinux",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Helpers shared by the test targets (KVM availability, temporary files).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "CLinux", "GuestMemory", "Boot", "VMM", "TestSupport"]),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "GuestMemory", "CLinux", "SanitizerSupport"]),
        .testTarget(name: "BootTests", dependencies: ["Boot", "GuestMemory", "TestSupport", "KernelImage", "CLzma", "CZlib", "CZstd", "CLZ4"]),
        .testTarget(name: "VMMTests", dependencies: ["VMM", "Control", "KVM", "Boot", "Devices", "GuestMemory", "TestSupport", "HostCheck", "SanitizerSupport"]),
        .testTarget(name: "ControlTests", dependencies: ["Control", "VMM", "Boot", "Devices", "GuestMemory", "TestSupport"]),
        .testTarget(name: "HostCheckTests", dependencies: ["HostCheck", "Control", "VMM", "KVM", "TestSupport"]),
        // Drives the built executables as a user would; depends on them so they are built.
        .testTarget(name: "CLITests", dependencies: ["swiftvisor", "swiftvisor-cli", "VMM", "Control", "Boot", "Devices", "TestSupport", "SanitizerSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
