import Foundation
import PackagePlugin

/// Embeds the target's `*.lua` files as Swift strings (`Lua.<name>`) at build time, with
/// LuaEmbed: the scripts live in files of their own, to be read, diffed and run with
/// `redis-cli --eval`, and the binary still carries them.
@main
struct LuaScripts: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let module = target as? SourceModuleTarget else { return [] }
        let scripts = module.sourceFiles.map(\.url).filter { $0.pathExtension == "lua" }
        let output = context.pluginWorkDirectoryURL.appendingPathComponent("LuaSources.swift")
        return [.buildCommand(displayName: "Embedding \(scripts.count) Lua files in \(target.name)",
                              executable: try context.tool(named: "LuaEmbed").url,
                              arguments: [output.path] + scripts.map(\.path),
                              inputFiles: scripts, outputFiles: [output])]
    }
}
