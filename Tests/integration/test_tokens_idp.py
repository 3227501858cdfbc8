"""Tokens from an identity provider: RS/PS/ES/EdDSA verified with keys from PEM files, a JWKS
file and a JWKS URL (fetched, refreshed on a new kid, kept while the URL is down), iss/aud
checks, a configurable channels claim, and every refusal with its own reason."""
import base64
import datetime
import http.server
import ipaddress
import json
import os
import ssl
import subprocess
import threading
import time

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from websockets.exceptions import ConnectionClosed

from conftest import HERALD_BIN, Client, free_port, publish, wait_until


def make_keys():
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
    }


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(key, kid):
    """The public JWK of a private key, built by hand (RFC 7518 §6, RFC 8037 §2)."""
    pub = key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        n = pub.public_numbers()
        return {"kty": "RSA", "kid": kid, "use": "sig", "n": b64(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
                "e": b64(n.e.to_bytes(3, "big"))}
    if isinstance(pub, ec.EllipticCurvePublicKey):
        size = 32 if pub.curve.name == "secp256r1" else 48
        n = pub.public_numbers()
        return {"kty": "EC", "kid": kid, "crv": "P-256" if size == 32 else "P-384",
                "x": b64(n.x.to_bytes(size, "big")), "y": b64(n.y.to_bytes(size, "big"))}
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(raw)}


def claims(**extra):
    now = int(time.time())
    return {"sub": "user-1", "iat": now, "exp": now + 300, "channels": ["chat:*"], **extra}


def sign(key, alg, kid=None, **extra):
    return pyjwt.encode(claims(**extra), key, algorithm=alg, headers={"kid": kid} if kid else None)


def close_code(client):
    try:
        for _ in range(10):
            client.recv(timeout=5)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    return None


def connects(herald, token, channel="chat:1"):
    c = Client(herald.ws_url(f"token={token}&channel={channel}"))
    first = c.recv()
    assert first["type"] == "authenticated", first
    assert first["sub"] == "user-1"
    assert c.recv()["type"] == "subscribed"
    return c


def refused(herald, token, code=4001):
    c = Client(herald.ws_url(f"token={token}&channel=chat:1"))
    assert close_code(c) == code


class JWKSServer:
    """A local JWKS endpoint whose key set a test can change or take down."""

    def __init__(self, tls_files=None):
        self.document = {"keys": []}
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.scheme = "http"
        if tls_files:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls_files)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}/.well-known/jwks.json"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def keys():
    return make_keys()


def test_every_algorithm_verifies_with_its_public_key_file(herald_factory, tmp_path, keys, exchange):
    files = []
    for name, key in keys.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(public_pem(key))
        files += ["--token-public-key-file", str(path)]
    herald = herald_factory(extra=files).start()
    for key, alg in [("rsa", "RS256"), ("rsa", "RS384"), ("rsa", "RS512"), ("rsa", "PS256"),
                     ("p256", "ES256"), ("p384", "ES384"), ("ed", "EdDSA")]:
        c = connects(herald, sign(keys[key], alg))
        c.close()
    # A token of a key the server does not have: a bad signature, not an error of the server.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(herald, sign(stranger, "RS256"))
    by_reason = herald.labeled("herald_auth_failures_by_reason_total")
    assert by_reason['reason="bad_signature"'] == 1 and sum(by_reason.values()) == 1
    # And what a valid IdP token reads, it receives.
    c = connects(herald, sign(keys["ed"], "EdDSA"), channel="chat:live")
    publish(exchange, "chat:live", [b"hello"])
    msgs, _ = c.recv_messages("chat:live", 1)
    assert msgs[0]["data"] == "hello"
    c.close()


