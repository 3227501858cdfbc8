import ArgumentParser
import HeraldCore

/// The `herald` command: `serve`, `publish`, `bench` and `token`.
public struct Herald: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Real-time push fan-out: RabbitMQ → capped Redis history → WebSocket clients.",
        discussion: "Every option of every subcommand can also be set with an environment variable HERALD_<OPTION>, e.g. HERALD_AMQP_URL for --amqp-url. A value on the command line wins.",
        version: HeraldVersion.current,
        subcommands: [Serve.self, Publish.self, Bench.self, Token.self, ConfigCommand.self])

    public init() {}

    /// Runs the command line of this process, with `HERALD_*` variables and then the settings of
    /// `serve --config FILE` filled in (flags win over variables, variables over the file), and exits.
    public static func runFromProcess() -> Never {
        switch layered(Array(CommandLine.arguments.dropFirst()), environment: EnvironmentOptions.processEnvironment()) {
        case let .success(full):
            main(full)
        case let .failure(error):
            exit(withError: ValidationError(error.description))
        }
        exit()
    }

    /// The arguments `serve` runs with: the command line's, then `HERALD_*`, then the config file.
    static func layered(_ arguments: [String], environment: [String: String]) -> Result<[String], ConfigFile.Problem> {
        let withEnvironment: [String]
        switch EnvironmentOptions.arguments(arguments, environment: environment) {
        case let .success(a): withEnvironment = a
        case let .failure(problem): return .failure(.init(description: problem.description))
        }
        guard withEnvironment.first == "serve",
              let option = ConfigFile.option("config", in: ConfigFile.options),
              let path = EnvironmentOptions.values(of: option, in: withEnvironment).last else { return .success(withEnvironment) }
        do {
            return .success(try ConfigFile.load(path).arguments(withEnvironment, environment: environment))
        } catch {
            return .failure(error)
        }
    }
}
