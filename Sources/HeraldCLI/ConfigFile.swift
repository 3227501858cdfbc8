import ArgumentParser
import HeraldCore
import Yams

/// `herald serve --config herald.yaml`: every option of `serve` under its long name
/// (`history-size: 50`, or `history_size`), a secret from a file with `-file`
/// (`token-secret-file: /run/secrets/herald`), and `namespaces:` (`ChannelNamespace`).
///
/// The file is the lowest layer: `HERALD_*` variables override it and flags override both. Its
/// settings become ordinary arguments, so a bad value gets the command line's error (prefixed with
/// the file and line by `herald config check`).
struct ConfigFile {
    /// One option set by the file.
    struct Setting: Equatable {
        let option: EnvironmentOptions.Option
        /// For an option: its values (several for a list); for a flag: empty or `[""]` (on).
        let values: [String]
        let line: Int
        /// Read from `<name>-file`.
        let fromFile: Bool

        /// The arguments that set it.
        var arguments: [String] {
            let flag = "--\(option.names[0])"
            if !option.takesValue { return values.isEmpty ? [] : [flag] }
            return values.flatMap { [flag, $0] }
        }
    }

    struct Problem: Error, CustomStringConvertible, Equatable {
        let description: String
    }

    var path: String
    var settings: [Setting] = []
    var namespaces: [ChannelNamespace] = []
    /// The line of each namespace's entry, for errors found after parsing.
    var namespaceLines: [Int] = []

    /// What `serve` can be told.
    static var options: [EnvironmentOptions.Option] { EnvironmentOptions.options(of: Serve.self) }

    static func load(_ path: String) throws(Problem) -> ConfigFile {
        let text: String
        do { text = try readTextFile(path) } catch { throw Problem(description: "\(path): \(error)") }
        return try parse(text, path: path)
    }

    static func parse(_ text: String, path: String, readFile: (String) throws -> String = readSecretFile) throws(Problem) -> ConfigFile {
        var file = ConfigFile(path: path)
        func fail(_ line: Int?, _ reason: String) -> Problem {
            Problem(description: line.map { "\(path):\($0): \(reason)" } ?? "\(path): \(reason)")
        }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch let error as YamlError {
            throw yamlProblem(error, path: path, text: text)
        } catch {
            throw fail(nil, "\(error)")
        }
        guard let root else { return file } // an empty file sets nothing
        guard let mapping = root.mapping else { throw fail(root.mark?.line, "expected settings (name: value), found \(kind(root))") }
        let options = Self.options
        var seen: [String: Int] = [:]
        for (keyNode, value) in mapping {
            let line = keyNode.mark?.line ?? 0
            guard let key = keyNode.scalar?.string else { throw fail(line, "a setting's name must be text") }
            let name = normalized(key)
            if name == "namespaces" {
                if let first = seen[name] { throw fail(line, "namespaces is set twice (first on line \(first))") }
                seen[name] = line
                (file.namespaces, file.namespaceLines) = try namespaces(value, fail: fail, readFile: readFile)
                continue
            }
            let fromFile = name.hasSuffix("-file") && option(String(name.dropLast(5)), in: options)?.takesValue == true
            let optionName = fromFile ? String(name.dropLast(5)) : name
            guard let option = option(optionName, in: options), option.visible else {
                throw fail(line, "unknown setting \"\(key)\"\(suggestion(for: name, in: options))")
            }
            if option.names[0] == "config" { throw fail(line, "config cannot be set in a config file") }
            if let first = seen[option.names[0]] {
                throw fail(line, "\(option.names[0]) is set twice (first on line \(first))")
            }
            seen[option.names[0]] = line
            var values: [String]
            if fromFile {
                guard let filePath = value.scalar?.string, !filePath.isEmpty else { throw fail(line, "\(key) must be a file path") }
                do { values = [try readFile(filePath)] } catch { throw fail(line, "\(key): \(filePath): \(error)") }
            } else if !option.takesValue {
                guard let on = value.scalar.flatMap({ boolean($0.string) }) else {
                    throw fail(line, "\(key) is a flag: true or false")
                }
                values = on ? [""] : []
            } else {
                switch value {
                case let .scalar(scalar):
                    if value.null != nil || scalar.string.isEmpty {
                        throw fail(line, "\(key) has no value")
                    }
                    values = [scalar.string]
                case let .sequence(items):
                    guard option.repeating else { throw fail(line, "\(key) takes one value, not a list") }
                    values = []
                    for item in items {
                        guard let s = item.scalar?.string else { throw fail(item.mark?.line ?? line, "\(key): each item must be a value") }
                        values.append(s)
                    }
                default:
                    throw fail(line, "\(key) takes \(option.repeating ? "a value or a list" : "a value"), not \(kind(value))")
                }
            }
            file.settings.append(Setting(option: option, values: values, line: line, fromFile: fromFile))
        }
        return file
    }

