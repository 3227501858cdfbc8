// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Herald",
    products: [
        .executable(name: "herald", targets: ["herald"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // C libraries from Debian, each behind a module map and a tiny shim.
        .systemLibrary(name: "CWebSockets", pkgConfig: "libwebsockets",
                       providers: [.apt(["libwebsockets-dev"])]),
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CRabbitMQ", pkgConfig: "librabbitmq",
                       providers: [.apt(["librabbitmq-dev"])]),

        // Pure Swift: protocol, frames, subscription state machine. No C, no I/O, no threads.
        .target(name: "HeraldCore"),

        // The only modules that touch the C libraries.
        .target(name: "HeraldRedis", dependencies: ["CHiredis"]),
        .target(name: "HeraldAMQP", dependencies: ["CRabbitMQ"]),
        .target(name: "HeraldWebSocket", dependencies: ["CWebSockets", "HeraldCore"]),

        // Wiring: threads, HTTP routes, metrics, shutdown.
        .target(name: "HeraldServer", dependencies: [
            "HeraldCore", "HeraldRedis", "HeraldAMQP", "HeraldWebSocket",
            .product(name: "Logging", package: "swift-log"),
        ]),

        // The load generator behind `herald bench`.
        .target(name: "HeraldBench", dependencies: ["HeraldCore", "HeraldServer", "HeraldWebSocket", "HeraldAMQP"]),

        .executableTarget(name: "herald", dependencies: [
            "HeraldServer", "HeraldCore", "HeraldAMQP", "HeraldBench", "HeraldWebSocket",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        .testTarget(name: "HeraldCoreTests", dependencies: ["HeraldCore"]),
        .testTarget(name: "HeraldBenchTests", dependencies: ["HeraldBench"]),
    ],
    swiftLanguageModes: [.v6]
)