def test_herald_token_mints_tokens_herald_verifies(herald_factory, tmp_path, keys):
    (tmp_path / "p256.pem").write_bytes(public_pem(keys["p256"]))
    (tmp_path / "p256.key").write_bytes(private_pem(keys["p256"]))
    herald = herald_factory(extra=["--token-public-key-file", str(tmp_path / "p256.pem"),
                                   "--token-issuer", "https://idp.test", "--token-audience", "herald"]).start()
    out = subprocess.run([HERALD_BIN, "token", "--sub", "user-1", "--channels", "chat:*", "--private-key-file",
                          str(tmp_path / "p256.key"), "--iss", "https://idp.test", "--aud", "herald", "--kid", "k1"],
                         capture_output=True, text=True, check=True)
    token = out.stdout.strip()
    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == "k1"
    # An independent implementation agrees with the signature.
    decoded = pyjwt.decode(token, keys["p256"].public_key(), algorithms=["ES256"], audience="herald", issuer="https://idp.test")
    assert decoded["sub"] == "user-1" and decoded["channels"] == ["chat:*"]
    connects(herald, token).close()
    bad = subprocess.run([HERALD_BIN, "token", "--sub", "u", "--private-key-file", str(tmp_path / "p256.key"), "--alg", "RS256"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "does not fit a P-256 key" in bad.stderr


# Each refusal, built when the test runs (the clock is read then), with the reason /metrics names.
def _refusals(keys, rsa_public_pem):
    return {
        "wrong iss": (sign(keys["rsa"], "RS256", kid="k1", iss="https://evil", aud="herald"), "bad_issuer", 4001),
        "wrong aud": (sign(keys["rsa"], "RS256", kid="k1", iss="https://idp.test", aud="other"), "bad_audience", 4001),
        "expired": (sign(keys["rsa"], "RS256", kid="k1", iss="https://idp.test", aud="herald", exp=int(time.time()) - 60),
                    "expired", 4001),
        "not yet valid": (sign(keys["rsa"], "RS256", kid="k1", iss="https://idp.test", aud="herald", nbf=int(time.time()) + 60),
                          "not_yet_valid", 4001),
        "alg none": (b64(b'{"alg":"none","kid":"k1"}') + "." + b64(json.dumps(claims(iss="https://idp.test", aud="herald")).encode()) + ".",
                     "bad_alg", 4001),
        # The confusion attack: HS256 "signed" with the RSA public key's PEM as the secret.
        "HS256 with the public key": (_hs256(claims(iss="https://idp.test", aud="herald"), rsa_public_pem, kid="k1"), "alg_mismatch", 4001),
        # A key file cannot learn new keys: 4001 (with a JWKS URL it is 4004, retry: see below).
        "unknown kid": (sign(keys["rsa"], "RS256", kid="nobody", iss="https://idp.test", aud="herald"), "unknown_kid", 4001),
    }


def _hs256(payload, secret, kid):
    import hashlib
    import hmac
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}." + b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())


@pytest.mark.parametrize("name", ["wrong iss", "wrong aud", "expired", "not yet valid", "alg none",
                                  "HS256 with the public key", "unknown kid"])
def test_each_bad_idp_token_is_refused_for_its_own_reason(herald_factory, tmp_path, keys, name):
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk(keys["rsa"], "k1")]}))
    herald = herald_factory(extra=["--jwks-file", str(tmp_path / "jwks.json"),
                                   "--token-issuer", "https://idp.test", "--token-audience", "herald"]).start()
    token, reason, code = _refusals(keys, public_pem(keys["rsa"]))[name]
    refused(herald, token, code)
    by_reason = herald.labeled("herald_auth_failures_by_reason_total")
    assert by_reason[f'reason="{reason}"'] == 1, by_reason
    assert sum(by_reason.values()) == 1
    # The good token of the same key still connects.
    connects(herald, sign(keys["rsa"], "RS256", kid="k1", iss="https://idp.test", aud="herald")).close()


