"""WebSocket protocol conformance: the Autobahn test cases (run by `kosoku` from PyPI) against
Herald's libwebsockets stack through a test-only echo endpoint, which is off by default.
The report lands in test-output/autobahn/index.html."""
import json
import os
import shutil
import socket
import subprocess
from collections import Counter

from conftest import ROOT

OUT = os.path.join(ROOT, "test-output", "autobahn")
# RFC 6455 5.5.3: an endpoint MAY answer only the most recent of several pings; libwebsockets
# does when the pings arrive faster than it writes, and cases 2.10 and 2.11 (ten pings in a row)
# expect a pong for each.
EXPLAINED = {"2.10", "2.11"}


def upgrade(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        return s.recv(1024).split(b" ")[1].decode()


def test_the_echo_endpoint_does_not_exist_by_default(herald):
    assert upgrade(herald.port, "/echo") == "404"
    assert upgrade(herald.port, "/ws") == "101"


def test_an_offer_of_permessage_deflate_is_not_taken(herald):
    """Debian's libwebsockets 4.1.6 aborts the process on some compressed input (see README,
    "Known limits"), so Herald does not negotiate the extension: the 101 has no
    Sec-WebSocket-Extensions, and a client that offered it talks uncompressed."""
    with socket.create_connection(("127.0.0.1", herald.port), timeout=5) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
        head = s.recv(4096).split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 101") and "sec-websocket-extensions" not in head


def test_autobahn_cases_pass(herald_factory):
    kosoku = shutil.which("kosoku")
    assert kosoku, "pip install kosoku"
    h = herald_factory(extra=["--test-echo-path", "/echo"]).start()
    shutil.rmtree(OUT, ignore_errors=True)
    # 12.* and 13.* test permessage-deflate, which Herald does not negotiate (README, "Known limits").
    subprocess.run([kosoku, f"ws://127.0.0.1:{h.port}/echo", "-x", "12.*", "-x", "13.*", "-o", OUT],
                   capture_output=True, text=True, timeout=600)
    with open(os.path.join(OUT, "index.json")) as f:
        results = next(iter(json.load(f).values()))
    behaviors = Counter(r["behavior"] for r in results.values())
    failed = {case for case, r in results.items() if r["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL")
              or r["behaviorClose"] not in ("OK", "INFORMATIONAL")}
    with open(os.path.join(ROOT, "test-output", "autobahn-summary.json"), "w") as f:
        json.dump({"cases": len(results), **behaviors, "failed": sorted(failed)}, f)
    assert len(results) >= 300
    # Whether lws coalesces the pongs depends on timing, so 2.10/2.11 may pass or not.
    assert failed <= EXPLAINED, f"unexplained failures: {sorted(failed - EXPLAINED)}"