    /// `arguments` with the file's settings added for the options they do not set already and
    /// `environment` does not set (so flags and `HERALD_*` variables win, a variable that turns a
    /// flag off included).
    func arguments(_ arguments: [String], environment: [String: String] = [:]) -> [String] {
        guard let command = arguments.first else { return arguments }
        var added: [String] = []
        for setting in settings where !setting.option.isPresent(in: arguments) {
            let variable = setting.option.variable
            if !(environment[variable] ?? "").isEmpty || !(environment[variable + "_FILE"] ?? "").isEmpty { continue }
            added += setting.arguments
        }
        return [command] + added + arguments.dropFirst()
    }

    // MARK: Namespaces

    private static func namespaces(_ node: Node, fail: (Int?, String) -> Problem,
                                   readFile: (String) throws -> String) throws(Problem) -> ([ChannelNamespace], [Int]) {
        guard case let .sequence(entries) = node else {
            throw fail(node.mark?.line, "namespaces is a list of entries, each with a pattern (- pattern: \"chat:*\")")
        }
        var out: [ChannelNamespace] = []
        var lines: [Int] = []
        for entry in entries {
            let entryLine = entry.mark?.line ?? 0
            guard let mapping = entry.mapping else { throw fail(entryLine, "a namespace is a set of settings with a pattern, not \(kind(entry))") }
            var patterns: [String] = []
            var name: String?
            var namespace = ChannelNamespace(name: "", patterns: [])
            var seen: Set<String> = []
            for (keyNode, value) in mapping {
                let line = keyNode.mark?.line ?? entryLine
                guard let key = keyNode.scalar?.string else { throw fail(line, "a setting's name must be text") }
                let setting = normalized(key)
                guard seen.insert(setting).inserted else { throw fail(line, "\(setting) is set twice in this namespace") }
                func text() throws(Problem) -> String {
                    guard let s = value.scalar?.string, !s.isEmpty else { throw fail(line, "\(setting) must be a value") }
                    return s
                }
                func list() throws(Problem) -> [String] {
                    if case let .sequence(items) = value {
                        var out: [String] = []
                        for item in items {
                            guard let s = item.scalar?.string, !s.isEmpty else { throw fail(item.mark?.line ?? line, "\(setting): each item must be a value") }
                            out.append(s)
                        }
                        return out
                    }
                    return [try text()]
                }
                func integer(_ range: ClosedRange<Int>) throws(Problem) -> Int {
                    guard let n = Int(try text()), range.contains(n) else {
                        throw fail(line, "\(setting) must be a whole number from \(range.lowerBound)\(range.upperBound == Int.max ? " up" : " to \(range.upperBound)")")
                    }
                    return n
                }
                func flag() throws(Problem) -> Bool {
                    guard let b = boolean(try text()) else { throw fail(line, "\(setting) must be true or false") }
                    return b
                }
                switch setting {
                case "name": name = try text()
                case "pattern", "patterns": patterns += try list()
                case "history-size": namespace.historySize = try integer(1...Int.max)
                case "history-ttl": namespace.historyTTLSeconds = try integer(0...Int.max)
                case "anonymous": namespace.anonymous = try flag()
                case "presence": namespace.presence = try flag()
                case "client-backlog": namespace.clientBacklog = try integer(1...Int.max)
                case "http-publish": namespace.httpPublish = try flag()
                case "publish-keys": namespace.publishKeys = try list()
                case "subscribe-token":
                    guard let rule = ChannelNamespace.SubscribeTokenRule(rawValue: try text()) else {
                        throw fail(line, "subscribe-token must be required or optional")
                    }
                    namespace.subscribeToken = rule
                case "user-channel": namespace.userChannel = try text()
                case "subscribe-proxy-url": namespace.subscribeProxyURL = try text()
                case "client-publish":
                    // YAML reads a bare false as a boolean: take its text either way.
                    let raw = try text().lowercased()
                    guard let rule = ClientPublishRule(rawValue: raw == "off" || raw == "no" ? "false" : raw) else {
                        throw fail(line, "client-publish must be false, subscribers, token or backend")
                    }
                    namespace.clientPublish = rule
                case "publish-keys-file":
                    let path = try text()
                    do {
                        namespace.publishKeys = try readFile(path).split(whereSeparator: \.isNewline)
                            .map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
                    } catch { throw fail(line, "publish-keys-file: \(path): \(error)") }
                default:
                    throw fail(line, "unknown namespace setting \"\(key)\" (known: name, pattern, \(ChannelNamespace.settingNames.joined(separator: ", ")), publish-keys-file)")
                }
            }
            guard !patterns.isEmpty else { throw fail(entryLine, "a namespace needs a pattern (pattern: \"chat:*\")") }
            for p in patterns {
                if let problem = ChannelPattern.problem(p) { throw fail(entryLine, "pattern \(p): \(problem)") }
            }
            namespace.patterns = patterns
            namespace.name = name ?? patterns[0]
            out.append(namespace)
            lines.append(entryLine)
        }
        return (out, lines)
    }