def test_a_namespaced_channels_claim(herald_factory, tmp_path, keys):
    (tmp_path / "ed.pem").write_bytes(public_pem(keys["ed"]))
    claim = "https://herald.example.com/channels"
    herald = herald_factory(extra=["--token-public-key-file", str(tmp_path / "ed.pem"), "--token-channels-claim", claim]).start()
    token = pyjwt.encode({**claims(), claim: ["room:*"], "channels": ["*"]}, keys["ed"], algorithm="EdDSA")
    c = Client(herald.ws_url(f"token={token}"))
    assert c.recv()["type"] == "authenticated"
    c.send({"op": "subscribe", "channel": "room:1"})
    assert c.recv()["type"] == "subscribed"
    c.send({"op": "subscribe", "channel": "chat:1"})   # the plain "channels" claim is not read
    e = c.recv()
    assert (e["type"], e["code"]) == ("error", "forbidden")
    c.close()


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald test idp")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "idp.crt", tmp_path / "idp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(private_pem(key))
    return str(cert_path), str(key_path)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_jwks_url_is_fetched_rotated_and_survives_going_down(herald_factory, tmp_path, keys, exchange, scheme):
    tls = self_signed(tmp_path) if scheme == "https" else None
    idp = JWKSServer(tls_files=tls)
    try:
        idp.document = {"keys": [jwk(keys["rsa"], "k1")]}
        # The test's CA is trusted through OpenSSL's SSL_CERT_FILE, as an operator would add a private CA.
        herald = herald_factory(extra=["--jwks-url", idp.url], env={"SSL_CERT_FILE": tls[0]} if tls else None).start()
        wait_until(lambda: herald.metrics().get("herald_jwks_keys") == 1, 10, what="the JWKS to load")
        first = connects(herald, sign(keys["rsa"], "RS256", kid="k1"), channel="chat:rot")

        # Rotation: the IdP adds k2 and signs with it. The first k2 token finds no key yet
        # (4004: retry) and makes Herald fetch again; the retry is accepted, with no restart.
        idp.document = {"keys": [jwk(keys["rsa"], "k1"), jwk(keys["ed"], "k2")]}
        fetches = herald.metrics()["herald_jwks_fetches_total"]
        refused(herald, sign(keys["ed"], "EdDSA", kid="k2"), 4004)
        wait_until(lambda: herald.metrics().get("herald_jwks_keys") == 2, 10, what="the rotated JWKS to load")
        assert herald.metrics()["herald_jwks_fetches_total"] == fetches + 1
        second = connects(herald, sign(keys["ed"], "EdDSA", kid="k2"), channel="chat:rot")

        # The URL goes down: a fetch fails (stale), nobody is disconnected, cached keys still verify.
        idp.stop()
        refused(herald, sign(keys["p256"], "ES256", kid="k3"), 4004)
        wait_until(lambda: herald.metrics().get("herald_jwks_stale") == 1, 15, what="a failed fetch")
        assert herald.metrics()["herald_jwks_fetch_failures_total"] >= 1
        assert herald.metrics()["herald_jwks_keys"] == 2
        assert "JWKS fetch failed; checking tokens with the last good set (stale)" in herald.log()
        connects(herald, sign(keys["rsa"], "RS256", kid="k1")).close()
        publish(exchange, "chat:rot", [b"still here"])
        for c in (first, second):
            msgs, _ = c.recv_messages("chat:rot", 1)
            assert msgs[0]["data"] == "still here"
            c.close()
    finally:
        try:
            idp.stop()
        except Exception:
            pass


def test_an_untrusted_certificate_is_not_trusted(herald_factory, tmp_path, keys):
    idp = JWKSServer(tls_files=self_signed(tmp_path))
    try:
        idp.document = {"keys": [jwk(keys["rsa"], "k1")]}
        herald = herald_factory(extra=["--jwks-url", idp.url]).start()   # no SSL_CERT_FILE: the system's CAs only
        wait_until(lambda: herald.metrics().get("herald_jwks_fetch_failures_total", 0) >= 1, 10, what="the fetch to fail")
        assert herald.metrics()["herald_jwks_keys"] == 0
        assert "certificate" in herald.log()
        refused(herald, sign(keys["rsa"], "RS256", kid="k1"), 4004)
    finally:
        idp.stop()


def test_a_bad_key_file_stops_the_start_with_its_reason(tmp_path):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "weak.pem").write_bytes(public_pem(weak))
    out = subprocess.run([HERALD_BIN, "serve", "--port", str(free_port()), "--token-public-key-file", str(tmp_path / "weak.pem")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "RSA keys must have at least 2048 bits (this one: 1024)" in out.stderr + out.stdout


def test_the_leeway_admits_a_just_expired_token_and_closes_it_after(herald_factory, tmp_path, keys):
    (tmp_path / "ed.pem").write_bytes(public_pem(keys["ed"]))
    herald = herald_factory(extra=["--token-public-key-file", str(tmp_path / "ed.pem"), "--token-leeway", "3"]).start()
    exp = int(time.time()) - 1
    c = connects(herald, sign(keys["ed"], "EdDSA", exp=exp))
    # Accepted within the 3 s leeway, then closed with 4002 once exp + leeway has passed.
    assert close_code(c) == 4002
    assert time.time() >= exp + 3
    refused(herald, sign(keys["ed"], "EdDSA", exp=int(time.time()) - 10))
