import ArgumentParser
import HeraldCore
#if canImport(Glibc)
import Glibc
#endif

/// `HERALD_<OPTION>` for every option of every subcommand (`--amqp-url` / `HERALD_AMQP_URL`).
///
/// The mapping is derived from ArgumentParser's own description of each command, never from a
/// hand-kept list, so an option added to a command reads its variable too. A value on the command
/// line wins. Variables become ordinary arguments, so a bad value gets exactly the error the same
/// value gets on the command line.
public enum EnvironmentOptions {
    /// One option of a subcommand, as the environment sees it.
    public struct Option: Equatable, Sendable {
        /// Every long name, the preferred one first (`token-secret`, `secret`).
        public let names: [String]
        public let variable: String
        /// false for a flag (`--json`): its variable is true/false, 1/0 or yes/no.
        public let takesValue: Bool
        /// A repeatable option takes a comma-separated list; each item becomes one `--name item`.
        public let repeating: Bool
        /// What the option is when not given, as its help shows it (nil: none).
        public var defaultValue: String? = nil
        /// The option's help text.
        public var help: String = ""
        /// false for test-only options hidden from `--help`.
        public var visible: Bool = true

        /// Whether `arguments` already set this option (by any of its names).
        func isPresent(in arguments: [String]) -> Bool {
            arguments.contains { arg in names.contains { arg == "--\($0)" || arg.hasPrefix("--\($0)=") } }
        }
    }

    public struct Problem: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// The subcommands of `herald`, by name.
    public static var subcommands: [String: any ParsableCommand.Type] {
        var out: [String: any ParsableCommand.Type] = [:]
        for command in Herald.configuration.subcommands {
            out[command._commandName] = command
        }
        return out
    }

    /// The options of `command` (help excluded) from ArgumentParser's description of it.
    public static func options(of command: any ParsableCommand.Type) -> [Option] {
        guard let dump = try? JSON.parse(Array(command._dumpHelp().utf8)),
              case let .array(arguments)? = dump["command"]?["arguments"] else { return [] }
        var out: [Option] = []
        for argument in arguments {
            let kind = argument["kind"]?.stringValue
            guard kind == "option" || kind == "flag", case let .array(names)? = argument["names"] else { continue }
            var longNames = names.compactMap { $0["kind"]?.stringValue == "long" ? $0["name"]?.stringValue : nil }
            if let preferred = argument["preferredName"]?["name"]?.stringValue, let i = longNames.firstIndex(of: preferred) {
                longNames.insert(longNames.remove(at: i), at: 0)
            }
            guard let name = longNames.first, name != "help" else { continue }
            let repeating = argument["isRepeating"] == .bool(true)
            out.append(Option(names: longNames, variable: variable(for: name), takesValue: kind == "option", repeating: repeating,
                              defaultValue: argument["defaultValue"]?.stringValue, help: argument["abstract"]?.stringValue ?? "",
                              visible: argument["shouldDisplay"] != .bool(false)))
        }
        return out
    }

    /// The values `arguments` give `option` (`--name v` and `--name=v`; a flag: `["true"]`).
    public static func values(of option: Option, in arguments: [String]) -> [String] {
        var out: [String] = []
        var i = arguments.startIndex
        while i < arguments.endIndex {
            let arg = arguments[i]
            for name in option.names {
                if arg == "--\(name)" {
                    if !option.takesValue { out.append("true") } else if i + 1 < arguments.endIndex { out.append(arguments[i + 1]); i += 1 }
                } else if arg.hasPrefix("--\(name)=") {
                    out.append(String(arg.dropFirst(name.utf8.count + 3)))
                }
            }
            i += 1
        }
        return out
    }

    /// `amqp-url` → `HERALD_AMQP_URL`.
    public static func variable(for name: String) -> String {
        "HERALD_" + String(name.uppercased().map { $0 == "-" ? "_" : $0 })
    }

    /// `arguments` (without the program name) with `--name value` added for each option of the
    /// subcommand that is not on the command line and has a non-empty variable.
    public static func arguments(_ arguments: [String], environment: [String: String]) -> Result<[String], Problem> {
        guard let name = arguments.first, let command = subcommands[name] else { return .success(arguments) }
        var added: [String] = []
        for option in options(of: command) {
            guard !option.isPresent(in: arguments) else { continue }
            var value = environment[option.variable] ?? ""
            if value.isEmpty, option.takesValue, let path = environment[option.variable + "_FILE"], !path.isEmpty {
                // A secret from a file (Docker and systemd credentials): HERALD_TOKEN_SECRET_FILE.
                do { value = try readSecretFile(path) } catch {
                    return .failure(Problem(description: "\(option.variable)_FILE=\(path): \(error)"))
                }
            }
            guard !value.isEmpty else { continue }
            let flag = "--\(option.names[0])"
            if !option.takesValue {
                switch value.lowercased() {
                case "1", "true", "yes", "on": added.append(flag)
                case "0", "false", "no", "off": break
                default: return .failure(Problem(description: "\(option.variable)=\(value): \(flag) is a flag; use true or false"))
                }
            } else if option.repeating {
                for item in splitList([value]) { added += [flag, item] }
            } else {
                added += [flag, value]
            }
        }
        return .success([name] + added + arguments.dropFirst())
    }

    /// This process's `HERALD_*` variables.
    static func processEnvironment() -> [String: String] {
        var out: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if text.hasPrefix("HERALD_"), let eq = text.firstIndex(of: "=") {
                out[String(text[..<eq])] = String(text[text.index(after: eq)...])
            }
            entry += 1
        }
        return out
    }
}
