import ArgumentParser
import HeraldCore

/// The bounds of every HTTP connection (`herald serve`; SECURITY.md, "HTTP requests").
struct HTTPOptions: ParsableArguments {
    @Option(help: "Seconds a keep-alive HTTP connection may wait for its next request. (HERALD_HTTP_IDLE_TIMEOUT)")
    var httpIdleTimeout = HeraldConfig().httpIdleTimeoutSeconds
    @Option(help: "Bytes of an HTTP request line and headers; more: 431. (HERALD_MAX_HEADER_BYTES)")
    var maxHeaderBytes = HTTPLimits().maxHeadBytes
    @Option(help: "HTTP requests on one keep-alive connection; the last is answered with connection: close. (HERALD_MAX_REQUESTS_PER_CONNECTION)")
    var maxRequestsPerConnection = HTTPLimits().maxRequestsPerConnection

    func validate() throws {
        guard httpIdleTimeout >= 1, maxHeaderBytes >= 1_024, maxRequestsPerConnection >= 1 else {
            throw ValidationError("--http-idle-timeout and --max-requests-per-connection must be at least 1, --max-header-bytes at least 1024")
        }
    }

    func apply(to config: inout HeraldConfig) {
        config.httpIdleTimeoutSeconds = httpIdleTimeout
        config.httpLimits.maxHeadBytes = maxHeaderBytes
        config.httpLimits.maxRequestsPerConnection = maxRequestsPerConnection
    }
}
