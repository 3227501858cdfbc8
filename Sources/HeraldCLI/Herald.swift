import ArgumentParser
import HeraldCore

/// The `herald` command: `serve`, `publish`, `bench` and `token`.
public struct Herald: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Real-time push fan-out: RabbitMQ → capped Redis history → WebSocket clients.",
        discussion: "Every option of every subcommand can also be set with an environment variable HERALD_<OPTION>, e.g. HERALD_AMQP_URL for --amqp-url. A value on the command line wins.",
        version: HeraldVersion.current,
        subcommands: [Serve.self, Publish.self, Bench.self, Token.self])

    public init() {}

    /// Runs the command line of this process, with `HERALD_*` variables filled in, and exits.
    public static func runFromProcess() -> Never {
        let arguments = Array(CommandLine.arguments.dropFirst())
        switch EnvironmentOptions.arguments(arguments, environment: EnvironmentOptions.processEnvironment()) {
        case let .success(full):
            main(full)
        case let .failure(error):
            exit(withError: ValidationError(error.description))
        }
        exit()
    }
}
