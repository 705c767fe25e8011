import ArgumentParser
import Control
import Glibc
import VMM

/// `swiftvisor top NAME`: a running VM's exits a second by kind, its busiest ports and
/// MMIO pages, and each vCPU's state and current function, refreshed every interval
/// from `GET /vm/stats`. On a terminal the screen is redrawn; otherwise (a pipe, a
/// file) each refresh is a block of plain text, or with `--json` one JSON line.
struct TopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "top", abstract: "Watch a running VM: exits a second by kind, busiest ports and MMIO pages, each vCPU's state and function.")
    @OptionGroup var state: StateOptions
    @Argument(help: "The VM's name.") var name: String
    @Option(name: .long, help: ArgumentHelp("Seconds between refreshes (default 1).", valueName: "seconds")) var interval: Double = 1
    @Option(name: .long, help: ArgumentHelp("Stop after this many refreshes (default: until the VM ends or Ctrl-C).", valueName: "n")) var count: Int?

    func run() throws {
        try verb(state.json) {
            guard interval.isFinite, interval >= 0.1, interval <= 3600 else {
                throw CLIFailure(message: "--interval: \(interval) is not a number of seconds from 0.1 to 3600", code: ProcessExitCode.usage)
            }
            if let count, count < 1 { throw CLIFailure(message: "--count: give 1 or more", code: ProcessExitCode.usage) }
            let terminal = isatty(1) != 0 && !state.json
            try requireAlive(try status(name, state))
            // A first request has each vCPU note where it is; the answers after carry it.
            _ = try? call(name, state, "GET", "/vm/stats")
            usleep(200_000)
            var shown = 0
            while true {
                let s = try status(name, state)
                try requireAlive(s)
                let stats = try call(name, state, "GET", "/vm/stats")
                if state.json {
                    StandardStream.output(JSONValue.object([("name", .string(name)), ("state", .string(s.state.rawValue)), ("stats", stats)]).rendered + "\n")
                } else {
                    StandardStream.output((terminal ? "\u{1b}[H\u{1b}[2J" : "") + Self.render(name: name, state: s.state.rawValue, stats) + (terminal ? "" : "\n"))
                }
                shown += 1
                if let count, shown >= count { break }
                usleep(UInt32(interval * 1_000_000))
            }
        }
    }

    /// One refresh as text.
    static func render(name: String, state: String, _ s: JSONValue) -> String {
        func number(_ v: JSONValue?) -> Double { v?.number ?? 0 }
        func rate(_ v: Double) -> String { v >= 100 ? String(Int(v.rounded())) : String(Int((v * 10).rounded()) / 10) + "." + String(Int((v * 10).rounded()) % 10) }
        var t = "\(name): \(state), \(s["exits"]?["total"]?.int ?? 0) exits so far\n"
        if let r = s["rates"], case let .object(kinds)? = r["exitsPerSecond"] {
            t += "exits a second: " + kinds.filter { number($0.1) > 0 || $0.0 == "total" }.map { "\($0.0) \(rate(number($0.1)))" }.joined(separator: ", ") + "\n"
            if case let .array(ports)? = r["ports"], !ports.isEmpty {
                t += "busiest ports: " + ports.map { "\($0["port"]?.string ?? "?") \(rate(number($0["perSecond"])))/s" }.joined(separator: ", ") + "\n"
            }
            if case let .array(pages)? = r["mmioPages"], !pages.isEmpty {
                t += "busiest MMIO pages: " + pages.map { "\($0["page"]?.string ?? "?") \(rate(number($0["perSecond"])))/s" }.joined(separator: ", ") + "\n"
            }
        } else {
            t += "exits a second: (after the VM's first second)\n"
        }
        if case let .array(vcpus)? = s["vcpus"] {
            for v in vcpus {
                t += "vCPU \(v["index"]?.int ?? 0): \(v["state"]?.string ?? "?")"
                if let rip = v["rip"]?.string {
                    t += " at \(rip)" + (v["cpl"]?.int.map { " (CPL \($0))" } ?? "") + (v["function"]?.string.map { " in \($0)" } ?? "")
                }
                t += "\n"
            }
        }
        return t
    }
}
