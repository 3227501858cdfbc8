"""Autobahn's permessage-deflate cases (12.* and 13.*, run by `kosoku`) against Herald's own
RFC 7692 layer through the test-only echo endpoint. In a file of its own so that scripts/test runs
it once (against two WebSocket threads, which serve the echo endpoint alike), beside the other
tests, rather than again in the one-thread pass: it is the longest test of the suite."""
from test_conformance import OUT, run_kosoku


def test_autobahn_compression_cases_pass(herald_factory):
    """12.* and 13.*: 216 cases of 1,000 compressed messages each, 16 B to 128 KiB, whole and
    fragmented, with every parameter combination a client offers (windows of 9 and 15 bits,
    no context takeover, several offers). The echo compresses every message it sends back
    (`--compression-min-bytes 0`): kosoku hands a case a plain text message as a string but a
    compressed one as bytes, and the case hashes what it gets, so a plain echo of a small text
    message fails in the harness ("Strings must be encoded before hashing"), not on the wire."""
    h = herald_factory(extra=["--test-echo-path", "/echo", "--compression-min-bytes", "0"]).start()
    results, failed = run_kosoku(h, OUT + "-deflate", "-i", "12.*", "-i", "13.*")
    assert len(results) == 216
    assert failed == set(), f"failed: {sorted(failed)}"
    assert all(r["behavior"] == "OK" for r in results.values())
