import HeraldCore
import HeraldWebSocket

/// The admin listener (`--admin-listen`): `/livez` and `/readyz` for probes, `/metrics`, the
/// admin page at `/`, and its data at `/api/overview`. With `--admin-token`, `/metrics` and
/// `/api/*` need `Authorization: Bearer <token>` (401 otherwise); the page itself holds no
/// data and asks for the token.
///
/// - Important: every method runs on the service thread that serves the listener.
final class AdminRoutes {
    let config: HeraldConfig
    let metrics: Metrics
    let health: Health
    let registry: NodeRegistry

    init(config: HeraldConfig, metrics: Metrics, health: Health, registry: NodeRegistry) {
        self.config = config
        self.metrics = metrics
        self.health = health
        self.registry = registry
    }

    func handle(_ request: HTTPRequest) {
        guard request.method == "GET" else {
            return request.respond(status: 405, json: HTTPResponse.errorJSON("method_not_allowed", "the admin listener answers GET (and HEAD) only"),
                                   headers: [("allow", "GET, HEAD")])
        }
        switch request.path {
        case "/livez":
            HTTPRoutes.livez(request, config: config)
        case "/readyz", "/healthz":
            HTTPRoutes.readyz(request, config: config, health: health, metrics: metrics)
        case "/", "/index.html":
            request.respond(status: 200, contentType: "text/html; charset=utf-8", body: AdminPage.html,
                            headers: [("cache-control", "no-store"),
                                      ("content-security-policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")])
        case "/metrics":
            if refused(request) { return }
            HTTPRoutes.metrics(request, metrics: metrics, health: health)
        case "/api/overview":
            if refused(request) { return }
            guard let overview = registry.overview.withLock({ $0 }) else {
                return request.respond(status: 503, json: HTTPResponse.errorJSON("starting", "the first heartbeat has not been taken yet; try again"))
            }
            request.respond(status: 200, contentType: "application/json", body: overview, headers: [("cache-control", "no-store")])
        default:
            request.respond(status: 404, json: HTTPResponse.errorJSON("not_found", "the admin listener serves /, /api/overview, /metrics, /readyz and /livez"))
        }
    }

    private func refused(_ request: HTTPRequest) -> Bool {
        guard case let .refused(status, code, message) = HTTPAccess.admin(request.credentials, token: config.adminToken) else { return false }
        metrics.httpAuthRefused.add()
        request.respond(status: status, json: HTTPResponse.errorJSON(code, message),
                        headers: [("www-authenticate", "Bearer realm=\"herald-admin\"")])
        return true
    }
}
