import Boot
import Devices
import GuestMemory
@testable import Control
import VMM
import XCTest

/// The one config schema: decoded with Decodable over JSONValue, validated in one place.
final class VMDescriptionTests: XCTestCase {
    func parse(_ text: String) throws -> VMDescription { try VMDescription.parse(text) }

    func error(_ text: String) -> String {
        do { _ = try VMDescription.parse(text); return "no error" } catch { return error.description }
    }

    func testEveryFieldAndItsDefault() throws {
        let d = try parse("{}")
        XCTAssertEqual(d, VMDescription())
        XCTAssertEqual(d.config.memorySize, 64 << 20)
        XCTAssertEqual(d.config.boot, .demo)
        let full = try parse("""
            {"name": "web", "memory": "256M", "cpus": 2, "testDevices": true, "pit": false, "hostQuirks": true,
             "pvh": true, "symbols": "/boot/System.map", "timeout": 2.5, "onReboot": "restart", "kvmDevice": "/dev/kvm",
             "hugePages": true, "mergeable": true,
             "boot": {"kernel": "vmlinux", "cmdline": "-pause_filter_test", "initrd": "initrd.cpio"}}
            """)
        XCTAssertEqual(full.name, "web")
        XCTAssertEqual(full.config.memorySize, 256 << 20)
        XCTAssertEqual(full.config.vcpuCount, 2)
        XCTAssertEqual(full.config.boot, .kernel(path: "vmlinux", commandLine: "-pause_filter_test", initrd: "initrd.cpio"))
        XCTAssertTrue(full.config.testDevices && full.config.hostQuirks && full.config.pvh)
        XCTAssertFalse(full.config.pit)
        XCTAssertEqual(full.config.memoryOptions, .init(hugePages: true, mergeable: true))
        XCTAssertEqual(full.config.symbolFile, "/boot/System.map")
        XCTAssertEqual(full.timeoutSeconds, 2.5)
        XCTAssertEqual(full.timeoutNanoseconds, 2_500_000_000)
        XCTAssertTrue(full.restartOnReboot)
        XCTAssertEqual(try parse(full.json.rendered), full, "what json writes, decode reads back")
        let image = try parse(#"{"boot": {"image": "a.bin", "mode": "real", "loadAddress": "0x7c00", "entry": 31750}, "memory": 1048576}"#)
        XCTAssertEqual(image.config.boot, .flat(path: "a.bin", mode: .real, loadAddress: 0x7C00, entry: 31750))
        XCTAssertEqual(try parse(image.json.rendered), image)
    }

    func testErrorsNameTheFieldByItsPath() {
        XCTAssertEqual(error(#"{"memroy": "64M"}"#), "unknown field \"memroy\" (known: name, memory, cpus, boot, testDevices, pit, hostQuirks, pvh, symbols, timeout, onReboot, kvmDevice, disks, nets, vsock, rng, rngLimit, virtioConsole, virtioTransport, seccomp, jail, profile, trace, hugePages, mergeable)")
        XCTAssertTrue(error(#"{"boot": {"image": "a", "colour": 1}}"#).hasPrefix("unknown field \"boot.colour\""))
        XCTAssertEqual(error(#"{"cpus": "two"}"#), "\"cpus\": must be a whole number")
        XCTAssertEqual(error(#"{"cpus": 1e30}"#), "\"cpus\": must be a whole number from \(Int.min) to \(Int.max)", "never a trap on a huge number")
        XCTAssertEqual(error(#"{"boot": {"image": "a", "mode": "v86"}}"#), "\"boot.mode\": must be real, protected or long")
        XCTAssertEqual(error(#"{"boot": {"image": "a", "cmdline": "x"}}"#), "\"boot.cmdline\": is not for an image (an image takes mode, loadAddress, entry)")
        XCTAssertEqual(error(#"{"boot": {"mode": "long"}}"#), "\"boot.mode\": needs \"image\"")
        XCTAssertEqual(error(#"{"boot": {"initrd": "i"}}"#), "\"boot.initrd\": needs \"kernel\"")
        XCTAssertEqual(error(#"{"boot": {"image": "a", "loadAddress": "zz"}}"#), "\"boot.loadAddress\": must be an address like \"0x100000\"")
        XCTAssertEqual(error(#"{"memory": "lots"}"#), "\"memory\": must be a size like \"64M\" or a number of bytes")
        XCTAssertEqual(error(#"{"onReboot": "halt"}"#), "\"onReboot\": must be \"exit\" or \"restart\"")
        XCTAssertEqual(error("[1]"), "must be an object")
        XCTAssertTrue(error("{").hasPrefix("invalid JSON"), error("{"))
    }

    func testSeccompModeDefaultsToKillAndRoundTrips() throws {
        XCTAssertEqual(try parse("{}").seccomp, .kill)
        let log = try parse(#"{"seccomp": "log"}"#)
        XCTAssertEqual(log.seccomp, .log)
        XCTAssertEqual(try parse(log.json.rendered), log)
        XCTAssertEqual(error(#"{"seccomp": "strict"}"#), "\"seccomp\": must be \"kill\", \"log\" or \"off\"")
    }

    func testValidationIsOnePlace() {
        XCTAssertEqual(error(#"{"cpus": 0}"#), "invalid --cpus: 0 vCPUs: give 1 to 255")
        XCTAssertEqual(error(#"{"cpus": 256}"#), "invalid --cpus: 256 vCPUs: give 1 to 255")
        XCTAssertTrue(error(#"{"memory": 4096}"#).hasPrefix("invalid --memory"))
        // Found by the vm-description fuzz target: the error message's own size formatting overflowed.
        XCTAssertEqual(error(#"{"memory": "9000000294256M"}"#), "invalid --memory: 8583069.1 TiB is more than the 1 TiB Swiftvisor maps")
        XCTAssertEqual(ByteSize.format(UInt64.max), "16777215.9 TiB")
        XCTAssertEqual(ByteSize.format(3 << 29), "1.5 GiB")
        XCTAssertEqual(error(#"{"timeout": 0}"#), "invalid --timeout: 0.0 is not a number of seconds from 0 to 1000000000")
        XCTAssertEqual(error(#"{"timeout": 1e300}"#), "invalid --timeout: 1e+300 is not a number of seconds from 0 to 1000000000", "no overflow into nanoseconds")
        XCTAssertTrue(error(#"{"boot": {"image": "a", "mode": "real", "loadAddress": "0x200000"}}"#).contains("beyond the 1 MiB real mode can reach"))
    }

    func testTheVMMLaunchDocument() throws {
        let l = VMMLaunch(vm: try parse(#"{"name": "a"}"#), stateDirectory: "/run/x", detached: true, start: false)
        XCTAssertEqual(try VMMLaunch.parse(l.jsonValue.rendered), l)
        XCTAssertThrowsError(try VMMLaunch.parse(#"{"vm": {}, "detached": true}"#), "detached needs a name and a state directory")
        XCTAssertThrowsError(try VMMLaunch.parse(#"{"vm": {}, "start": false}"#), "a created VM needs its API")
        XCTAssertThrowsError(try VMMLaunch.parse(#"{"vm": {"cpus": 0}}"#), "validated like any description")
        XCTAssertThrowsError(try VMMLaunch.parse(#"{"vm": {}, "debug": true}"#), "no hidden fields")
    }
}

/// Disks, network and vsock devices and the entropy device in the description and on the command line.
final class VirtioConfigTests: XCTestCase {
    func testDisksInJSONAndTheirRules() throws {
        let d = try VMDescription.parse(#"{"boot": {"kernel": "k"}, "rng": true, "disks": [{"path": "a.img", "readonly": true, "serial": "s1"}, {"path": "b.img", "id": "data"}]}"#)
        XCTAssertEqual(d.config.disks, [DiskConfig(path: "a.img", readOnly: true, serial: "s1"), DiskConfig(path: "b.img", id: "data")])
        XCTAssertEqual(d.config.disks.enumerated().map { $1.id(index: $0) }, ["vda", "data"])
        XCTAssertTrue(d.config.rng)
        XCTAssertEqual(try VMDescription.parse(d.json.rendered), d)
        func error(_ text: String) -> String { do { _ = try VMDescription.parse(text); return "" } catch { return error.description } }
        XCTAssertTrue(error(#"{"disks": [{"path": "a.img"}]}"#).contains("virtio devices need a kernel"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "disks": [{"path": "a", "id": "x"}, {"path": "b", "id": "x"}]}"#).contains("two disks with the id 'x'"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "disks": [{"path": "a", "serial": "123456789012345678901"}]}"#).contains("longer than virtio's 20 bytes"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "disks": [{"readonly": true}]}"#).contains("\"disks[0].path\": is required"), error(#"{"boot": {"kernel": "k"}, "disks": [{"readonly": true}]}"#))
        let many = (0..<9).map { #"{"path": "d\#($0)"}"# }.joined(separator: ",")
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "disks": [\#(many)]}"#).contains("at most 8"))
    }

    func testNetworkAndVsockDevicesInJSONFlagsAndTheirRules() throws {
        func error(_ text: String) -> String { do { _ = try VMDescription.parse(text); return "" } catch { return error.description } }
        let d = try VMDescription.parse(#"{"name": "web", "boot": {"kernel": "k"}, "nets": [{"tap": "tap0", "mac": "52:54:00:00:00:01", "rxBandwidth": "10M", "txPackets": 1000}, {"tap": "auto", "id": "uplink"}], "vsock": {"cid": 7, "socket": "/run/v.sock"}}"#)
        XCTAssertEqual(d.config.nets.count, 2)
        XCTAssertEqual(d.config.nets[0].mac?.description, "52:54:00:00:00:01")
        XCTAssertEqual(d.config.nets[0].receive, RateLimit(bytesPerSecond: 10 << 20))
        XCTAssertEqual(d.config.nets[0].transmit, RateLimit(operationsPerSecond: 1000))
        XCTAssertEqual(d.config.nets.enumerated().map { $1.id(index: $0) }, ["eth0", "uplink"])
        XCTAssertEqual(d.config.nets[1].interfaceName(index: 1, vm: d.name), "sv-web-1")
        XCTAssertEqual(d.config.nets[1].address(index: 1, vm: "web"), d.config.nets[1].address(index: 1, vm: "web"), "a named VM's MAC is stable")
        XCTAssertEqual(d.config.vsock, VsockConfig(cid: 7, socketPath: "/run/v.sock"))
        XCTAssertEqual(try VMDescription.parse(d.json.rendered), d, "round trip")
        // A long VM name still gives an interface name Linux takes.
        XCTAssertTrue(TapName.isValid(NetConfig(tap: "auto").interfaceName(index: 0, vm: "a-very-long-virtual-machine-name")))
        XCTAssertEqual(NetConfig(tap: "auto").interfaceName(index: 0, vm: nil), "svtap%d", "the kernel picks for an unnamed VM")

        XCTAssertTrue(error(#"{"nets": [{"tap": "tap0"}]}"#).contains("virtio devices need a kernel"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "nets": [{"tap": "a/b"}]}"#).contains("not an interface name"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "nets": [{"tap": "t0"}, {"tap": "t0"}]}"#).contains("two devices on the TAP 't0'"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "nets": [{"tap": "t0", "mac": "01:00:5e:00:00:01"}]}"#).contains("nets[0].mac"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "nets": [{"tap": "t0", "rxPackets": 0}]}"#).contains("rx-pps=0"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "disks": [{"path": "a", "id": "eth0"}], "nets": [{"tap": "t0"}]}"#).contains("two devices with the id 'eth0'"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "vsock": {"cid": 2, "socket": "/s"}}"#).contains("CID 2 is reserved"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "vsock": {"cid": 3, "socket": ""}}"#).contains("needs socket=PATH"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "vsock": {"cid": 3, "socket": "/\#(String(repeating: "x", count: 120))"}}"#).contains("longer than"))
        XCTAssertTrue(error(#"{"boot": {"kernel": "k"}, "vsock": {"cid": 99999999999999, "socket": "/s"}}"#).contains("reserved"))

        var net = NetConfig(tap: "tap1", mac: MACAddress("02:00:00:00:00:02"), id: "lan")
        net.receive = RateLimit(bytesPerSecond: 1 << 20, operationsPerSecond: 100)
        net.transmit = RateLimit(bytesPerSecond: 1 << 20, operationsPerSecond: 200)
        XCTAssertEqual(NetValue.parse("tap=tap1,mac=02:00:00:00:00:02,id=lan,bw=1M,rx-pps=100,tx-pps=200"), net)
        XCTAssertEqual(NetValue.parse("tap=auto"), NetConfig(tap: "auto"))
        for bad in ["", "tap0", "mac=02:00:00:00:00:02", "tap=t,mac=zz", "tap=t,bogus=1", "tap=t,pps=-1", "tap=t,bw=lots", "tap=t,id="] {
            XCTAssertNil(NetValue.parse(bad), bad)
        }
        XCTAssertEqual(VsockValue.parse("cid=3,socket=/tmp/v"), VsockConfig(cid: 3, socketPath: "/tmp/v"))
        XCTAssertNil(VsockValue.parse("socket=/tmp/v"))
        XCTAssertNil(VsockValue.parse("cid=x,socket=/tmp/v"))
    }

    func testTheDiskFlag() {
        XCTAssertEqual(DiskValue.parse("/images/root.img"), DiskConfig(path: "/images/root.img"))
        XCTAssertEqual(DiskValue.parse("a.img,readonly,id=root,serial=SN1"), DiskConfig(path: "a.img", readOnly: true, id: "root", serial: "SN1"))
        XCTAssertNil(DiskValue.parse(",readonly"))
        XCTAssertNil(DiskValue.parse("a.img,bogus"))
        var direct = DiskConfig(path: "a.img")
        direct.direct = true
        XCTAssertEqual(DiskValue.parse("a.img,direct"), direct)
        XCTAssertEqual(DiskValue.parse("a.img,cache=none"), direct)
        XCTAssertEqual(DiskValue.parse("a.img,cache=writeback"), DiskConfig(path: "a.img"))
        XCTAssertNil(DiskValue.parse("a.img,cache=unsafe"))
    }

    func testVirtioTransportConsoleAndCacheFields() throws {
        func failure(_ text: String) -> String { do { _ = try VMDescription.parse(text); return "" } catch { return error.description } }
        let d = try VMDescription.parse(#"{"boot": {"kernel": "k"}, "virtioTransport": "mmio", "virtioConsole": true, "disks": [{"path": "a", "cache": "none"}]}"#)
        XCTAssertEqual(d.config.virtioTransport, .mmio)
        XCTAssertTrue(d.config.virtioConsole)
        XCTAssertTrue(d.config.disks[0].direct)
        XCTAssertEqual(try VMDescription.parse(d.json.rendered), d, "round trip")
        XCTAssertEqual(try VMDescription.parse(#"{"boot": {"kernel": "k"}}"#).config.virtioTransport, .pci, "PCI by default")
        XCTAssertTrue(failure(#"{"virtioTransport": "usb"}"#).contains("\"virtioTransport\": must be \"pci\" or \"mmio\""), failure(#"{"virtioTransport": "usb"}"#))
        XCTAssertTrue(failure(#"{"boot": {"kernel": "k"}, "disks": [{"path": "a", "cache": "unsafe"}]}"#).contains("disks[0].cache"))
        XCTAssertTrue(failure(#"{"virtioConsole": true}"#).contains("virtio devices need a kernel"))
        let limited = try VMDescription.parse(#"{"boot": {"kernel": "k"}, "rng": true, "rngLimit": "64K", "disks": [{"path": "a", "bandwidth": "10M", "iops": 500}]}"#)
        XCTAssertEqual(limited.config.rngBytesPerSecond, 64 << 10)
        XCTAssertEqual(limited.config.disks[0].bytesPerSecond, 10 << 20)
        XCTAssertEqual(limited.config.disks[0].operationsPerSecond, 500)
        XCTAssertEqual(try VMDescription.parse(limited.json.rendered), limited, "round trip")
        XCTAssertEqual(DiskValue.parse("a,bw=1M,iops=20")?.bytesPerSecond, 1 << 20)
        XCTAssertNil(DiskValue.parse("a,iops=lots"))
        XCTAssertTrue(failure(#"{"boot": {"kernel": "k"}, "rngLimit": "1K"}"#).contains("add --rng"))
        XCTAssertTrue(failure(#"{"boot": {"kernel": "k"}, "disks": [{"path": "a", "iops": 0}]}"#).contains("a rate limit of 0"))
    }
}
