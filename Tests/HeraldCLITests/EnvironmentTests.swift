import ArgumentParser
import Testing
@testable import HeraldCLI

/// Every option of every subcommand reads its HERALD_* variable.
@Suite struct EnvironmentTests {
    /// The options a command declares, counted by reflection over its property wrappers, so the
    /// test does not trust the derivation it checks.
    func declaredOptionCount(_ command: any ParsableCommand.Type) -> Int {
        declaredOptions(in: command.init())
    }

    /// Options and flags declared in `value`, and in its option groups (`@OptionGroup`).
    func declaredOptions(in value: Any) -> Int {
        Mirror(reflecting: value).children.reduce(0) { n, child in
            let type = String(describing: Swift.type(of: child.value))
            if type.hasPrefix("Option<") || type.hasPrefix("Flag<") { return n + 1 }
            if type.hasPrefix("OptionGroup<") { return n + groupOptions(child.value) }
            return n
        }
    }

    /// The options of an option group: ArgumentParser builds the group's value only when it
    /// parses, so each group is listed here by type (a new one must be added to be counted).
    func groupOptions(_ group: Any) -> Int {
        let groups: [String: any ParsableArguments] = ["OptionGroup<HTTPOptions>": HTTPOptions()]
        let type = String(describing: Swift.type(of: group))
        guard let value = groups[type] else {
            Issue.record("unknown option group \(type): add it to EnvironmentTests.groupOptions")
            return 0
        }
        return declaredOptions(in: value)
    }

    @Test func everySubcommandIsCovered() {
        #expect(Set(EnvironmentOptions.subcommands.keys) == ["serve", "publish", "bench", "token", "config"])
        #expect(EnvironmentOptions.options(of: ConfigCommand.self).isEmpty)
    }

    @Test(arguments: ["serve", "publish", "bench", "token"])
    func everyOptionReadsItsVariable(_ name: String) throws {
        let command = try #require(EnvironmentOptions.subcommands[name])
        let options = EnvironmentOptions.options(of: command)
        #expect(options.count == declaredOptionCount(command), "an option has no variable")
        #expect(options.count >= 2)
        for option in options {
            let value = option.takesValue ? "v-\(option.names[0])" : "true"
            let result = try EnvironmentOptions.arguments([name], environment: [option.variable: value]).get()
            let flag = "--\(option.names[0])"
            #expect(result == (option.takesValue ? [name, flag, value] : [name, flag]), "\(option.variable) is not read")
        }
    }

    @Test func theVariablesTheREADMEPromisesExist() {
        let serve = Set(EnvironmentOptions.options(of: Serve.self).map(\.variable))
        for v in ["HERALD_HISTORY_TTL", "HERALD_HISTORY_META_TTL", "HERALD_TRUSTED_PROXIES", "HERALD_TOKEN_SECRET",
                  "HERALD_AMQP_URL", "HERALD_EVENT_LOOP", "HERALD_EMPTY_CHANNEL_TTL", "HERALD_LOG_LEVEL", "HERALD_REDIS_CLUSTER"] {
            #expect(serve.contains(v), "\(v)")
        }
        let bench = Set(EnvironmentOptions.options(of: Bench.self).map(\.variable))
        #expect(bench.isSuperset(of: ["HERALD_EXCHANGE", "HERALD_AMQP_URL"]))
        #expect(EnvironmentOptions.options(of: Token.self).contains { $0.variable == "HERALD_TOKEN_SECRET" && $0.names == ["token-secret", "secret"] })
    }

    @Test func theCommandLineWinsAndListsSplitOnCommas() throws {
        let env = ["HERALD_PORT": "9000", "HERALD_ANONYMOUS_CHANNELS": "public:*, news", "HERALD_HOST": ""]
        let result = try EnvironmentOptions.arguments(["serve", "--port=7000"], environment: env).get()
        #expect(result == ["serve", "--anonymous-channels", "public:*", "--anonymous-channels", "news", "--port=7000"])
        // An alias on the command line counts as the option.
        let token = try EnvironmentOptions.arguments(["token", "--secret", "s"], environment: ["HERALD_TOKEN_SECRET": "t"]).get()
        #expect(token == ["token", "--secret", "s"])
    }

    @Test func aBadValueGetsTheCommandLinesError() throws {
        // Same error as the command line gives: the arguments are the same.
        let fromEnv = try EnvironmentOptions.arguments(["serve"], environment: ["HERALD_LOG_LEVEL": "loud"]).get()
        #expect(throws: (any Error).self) { _ = try Herald.parseAsRoot(fromEnv) }
        let message = Herald.message(for: CatchError { _ = try Herald.parseAsRoot(fromEnv) }.error!)
        let direct = Herald.message(for: CatchError { _ = try Herald.parseAsRoot(["serve", "--log-level", "loud"]) }.error!)
        #expect(message == direct)
        #expect(message.contains("--log-level must be one of"))
        let port = try EnvironmentOptions.arguments(["serve"], environment: ["HERALD_PORT": "eighty"]).get()
        #expect(Herald.message(for: CatchError { _ = try Herald.parseAsRoot(port) }.error!).contains("--port"))
        #expect(EnvironmentOptions.arguments(["bench"], environment: ["HERALD_PEER": "maybe"])
                == .failure(.init(description: "HERALD_PEER=maybe: --peer is a flag; use true or false")))
    }
}

struct CatchError {
    let error: (any Error)?
    init(_ body: () throws -> Void) {
        do { try body(); error = nil } catch { self.error = error }
    }
}
