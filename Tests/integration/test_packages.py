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
