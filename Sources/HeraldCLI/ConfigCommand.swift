import ArgumentParser
import HeraldBench
import HeraldCore

/// `herald config check FILE` and `herald config example`.
struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Check a config file (herald serve --config) or print a commented example.",
        subcommands: [Check.self, Example.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a config file and print the settings herald serve would run with (file, then HERALD_* variables over it; secrets masked).")

        @Argument(help: "The YAML file.") var file: String

        func run() throws {
            switch ConfigReport.check(path: file, environment: EnvironmentOptions.processEnvironment()) {
            case let .success(report):
                print(report, terminator: "")
            case let .failure(problem):
                printError(problem.description)
                throw ExitCode(1)
            }
        }
    }

    struct Example: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a commented example config file with every setting and its default.")

        func run() {
            print(ConfigReport.example(), terminator: "")
        }
    }
}

/// What `herald config` prints.
enum ConfigReport {
    /// Options whose values are masked when printed.
    static let secretOptions: Set<String> = ["token-secret", "api-key", "redis-sentinel-password", "admin-token"]
    /// Options that are URLs whose password is masked.
    static let urlOptions: Set<String> = ["amqp-url", "redis-url"]

    /// The effective settings, or the first problem (with the file's line where it has one).
    static func check(path: String, environment: [String: String]) -> Result<String, ConfigFile.Problem> {
        let file: ConfigFile
        do { file = try ConfigFile.load(path) } catch { return .failure(error) }
        let withEnvironment: [String]
        switch EnvironmentOptions.arguments(["serve"], environment: environment) {
        case let .success(arguments): withEnvironment = arguments
        case let .failure(problem): return .failure(.init(description: problem.description))
        }
        let arguments = file.arguments(withEnvironment, environment: environment)
        do {
            _ = try Herald.parseAsRoot(arguments + ["--config", path])
        } catch {
            return .failure(.init(description: located(Herald.message(for: error), in: file)))
        }
        var out = "# The settings of herald serve --config \(path), secrets masked.\n"
        out += "# After each: where it comes from (this file's line, a HERALD_* variable, or the default).\n"
        for option in ConfigFile.options where option.visible && option.names[0] != "config" {
            let name = option.names[0]
            let source: String
            let values: [String]?
            if option.isPresent(in: withEnvironment) || !(environment[option.variable] ?? "").isEmpty {
                source = option.variable
                values = option.takesValue ? EnvironmentOptions.values(of: option, in: withEnvironment)
                                           : [option.isPresent(in: withEnvironment) ? "true" : "false"]
            } else if let setting = file.settings.first(where: { $0.option == option }) {
                source = "\(path):\(setting.line)\(setting.fromFile ? " (\(name)-file)" : "")"
                values = setting.option.takesValue ? setting.values : (setting.values.isEmpty ? ["false"] : ["true"])
            } else {
                source = "default"
                values = option.defaultValue.map { [$0] } ?? computedDefault(name) ?? (option.takesValue ? nil : ["false"])
            }
            out += "\(name): \(render(values.map { $0.map { mask(name, $0) } }, list: option.repeating))  # \(source)\n"
        }
        if file.namespaces.isEmpty {
            out += "namespaces: []\n"
        } else {
            out += "namespaces:\n"
            for (namespace, line) in zip(file.namespaces, file.namespaceLines) {
                out += namespaceYAML(namespace, masked: true, comment: "  # \(path):\(line)")
            }
        }
        return .success(out)
    }

    /// A default `herald serve` works out when it starts, shown as it would be on this machine.
    static func computedDefault(_ name: String) -> [String]? {
        name == "web-root" ? [Serve.defaultWebRoot()] : nil
    }

    /// A problem found by parsing, with the line of the file's setting it names (if any).
    static func located(_ message: String, in file: ConfigFile) -> String {
        for setting in file.settings where setting.option.names.contains(where: { message.contains("--\($0)") }) {
            return "\(file.path):\(setting.line): \(message)"
        }
        for (namespace, line) in zip(file.namespaces, file.namespaceLines).reversed() where message.contains("namespace \(namespace.name):") {
            return "\(file.path):\(line): \(message)"
        }
        return "\(file.path): \(message)"
    }

    static func mask(_ option: String, _ value: String) -> String {
        if secretOptions.contains(option) { return "********" }
        if urlOptions.contains(option), let scheme = value.range(of: "://"), let at = value.lastIndex(of: "@"), at > scheme.upperBound {
            let userInfo = value[scheme.upperBound..<at]
            if let colon = userInfo.firstIndex(of: ":") {
                return String(value[..<value.index(after: colon)]) + "********" + String(value[at...])
            }
        }
        return value
    }

