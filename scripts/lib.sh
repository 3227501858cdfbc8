# Shared by scripts/run and scripts/test: install what is missing, start what is not running.
set -euo pipefail

APT_PACKAGES="libwebsockets-dev libev-dev libhiredis-dev librabbitmq-dev libssl-dev zlib1g-dev rabbitmq-server redis-server chromium chromium-driver nodejs node-typescript node-ws systemd golang-go golang-github-rabbitmq-amqp091-go-dev nginx curl"
PY_PACKAGES="pika websockets redis pytest pytest-xdist selenium kosoku PyJWT cryptography schemathesis"

log() { printf '\033[1m[herald]\033[0m %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_apt_packages() {
    local missing=()
    for p in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

PY_IMPORTS="import pika, websockets, redis, pytest, xdist, selenium, kosoku, jwt, cryptography, schemathesis"

ensure_python_packages() {
    if ! python3 -c "$PY_IMPORTS" 2>/dev/null; then
        log "installing Python packages: $PY_PACKAGES"
        # A failed install fails the script; pip's root warning is the only line dropped.
        local out status=0
        out=$(python3 -m pip install -q $PY_PACKAGES 2>&1) || status=$?
        printf '%s\n' "$out" | grep -v -e "Running pip as the 'root' user" -e '^$' >&2 || :
        if [ "$status" -ne 0 ] || ! python3 -c "$PY_IMPORTS"; then
            log "pip install failed"; exit 1
        fi
    fi
}

ensure_rabbitmq() {
    if ! rabbitmqctl -q await_startup --timeout 2 >/dev/null 2>&1; then
        log "starting RabbitMQ"
        as_root rabbitmq-server -detached >/dev/null 2>&1 || true
        local up=no
        for _ in $(seq 1 60); do
            if rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; then log "RabbitMQ is up"; up=yes; break; fi
            sleep 1
        done
        if [ "$up" != yes ]; then log "RabbitMQ did not start"; exit 1; fi
    fi
    # --partitions N routes the fanout exchange through a consistent-hash exchange (a plugin
    # that ships with RabbitMQ, off by default).
    if ! as_root rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_consistent_hash_exchange; then
        log "enabling rabbitmq_consistent_hash_exchange"
        as_root rabbitmq-plugins enable rabbitmq_consistent_hash_exchange >/dev/null || { log "could not enable the consistent-hash exchange"; exit 1; }
    fi
}

ensure_redis() {
    if redis-cli -p 6379 ping >/dev/null 2>&1; then return; fi
    log "starting Redis on 127.0.0.1:6379"
    # Its snapshot goes to .herald-run/ (git-ignored), not to the working directory.
    mkdir -p .herald-run
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir "$PWD/.herald-run" >/dev/null
    for _ in $(seq 1 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && return; sleep 0.1; done
    log "Redis did not start"; exit 1
}

# Builds the release binary. A failed build fails the script (never a stale binary from an
# earlier build); errors and warnings are shown, the full log is kept in test-output/.
build_release() {
    log "building herald (release)"
    mkdir -p test-output
    local out=test-output/build-release.log
    if ! swift build -c release --product herald >"$out" 2>&1; then
        grep -E "error|warning:" "$out" >&2 || tail -40 "$out" >&2
        log "the release build failed (full log: $out)"
        exit 1
    fi
    grep -E "warning:|Build complete" "$out" >&2 || :
}
