import VMM

/// The standard library's `Decodable` over the project's `JSONValue`, without
/// Foundation: config files, API bodies and the VMM process's hand-over all decode
/// through it. Unknown object keys are errors (a typo in a config file must not be
/// silently ignored), and every error names the field by its path ("boot.mode").
public struct JSONValueDecoder {
    public init() {}

    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        /// The field, as a dotted path ("boot.loadAddress"); empty for the whole value.
        public let path: String
        public let message: String
        public var description: String { path.isEmpty ? message : "\"\(path)\": \(message)" }
    }

    public func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws(Failure) -> T {
        do {
            return try T(from: Node(value: value, path: []))
        } catch let f as Failure {
            throw f
        } catch {
            throw Failure(path: "", message: "\(error)")
        }
    }

    static func pathText(_ path: [any CodingKey]) -> String {
        path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingDotBrackets
    }

    /// One value and where it is.
    struct Node: Decoder {
        let value: JSONValue
        let path: [any CodingKey]
        var codingPath: [any CodingKey] { path }
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func fail(_ message: String) -> Failure { Failure(path: JSONValueDecoder.pathText(path), message: message) }

        func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
            guard let fields = value.fields else { throw fail("must be an object") }
            for (k, _) in fields where Key(stringValue: k) == nil {
                let known = Self.knownKeys(Key.self)
                throw Failure(path: "", message: "unknown field \"\(JSONValueDecoder.pathText(path + [AnyKey(k)]))\""
                              + (known.isEmpty ? "" : " (known: \(known.joined(separator: ", ")))"))
            }
            return KeyedDecodingContainer(Keyed<Key>(fields: fields, path: path))
        }

        static func knownKeys<Key: CodingKey>(_ type: Key.Type) -> [String] {
            guard let all = type as? any CaseIterable.Type else { return [] }
            return (all.allCases as any Collection).compactMap { ($0 as? any CodingKey)?.stringValue }
        }

        func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
            guard case let .array(items) = value else { throw fail("must be an array") }
            return Unkeyed(items: items, path: path)
        }

        func singleValueContainer() throws -> any SingleValueDecodingContainer { Single(node: self) }
    }

    struct AnyKey: CodingKey {
        let stringValue: String
        let intValue: Int?
        init(_ s: String) { stringValue = s; intValue = nil }
        init(index: Int) { stringValue = "\(index)"; intValue = index }
        init?(stringValue: String) { self.init(stringValue) }
        init?(intValue: Int) { self.init(index: intValue) }
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let fields: [(String, JSONValue)]
        let path: [any CodingKey]
        var codingPath: [any CodingKey] { path }
        var allKeys: [Key] { fields.compactMap { Key(stringValue: $0.0) } }

        func contains(_ key: Key) -> Bool { fields.contains { $0.0 == key.stringValue } }

        func node(_ key: Key) throws -> Node {
            guard let v = fields.first(where: { $0.0 == key.stringValue })?.1 else {
                throw Failure(path: JSONValueDecoder.pathText(path + [key]), message: "is required")
            }
            return Node(value: v, path: path + [key])
        }

        func decodeNil(forKey key: Key) throws -> Bool { (try? node(key))?.value == .null }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try T(from: try node(key)) }
        func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
            guard contains(key), try !decodeNil(forKey: key) else { return nil }
            return try decode(type, forKey: key)
        }
        func nestedContainer<N: CodingKey>(keyedBy type: N.Type, forKey key: Key) throws -> KeyedDecodingContainer<N> {
            try node(key).container(keyedBy: type)
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer { try node(key).unkeyedContainer() }
        func superDecoder() throws -> any Decoder { Node(value: .object(fields), path: path) }
        func superDecoder(forKey key: Key) throws -> any Decoder { try node(key) }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let items: [JSONValue]
        let path: [any CodingKey]
        var currentIndex = 0
        var codingPath: [any CodingKey] { path }
        var count: Int? { items.count }
        var isAtEnd: Bool { currentIndex >= items.count }

        mutating func next() throws -> Node {
            guard !isAtEnd else { throw Failure(path: JSONValueDecoder.pathText(path), message: "has too few elements") }
            defer { currentIndex += 1 }
            return Node(value: items[currentIndex], path: path + [AnyKey(index: currentIndex)])
        }
        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, items[currentIndex] == .null else { return false }
            currentIndex += 1
            return true
        }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try T(from: try next()) }
        mutating func nestedContainer<N: CodingKey>(keyedBy type: N.Type) throws -> KeyedDecodingContainer<N> { try next().container(keyedBy: type) }
        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
        mutating func superDecoder() throws -> any Decoder { try next() }
    }

    struct Single: SingleValueDecodingContainer {
        let node: Node
        var codingPath: [any CodingKey] { node.path }

        func decodeNil() -> Bool { node.value == .null }
        func decode(_ type: Bool.Type) throws -> Bool {
            guard let b = node.value.bool else { throw node.fail("must be true or false") }
            return b
        }
        func decode(_ type: String.Type) throws -> String {
            guard let s = node.value.string else { throw node.fail("must be a string") }
            return s
        }
        func decode(_ type: Double.Type) throws -> Double {
            guard let d = node.value.number, d.isFinite else { throw node.fail("must be a number") }
            return d
        }
        func decode(_ type: Float.Type) throws -> Float { Float(try decode(Double.self)) }
        /// Whole numbers, checked against the type's range (never a trap).
        func integer<I: FixedWidthInteger>(_ type: I.Type) throws -> I {
            let n: I?
            switch node.value {
            case let .int(i): n = I(exactly: i)
            case let .uint(u): n = I(exactly: u)
            case let .double(d): n = d.isFinite && d == d.rounded() ? I(exactly: d) : nil
            default: throw node.fail("must be a whole number")
            }
            guard let n else { throw node.fail("must be a whole number from \(I.min) to \(I.max)") }
            return n
        }
        func decode(_ type: Int.Type) throws -> Int { try integer(type) }
        func decode(_ type: Int8.Type) throws -> Int8 { try integer(type) }
        func decode(_ type: Int16.Type) throws -> Int16 { try integer(type) }
        func decode(_ type: Int32.Type) throws -> Int32 { try integer(type) }
        func decode(_ type: Int64.Type) throws -> Int64 { try integer(type) }
        func decode(_ type: UInt.Type) throws -> UInt { try integer(type) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { try integer(type) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { try integer(type) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { try integer(type) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { try integer(type) }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try T(from: node) }
    }
}

extension String {
    /// "a.[0]" → "a[0]".
    fileprivate var replacingDotBrackets: String {
        var out = ""
        var i = startIndex
        while i < endIndex {
            if self[i] == ".", index(after: i) < endIndex, self[index(after: i)] == "[" { i = index(after: i); continue }
            out.append(self[i])
            i = index(after: i)
        }
        return out
    }
}