    static func render(_ values: [String]?, list: Bool) -> String {
        guard let values else { return list ? "[]" : "null" }
        if list {
            // The default of a list option is shown by ArgumentParser as its text already.
            if values.count == 1, values[0].hasPrefix("[") { return values[0] }
            return "[" + values.map(JSON.quoted).joined(separator: ", ") + "]"
        }
        guard let value = values.last else { return "null" }
        if value == "true" || value == "false" || (Double(value) != nil && !value.hasPrefix("+")) { return value }
        return JSON.quoted(value)
    }

    static func namespaceYAML(_ n: ChannelNamespace, masked: Bool, comment: String = "", prefix: String = "") -> String {
        var out = "\(prefix)  - name: \(JSON.quoted(n.name))\(comment)\n"
        out += "\(prefix)    patterns: [\(n.patterns.map(JSON.quoted).joined(separator: ", "))]\n"
        if let v = n.historySize { out += "\(prefix)    history-size: \(v)\n" }
        if let v = n.historyTTLSeconds { out += "\(prefix)    history-ttl: \(v)\n" }
        if let v = n.anonymous { out += "\(prefix)    anonymous: \(v)\n" }
        if let v = n.presence { out += "\(prefix)    presence: \(v)\n" }
        if let v = n.clientBacklog { out += "\(prefix)    client-backlog: \(v)\n" }
        if let v = n.httpPublish { out += "\(prefix)    http-publish: \(v)\n" }
        if let v = n.clientPublish { out += "\(prefix)    client-publish: \(v.rawValue)\n" }
        if let v = n.publishKeys { out += "\(prefix)    publish-keys: [\(v.map { JSON.quoted(masked ? "********" : $0) }.joined(separator: ", "))]\n" }
        return out
    }

    /// Every visible setting of `serve` with its help and default, commented out (`#name:`), and
    /// an example of namespaces: uncommenting any line gives a valid file.
    static func example() -> String {
        var out = """
        # herald.yaml: run with  herald serve --config herald.yaml
        # Every setting is a flag of herald serve under its long name (history_size works too).
        # HERALD_* variables override this file and flags override both. A secret can come from a
        # file: token-secret-file: /run/secrets/herald-token (also HERALD_TOKEN_SECRET_FILE).
        # Check a file with: herald config check herald.yaml

        """
        for option in ConfigFile.options where option.visible && option.names[0] != "config" {
            out += "\n" + wrap(option.help).map { "# \($0)\n" }.joined()
            let name = option.names[0]
            if let d = option.defaultValue {
                out += "#\(name): \(render([d], list: option.repeating))\n"
            } else if !option.takesValue {
                out += "#\(name): false\n"
            } else if option.repeating {
                out += "#\(name): []\n"
            } else {
                out += "# \(name): (no default)\n"
            }
        }
        out += """

        # Namespaces: options that differ by kind of channel. A channel belongs to its most specific
        # matching pattern (an exact name, then the longest prefix*; "*" is the default); what a
        # namespace leaves out follows the settings above. Settings: history-size, history-ttl,
        # anonymous, presence, client-backlog, http-publish, publish-keys (or publish-keys-file),
        # subscribe-token (required or optional: subscribes carry a subscription token), user-channel
        # ("notify:{sub}": readable by the connection whose token's sub fills {sub}), client-publish
        # (false, subscribers, token or backend: who may publish from a WebSocket, see --client-publish).
        #namespaces:
        #  - name: chat
        #    pattern: "chat:*"
        #    history-size: 50
        #    anonymous: true
        #    presence: true
        #    client-publish: subscribers
        #  - name: prices
        #    pattern: "prices:*"
        #    history-size: 5
        #    anonymous: false
        #    client-backlog: 100
        #    publish-keys: ["prices-feed-key"]
        #  - name: private
        #    pattern: "private:*"
        #    subscribe-token: required
        #  - name: notify
        #    pattern: "notify:*"
        #    user-channel: "notify:{sub}"

        """
        return out
    }

    /// Help text in lines of at most 96 characters.
    static func wrap(_ text: String) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty && line.count + word.count + 1 > 96 { lines.append(line); line = "" }
            line += (line.isEmpty ? "" : " ") + word
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }
}
