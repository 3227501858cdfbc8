import ArgumentParser
import HeraldCore
import Testing
@testable import HeraldCLI

/// `serve --config FILE`: every option can be set in the file, and the environment and the
/// command line override it, option by option.
@Suite struct ConfigFileTests {
    /// Every option a config file may set (all of serve's visible ones but --config).
    var options: [EnvironmentOptions.Option] {
        ConfigFile.options.filter { $0.visible && $0.names[0] != "config" }
    }

    func parse(_ yaml: String, files: [String: String] = [:]) throws(ConfigFile.Problem) -> ConfigFile {
        try ConfigFile.parse(yaml, path: "herald.yaml", readFile: { path in
            guard let text = files[path] else { throw FileError(description: "cannot open: No such file or directory") }
            return text
        })
    }

    func problem(_ yaml: String) -> String? {
        do { _ = try parse(yaml); return nil } catch { return error.description }
    }

    @Test func everyOptionIsReadFromTheFileUnderEitherSpelling() throws {
        // Every declared option of serve but --config and the hidden test-only one.
        #expect(options.count == EnvironmentTests().declaredOptionCount(Serve.self) - 2)
        for option in options {
            let name = option.names[0]
            let value = option.takesValue ? "\"f-\(name)\"" : "true"
            for key in [name, name.replacingOccurrences(of: "-", with: "_")] {
                let file = try parse("\(key): \(value)\n")
                let expected = option.takesValue ? ["serve", "--\(name)", "f-\(name)"] : ["serve", "--\(name)"]
                #expect(file.arguments(["serve"]) == expected, "\(key) is not read")
            }
        }
    }

    @Test func theEnvironmentOverridesTheFileForEveryOption() throws {
        for option in options {
            let name = option.names[0]
            let file = try parse("\(name): \(option.takesValue ? "from-file" : "true")\n")
            let env = [option.variable: option.takesValue ? "from-env" : "false"]
            let layered = file.arguments(try EnvironmentOptions.arguments(["serve"], environment: env).get(), environment: env)
            // A variable that turns a flag off wins over the file turning it on.
            #expect(layered == (option.takesValue ? ["serve", "--\(name)", "from-env"] : ["serve"]), "\(option.variable) does not win")
        }
    }

    @Test func theCommandLineOverridesTheFileForEveryOption() throws {
        for option in options where option.takesValue {
            let name = option.names[0]
            let file = try parse("\(name): from-file\n")
            #expect(file.arguments(["serve", "--\(name)=cli"]) == ["serve", "--\(name)=cli"], "--\(name) does not win")
            #expect(file.arguments(["serve", "--\(name)", "cli"]) == ["serve", "--\(name)", "cli"])
        }
    }

