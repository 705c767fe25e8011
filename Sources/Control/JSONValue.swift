/// JSON for reports, config files and the control API, written and parsed here so
/// that the VMM process needs no Foundation. Objects keep their keys in order.
public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool { a.rendered == b.rendered }

    public var rendered: String {
        var out = ""
        render(into: &out)
        return out
    }

    func render(into out: inout String) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(i): out += String(i)
        case let .uint(u): out += String(u)
        case let .double(d): out += d.isFinite ? String(d) : "null"
        case let .string(s): JSONValue.quote(s, into: &out)
        case let .array(a):
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += "," }
                v.render(into: &out)
            }
            out += "]"
        case let .object(o):
            out += "{"
            for (i, (k, v)) in o.enumerated() {
                if i > 0 { out += "," }
                JSONValue.quote(k, into: &out)
                out += ":"
                v.render(into: &out)
            }
            out += "}"
        }
    }

    static func quote(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let h = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }
}

extension JSONValue {
    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Limits that keep a hostile document from costing more than it is worth.
    public static let maximumDepth = 64

    /// Parses one JSON document (RFC 8259); anything after it but white space is an error.
    public static func parse(_ text: String) throws(ParseError) -> JSONValue {
        var p = Parser(Array(text.utf8))
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == p.b.count else { throw p.fail("unexpected text after the JSON value") }
        return v
    }

    public subscript(key: String) -> JSONValue? {
        if case let .object(fields) = self { return fields.first { $0.0 == key }?.1 }
        return nil
    }

    public var string: String? { if case let .string(s) = self { s } else { nil } }
    public var bool: Bool? { if case let .bool(b) = self { b } else { nil } }
    public var int: Int64? {
        switch self {
        case let .int(i): i
        case let .uint(u): u <= UInt64(Int64.max) ? Int64(u) : nil
        case let .double(d): d == d.rounded() && abs(d) < 9e15 ? Int64(d) : nil
        default: nil
        }
    }
    public var number: Double? {
        switch self {
        case let .int(i): Double(i)
        case let .uint(u): Double(u)
        case let .double(d): d
        default: nil
        }
    }
    public var fields: [(String, JSONValue)]? { if case let .object(o) = self { o } else { nil } }

    struct Parser {
        let b: [UInt8]
        var i = 0
        init(_ b: [UInt8]) { self.b = b }

        func fail(_ why: String) -> ParseError { ParseError(description: "invalid JSON at byte \(i): \(why)") }

        mutating func skipSpace() { while i < b.count, [0x20, 0x09, 0x0A, 0x0D].contains(b[i]) { i += 1 } }

        mutating func expect(_ word: String) throws(ParseError) {
            for c in word.utf8 {
                guard i < b.count, b[i] == c else { throw fail("expected \(word)") }
                i += 1
            }
        }

        mutating func value(depth: Int) throws(ParseError) -> JSONValue {
            guard depth < JSONValue.maximumDepth else { throw fail("nested more than \(JSONValue.maximumDepth) deep") }
            skipSpace()
            guard i < b.count else { throw fail("unexpected end") }
            switch b[i] {
            case UInt8(ascii: "{"):
                i += 1
                var fields: [(String, JSONValue)] = []
                skipSpace()
                if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return .object(fields) }
                while true {
                    skipSpace()
                    guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                    let key = try string()
                    skipSpace()
                    try expect(":")
                    let v = try value(depth: depth + 1)
                    if fields.contains(where: { $0.0 == key }) { throw fail("duplicate key \"\(key)\"") }
                    fields.append((key, v))
                    skipSpace()
                    guard i < b.count else { throw fail("unterminated object") }
                    if b[i] == UInt8(ascii: ",") { i += 1; continue }
                    if b[i] == UInt8(ascii: "}") { i += 1; return .object(fields) }
                    throw fail("expected , or }")
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [JSONValue] = []
                skipSpace()
                if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard i < b.count else { throw fail("unterminated array") }
                    if b[i] == UInt8(ascii: ",") { i += 1; continue }
                    if b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    throw fail("expected , or ]")
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            default:
                return try number()
            }
        }

        mutating func string() throws(ParseError) -> String {
            i += 1 // opening quote
            var scalars = String.UnicodeScalarView()
            var raw: [UInt8] = []
            func flush() { scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars); raw.removeAll() }
            while true {
                guard i < b.count else { throw fail("unterminated string") }
                let c = b[i]
                i += 1
                if c == UInt8(ascii: "\"") { flush(); return String(scalars) }
                if c < 0x20 { throw fail("control character in string") }
                if c != UInt8(ascii: "\\") { raw.append(c); continue }
                guard i < b.count else { throw fail("unterminated escape") }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): raw.append(0x22)
                case UInt8(ascii: "\\"): raw.append(0x5C)
                case UInt8(ascii: "/"): raw.append(0x2F)
                case UInt8(ascii: "b"): raw.append(0x08)
                case UInt8(ascii: "f"): raw.append(0x0C)
                case UInt8(ascii: "n"): raw.append(0x0A)
                case UInt8(ascii: "r"): raw.append(0x0D)
                case UInt8(ascii: "t"): raw.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {
                        try expect("\\u")
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw fail("invalid \\u escape") }
                    flush()
                    scalars.append(scalar)
                default:
                    throw fail("unknown escape")
                }
            }
        }

        mutating func hex4() throws(ParseError) -> UInt32 {
            guard i + 4 <= b.count, let v = UInt32(String(decoding: b[i..<(i + 4)], as: UTF8.self), radix: 16) else { throw fail("bad \\u escape") }
            i += 4
            return v
        }

        mutating func number() throws(ParseError) -> JSONValue {
            let start = i
            if i < b.count, b[i] == UInt8(ascii: "-") { i += 1 }
            var isInteger = true
            while i < b.count {
                let c = b[i]
                if c >= 0x30 && c <= 0x39 { i += 1; continue }
                if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") {
                    isInteger = false; i += 1; continue
                }
                break
            }
            let text = String(decoding: b[start..<i], as: UTF8.self)
            guard !text.isEmpty, text != "-" else { throw fail("unexpected character") }
            if isInteger {
                if let v = Int64(text) { return .int(v) }
                if let v = UInt64(text) { return .uint(v) }
            }
            guard let d = Double(text), d.isFinite else { throw fail("bad number \(text)") }
            return .double(d)
        }
    }
}
