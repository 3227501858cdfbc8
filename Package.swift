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
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // C libraries from Debian, each behind a module map and a tiny shim.
        .systemLibrary(name: "CWebSockets", pkgConfig: "libwebsockets",
                       providers: [.apt(["libwebsockets-dev"])]),
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CRabbitMQ", pkgConfig: "librabbitmq",
                       providers: [.apt(["librabbitmq-dev"])]),
        .systemLibrary(name: "COpenSSL", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CLibev", providers: [.apt(["libev-dev"])]),
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // Sockets and epoll for the load generator's clients: headers only, no library.
        .systemLibrary(name: "CSocket"),

        // Pure Swift: protocol, frames, subscription state machine. No C, no I/O, no threads.
        .target(name: "HeraldCore"),
        // Threads, mailboxes, stop flags and clocks, for the server and the bench alike.
        .target(name: "HeraldRuntime"),

        // The only modules that touch the C libraries.
        .target(name: "HeraldRedis", dependencies: ["CHiredis", "HeraldCore"]),
        .target(name: "HeraldAMQP", dependencies: ["CRabbitMQ"]),
        // One lws context and its service loop (libev's epoll or lws's poll), for server and clients.
        .target(name: "HeraldServiceLoop", dependencies: ["CWebSockets", "CLibev", "HeraldRuntime"]),
        // The WebSocket and HTTP server, and nothing else.
        .target(name: "HeraldWebSocket", dependencies: ["CWebSockets", "CSocket", "HeraldServiceLoop", "HeraldCore", "HeraldDeflate", "HeraldRuntime"]),
        // The load generator's clients: an epoll WebSocket client, an lws client pool, an HTTP client.
        .target(name: "HeraldLoadClients", dependencies: ["CSocket", "CWebSockets", "HeraldServiceLoop", "HeraldDeflate", "HeraldRuntime"]),
        // Token signatures from libcrypto: HMAC, RSA, ECDSA, Ed25519 (HeraldCore takes them as functions).
        .target(name: "HeraldCrypto", dependencies: ["COpenSSL", "HeraldCore"]),

        // permessage-deflate's codec (RFC 7692) over zlib: pieces compressed once, inflation capped.
        .target(name: "HeraldDeflate", dependencies: ["CZlib"]),
        // Herald's calls out over HTTP(S): a JWKS, the connect proxy. Sockets and libssl.
        .target(name: "HeraldOutbound", dependencies: ["CSocket", "COpenSSL", "HeraldCore", "HeraldRuntime"]),

        // Wiring: threads, HTTP routes, metrics, shutdown. Its Redis scripts are Lua/*.lua,
        // embedded at build time by the LuaScripts plugin.
        .target(name: "HeraldServer", dependencies: [
            "HeraldCore", "HeraldRedis", "HeraldAMQP", "HeraldWebSocket", "HeraldServiceLoop", "HeraldCrypto", "HeraldOutbound", "HeraldDeflate", "HeraldRuntime",
            .product(name: "Logging", package: "swift-log"),
        ], plugins: ["LuaScripts"]),
        .executableTarget(name: "LuaEmbed"),
        .plugin(name: "LuaScripts", capability: .buildTool(), dependencies: ["LuaEmbed"], path: "Sources/LuaScriptsPlugin"),

        // The load generator behind `herald bench`.
        .target(name: "HeraldBench", dependencies: ["HeraldCore", "HeraldRuntime", "HeraldLoadClients", "HeraldAMQP"]),

        // The command line: serve, publish, bench, token, and HERALD_* variables for every option.
        .target(name: "HeraldCLI", dependencies: [
            "HeraldServer", "HeraldCore", "HeraldAMQP", "HeraldBench", "HeraldCrypto", "HeraldServiceLoop", "HeraldRuntime",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Yams", package: "Yams"),
        ]),
        .executableTarget(name: "herald", dependencies: ["HeraldCLI"]),

        .testTarget(name: "HeraldCoreTests", dependencies: ["HeraldCore", "HeraldCrypto"]),
        .testTarget(name: "HeraldBenchTests", dependencies: ["HeraldBench", "HeraldLoadClients"]),
        .testTarget(name: "HeraldCLITests", dependencies: ["HeraldCLI"]),
        .testTarget(name: "HeraldDeflateTests", dependencies: ["HeraldDeflate"]),
        .testTarget(name: "HeraldRedisTests", dependencies: ["HeraldRedis", "HeraldCore"]),
    ],
    swiftLanguageModes: [.v6]
)