    @Test func listsFlagsAndSecretsFromFiles() throws {
        let file = try parse("""
            anonymous-channels: ["public:*", "news"]
            lifecycle-events: false
            token-secret-file: /run/secrets/herald
            api_key_file: /run/secrets/key
            """, files: ["/run/secrets/herald": "0123456789abcdef-secret", "/run/secrets/key": "k1"])
        #expect(file.arguments(["serve"]) == ["serve", "--anonymous-channels", "public:*", "--anonymous-channels", "news",
                                              "--token-secret", "0123456789abcdef-secret", "--api-key", "k1"])
        #expect(file.settings.map(\.line) == [1, 2, 3, 4])
        #expect(file.settings.map(\.fromFile) == [false, false, true, true])
    }

    @Test(arguments: [
        ("histroy-size: 5", "herald.yaml:1: unknown setting \"histroy-size\" (did you mean history-size?)"),
        ("port: 1\nhost: a\nport: 2", "herald.yaml:3: port is set twice"),
        ("port: [1, 2]", "herald.yaml:1: port takes one value, not a list"),
        ("port:", "herald.yaml:1: port has no value"),
        ("host: {a: 1}", "herald.yaml:1: host takes a value, not a set of settings"),
        ("lifecycle-events: maybe", "herald.yaml:1: lifecycle-events is a flag: true or false"),
        ("config: other.yaml", "herald.yaml:1: config cannot be set in a config file"),
        ("token-secret-file: /nope", "herald.yaml:1: token-secret-file: /nope: cannot open: No such file or directory"),
        ("- port: 1", "herald.yaml:1: expected settings (name: value), found a list"),
        ("port: 1\nhost: [a\n", "herald.yaml:3: not valid YAML: did not find expected ',' or ']' while parsing a flow sequence (column 1)"),
        ("namespaces: {a: 1}", "herald.yaml:1: namespaces is a list of entries, each with a pattern (- pattern: \"chat:*\")"),
        ("namespaces:\n  - history-size: 5", "herald.yaml:2: a namespace needs a pattern (pattern: \"chat:*\")"),
        ("namespaces:\n  - pattern: \"a:*\"\n    history-size: 0", "herald.yaml:3: history-size must be a whole number from 1 up"),
        ("namespaces:\n  - pattern: \"a:*\"\n    anonymous: sometimes", "herald.yaml:3: anonymous must be true or false"),
        ("namespaces:\n  - pattern: \"a*b\"", "herald.yaml:2: pattern a*b: \"*\" may only end a pattern"),
        ("namespaces:\n  - pattern: \"a:*\"\n    client-publish: maybe", "herald.yaml:3: client-publish must be false, subscribers, token or backend"),
        ("namespaces:\n  - pattern: \"a:*\"\n    colour: red", "herald.yaml:3: unknown namespace setting \"colour\" (known: name, pattern, history-size, history-ttl, anonymous, presence, client-backlog, http-publish, publish-keys, subscribe-token, user-channel, subscribe-proxy-url, client-publish, publish-keys-file)"),
    ])
    func aBadFileIsRefusedWithItsLineAndReason(_ yaml: String, _ expected: String) {
        #expect(problem(yaml) == expected)
    }

    @Test func namespacesAreRead() throws {
        let file = try parse("""
            history-size: 100
            namespaces:
              - name: chat
                pattern: "chat:*"
                history-size: 50
                anonymous: true
                presence: yes
                client-publish: subscribers
              - patterns: ["prices:*", "fx"]
                history_size: 5
                history-ttl: 3600
                anonymous: false
                client-backlog: 10
                http-publish: true
                publish-keys: [feed-1, feed-2]
              - pattern: "internal:*"
                http-publish: false
                publish-keys-file: /keys
                client-publish: false
            """, files: ["/keys": "k1\n\nk2\n"])
        var chat = ChannelNamespace(name: "chat", patterns: ["chat:*"])
        chat.historySize = 50
        chat.anonymous = true
        chat.presence = true
        chat.clientPublish = .subscribers
        var prices = ChannelNamespace(name: "prices:*", patterns: ["prices:*", "fx"])
        prices.historySize = 5
        prices.historyTTLSeconds = 3600
        prices.anonymous = false
        prices.clientBacklog = 10
        prices.httpPublish = true
        prices.publishKeys = ["feed-1", "feed-2"]
        var inside = ChannelNamespace(name: "internal:*", patterns: ["internal:*"])
        inside.httpPublish = false
        inside.publishKeys = ["k1", "k2"]
        inside.clientPublish = .off
        #expect(file.namespaces == [chat, prices, inside])
        #expect(file.namespaceLines == [3, 9, 16])
        #expect(file.arguments(["serve"]) == ["serve", "--history-size", "100"])
    }

    @Test func theExampleIsValidAsItIsAndUncommented() throws {
        let example = ConfigReport.example()
        #expect(try parse(example).settings.isEmpty)
        // Every `#name:` line uncommented: every setting at its default, and the namespaces.
        let uncommented = example.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            if line.hasPrefix("#  ") { return String(line.dropFirst()) }
            if line.hasPrefix("#"), let c = line.dropFirst().first, c.isLetter { return String(line.dropFirst()) }
            return String(line)
        }.joined(separator: "\n")
        let file = try parse(uncommented)
        #expect(file.settings.count == options.filter { $0.defaultValue != nil || !$0.takesValue || $0.repeating }.count)
        #expect(file.namespaces.map(\.name) == ["chat", "prices", "private", "notify"])
        // And serve accepts what it says.
        _ = try Herald.parseAsRoot(file.arguments(["serve"]))
    }

    @Test func secretsAreMasked() {
        #expect(ConfigReport.mask("token-secret", "s3cret-s3cret-s3cret") == "********")
        #expect(ConfigReport.mask("api-key", "k") == "********")
        #expect(ConfigReport.mask("amqp-url", "amqp://user:pw@mq:5672/") == "amqp://user:********@mq:5672/")
        #expect(ConfigReport.mask("redis-url", "redis://:pw@r:6379/0") == "redis://:********@r:6379/0")
        #expect(ConfigReport.mask("redis-url", "redis://r:6379/0") == "redis://r:6379/0")
        #expect(ConfigReport.mask("host", "0.0.0.0") == "0.0.0.0")
    }
}
