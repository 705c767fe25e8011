import CLinux
import Glibc
import Synchronization

/// A TAP interface opened for virtio-net: frames in and out through one non-blocking fd,
/// each `read`/`write` one Ethernet frame preceded by virtio's 12-byte net header
/// (`IFF_VNET_HDR`, `TUNSETVNETHDRSZ` 12: the VERSION_1 header, `num_buffers`
/// included), so a guest's frame goes to the kernel as the guest laid it out, with its
/// checksum and segmentation offloads, and back the same way.
public final class TapDevice: Sendable {
    /// The header in front of every frame (virtio 1.2, 5.1.6: virtio_net_hdr with
    /// num_buffers, always there with VERSION_1).
    public static let headerSize = 12

    public let fd: Int32
    /// The interface's name as the kernel has it (`tap=auto` learns it here).
    public let name: String
    /// The name it was opened by (`svtap%d` for an unnamed VM's `tap=auto`).
    public let requestedName: String
    /// Offloads (TUN_F_*) this host's TAP accepts: what the device may offer the guest
    /// for receiving (checksum, TSO4/6, UFO where the kernel still has it).
    public let supportedOffloads: UInt32
    /// Whether this process created the interface (it disappears when the fd closes).
    public let created: Bool

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static let allOffloads = CLINUX_TUN_F_CSUM | CLINUX_TUN_F_TSO4 | CLINUX_TUN_F_TSO6 | CLINUX_TUN_F_TSO_ECN | CLINUX_TUN_F_UFO

    /// Opens the TAP interface `name` (at most 15 bytes), creating it if it does not
    /// exist and the process may (CAP_NET_ADMIN), and bringing a created one up. A
    /// plain TAP (no IFF_MULTI_QUEUE) unless `multiQueue`.
    public init(name: String, multiQueue: Bool = false) throws(Failure) {
        guard name.utf8.count <= 15, !name.utf8.contains(0), !name.contains("/") else {
            throw Failure(description: "TAP name '\(name)' is not an interface name (at most 15 bytes, no '/')")
        }
        // A name with %d (the kernel numbers it) never names an existing interface.
        let existed = !name.contains("%") && clinux_interface_exists(name) == 1
        let fd = Glibc.open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            throw Failure(description: "cannot open /dev/net/tun: \(String(cString: strerror(e)))"
                + (e == ENOENT ? " (modprobe tun)" : ""))
        }
        var flags = CLINUX_IFF_TAP | CLINUX_IFF_NO_PI | CLINUX_IFF_VNET_HDR
        if multiQueue { flags |= CLINUX_IFF_MULTI_QUEUE }
        var actual = [CChar](repeating: 0, count: 16)
        let r = clinux_tun_set_interface(fd, name, flags, &actual)
        guard r == 0 else {
            close(fd)
            let hint = switch -r {
            case EPERM: existed ? " (the TAP belongs to another user: `ip tuntap add dev \(name) mode tap user $(id -u)`)" : " (creating a TAP needs CAP_NET_ADMIN; make it first with `ip tuntap add dev \(name) mode tap user $(id -u)`)"
            case EINVAL: " (is \(name) a TUN rather than a TAP, or multi-queue? open it as it was made)"
            case EBUSY: " (another process has it open)"
            default: ""
            }
            throw Failure(description: "TAP \(name): TUNSETIFF: \(String(cString: strerror(-r)))" + hint)
        }
        let header = clinux_tun_set_header_size(fd, Int32(TapDevice.headerSize))
        guard header == 0 else {
            close(fd)
            throw Failure(description: "TAP \(name): TUNSETVNETHDRSZ: \(String(cString: strerror(-header)))")
        }
        // Which offloads the kernel takes: all of them, else without UFO (removed in
        // 4.14, restored for TAP later), else checksum and TSO only.
        var supported: UInt32 = 0
        for candidate in [TapDevice.allOffloads, TapDevice.allOffloads & ~CLINUX_TUN_F_UFO, CLINUX_TUN_F_CSUM | CLINUX_TUN_F_TSO4 | CLINUX_TUN_F_TSO6, CLINUX_TUN_F_CSUM]
        where clinux_tun_set_offload(fd, candidate) == 0 {
            supported = candidate
            break
        }
        // Nothing is offloaded until the guest's driver says what it takes.
        _ = clinux_tun_set_offload(fd, 0)
        self.fd = fd
        self.requestedName = name
        self.name = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.supportedOffloads = supported
        self.created = !existed
        if !existed { _ = clinux_interface_up(self.name) }
    }

    deinit { close(fd) }

    /// TAPs opened ahead, by name: a jailed VMM opens its TAPs in the jail's network
    /// namespace before it gives up CAP_NET_ADMIN and the host's /dev, then builds its
    /// machine from these.
    private static let opened = Mutex<[String: TapDevice]>([:])

    /// Opens each of `names` now and keeps it for `open(name:)`.
    public static func openAhead(_ names: [String]) throws(Failure) {
        for name in names {
            let tap = try TapDevice(name: name)
            opened.withLock { $0[name] = tap }
        }
    }

    /// Keeps `tap` open for the next `open(name:)` of its name: the machine a rebooting
    /// guest gets next takes it over (a TAP the VMM made would vanish if closed, and a
    /// jailed VMM could not open one again).
    public static func keepForNextMachine(_ tap: TapDevice) {
        opened.withLock { $0[tap.requestedName] = tap }
    }

    /// The TAP `name`: the one opened ahead, if any (handed over once), else opened now.
    public static func open(name: String) throws(Failure) -> TapDevice {
        if let tap = opened.withLock({ $0.removeValue(forKey: name) }) { return tap }
        return try TapDevice(name: name)
    }

    /// Tells the kernel which offloads the guest accepts on receive (TUN_F_* bits).
    public func setOffloads(_ flags: UInt32) -> Bool { clinux_tun_set_offload(fd, flags) == 0 }
}
