"""What users install beside the server: the web client's package (its hand-written types checked
by Debian's TypeScript compiler, its Node example run against a real Herald), the systemd unit
(checked by systemd-analyze), and the license."""
import json
import os
import subprocess

from conftest import HERALD_BIN, ROOT, publish

WEB = os.path.join(ROOT, "web-client")


def tsc(*files):
    return subprocess.run(["tsc", "--noEmit", "--strict", "--target", "es2022", "--module", "es2022",
                           "--moduleResolution", "node", "--lib", "es2022,dom", *files],
                          cwd=WEB, capture_output=True, text=True, timeout=120)


def test_the_package_describes_what_it_ships():
    with open(os.path.join(WEB, "package.json")) as f:
        pkg = json.load(f)
    assert pkg["type"] == "module" and pkg["license"] == "MIT"
    assert pkg["exports"]["."] == {"types": "./herald.d.ts", "default": "./herald.js"} and pkg["types"] == "./herald.d.ts"
    for path in pkg["files"]:
        assert os.path.exists(os.path.join(WEB, path)), path
    # Every module herald.js pulls in is inside what the package ships.
    listed = node(["-e", "import('./herald.js').then(m => console.log(Object.keys(m).sort().join(',')))"]).stdout.strip().split(",")
    declared = open(os.path.join(WEB, "herald.d.ts")).read()
    for name in listed:
        assert f" {name}" in declared and ("class " + name in declared or "const " + name in declared or "function " + name in declared), \
            f"{name} is exported by herald.js but not declared in herald.d.ts"
    assert os.path.exists(os.path.join(ROOT, "LICENSE"))


def test_the_types_accept_a_typed_application_and_reject_misuse(tmp_path):
    ok = tsc("examples/typed.ts")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = os.path.join(WEB, "examples", ".misuse.ts")
    try:
        with open(wrong, "w") as f:
            f.write('import { HeraldClient } from "../herald.js";\n'
                    'const c = new HeraldClient("/ws", { transports: ["carrier-pigeon"] });\n'
                    'c.subscribe(42);\n'
                    'c.on("message", (m: string) => m);\n')
        bad = tsc("examples/.misuse.ts")
    finally:
        os.remove(wrong)
    assert bad.returncode != 0
    # One error for each misuse: an unknown transport, a channel that is not a string, an event
    # the client does not have.
    assert [line.split("(")[1].split(",")[0] for line in bad.stdout.splitlines() if ".misuse.ts(" in line] == ["2", "3", "4"], bad.stdout


def node(args, timeout=30):
    return subprocess.run(["node", *args], cwd=WEB, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NODE_PATH": "/usr/share/nodejs"})


def test_the_node_example_reads_a_channel_with_debians_ws(herald, exchange):
    publish(exchange, "nodeex", [json.dumps({"n": i}).encode() for i in range(1, 6)], content_type="application/json")
    out = node(["examples/node.mjs", herald.ws_url(), "nodeex", "5"])
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(m["seq"], m["data"], m["replayed"]) for m in lines] == [(i, {"n": i}, True) for i in range(1, 6)]


def test_the_systemd_unit_verifies():
    with open(os.path.join(ROOT, "deploy", "herald.service")) as f:
        unit = f.read()
    assert "ExecStart=/usr/local/bin/herald serve" in unit
    path = os.path.join(ROOT, "test-output", "herald.service")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(unit.replace("/usr/local/bin/herald", os.path.abspath(HERALD_BIN)))
    out = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


def test_an_installed_herald_serves_its_web_client_from_any_working_directory(herald_factory, tmp_path):
    prefix = tmp_path / "prefix"
    out = subprocess.run([os.path.join(ROOT, "scripts", "install"), str(prefix)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "HERALD_BIN": os.path.abspath(HERALD_BIN)})
    assert out.returncode == 0, out.stderr
    for f in ("bin/herald", "share/herald/web-client/herald.js", "share/herald/web-client/lib/client.js",
              "share/herald/web-client/index.html", "share/herald/web-client/package.json", "share/doc/herald/LICENSE"):
        assert (prefix / f).is_file(), f
    assert not (prefix / "share/herald/web-client/test").exists(), "the client's tests are not installed"
    config = tmp_path / "herald.yaml"
    config.write_text("port: 8080\n")
    check = subprocess.run([str(prefix / "bin" / "herald"), "config", "check", str(config)], cwd="/",
                           capture_output=True, text=True, timeout=30)
    assert f'web-root: "{prefix}/share/herald/web-client"  # default' in check.stdout, check.stdout

    import urllib.request
    from conftest import free_port, wait_until
    h = herald_factory()
    port = free_port()
    log = open(os.path.join(ROOT, "test-output", f"installed-{port}.log"), "w")
    proc = subprocess.Popen([str(prefix / "bin" / "herald"), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--exchange", h.exchange, "--redis-url", h.redis_url],
                            cwd="/", stdout=log, stderr=log)
    try:
        def fetch(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    return r.status, r.read()
            except Exception:
                return None, b""
        wait_until(lambda: fetch("/livez")[0] == 200, 20, what="the installed herald to serve")
        with open(os.path.join(WEB, "herald.js"), "rb") as f:
            assert fetch("/herald.js") == (200, f.read())
        assert fetch("/lib/client.js")[0] == 200
        with open(os.path.join(WEB, "index.html"), "rb") as f:
            assert fetch("/") == (200, f.read())
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_web_root_without_the_client_is_named_in_the_log(herald_factory, tmp_path):
    h = herald_factory(extra=["--web-root", str(tmp_path)]).start()
    h.stop()
    assert f"no herald.js in the web root: / and /herald.js answer 404" in h.log()
    assert str(tmp_path) in h.log()
