/// Herald's version, printed by `herald --version` and exported as `herald_build_info`.
/// Raised with every release (semantic versioning: the protocol only ever adds).
public enum HeraldVersion {
    public static let current = "0.10.0"
}