    // MARK: Helpers

    /// `history_size` and `History-Size` are `history-size`.
    static func normalized(_ key: String) -> String {
        String(key.lowercased().map { $0 == "_" ? "-" : $0 })
    }

    static func option(_ name: String, in options: [EnvironmentOptions.Option]) -> EnvironmentOptions.Option? {
        options.first { $0.names.contains(name) }
    }

    static func boolean(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: return nil
        }
    }

    static func kind(_ node: Node) -> String {
        switch node {
        case .scalar: return "a value"
        case .mapping: return "a set of settings"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    /// ` (did you mean history-size?)` for a near miss.
    static func suggestion(for name: String, in options: [EnvironmentOptions.Option]) -> String {
        let names = options.filter(\.visible).map { $0.names[0] } + ["namespaces"]
        let best = names.map { ($0, distance(Array($0.utf8), Array(name.utf8))) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= max(2, name.utf8.count / 4) else { return "" }
        return " (did you mean \(best.0)?)"
    }

    static func distance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }

    static func yamlProblem(_ error: YamlError, path: String, text: String) -> Problem {
        switch error {
        case let .duplicatedKeysInMapping(duplicates, context):
            // The second line that sets the first duplicated key.
            let key = duplicates.sorted().first ?? ""
            var found = 0
            var line = context.mark.line
            for (i, l) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let t = l.drop { $0 == " " || $0 == "-" }
                if t.hasPrefix(key), t.dropFirst(key.count).drop(while: { $0 == " " }).first == ":" {
                    found += 1
                    if found == 2 { line = i + 1; break }
                }
            }
            return Problem(description: "\(path):\(line): \(key) is set twice")
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _):
            let where_ = context.map { " \($0.text)" } ?? ""
            return Problem(description: "\(path):\(mark.line): not valid YAML: \(problem)\(where_) (column \(mark.column))")
        default:
            return Problem(description: "\(path): not valid YAML: \(error)")
        }
    }
}
