"""Endpoint protection: TLS (incl. client certificates) and basic auth from --web.config.file,
and the API token on writes (and optionally reads) — with real TLS clients on loopback."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml

from outbound_call_exporter.errors import ConfigError
from outbound_call_exporter.webconfig import load_web_config
from outbound_call_exporter_plugins.telzino.fake import TelzinoFake

from conftest import account, make_config, running_service, wait_until

AGENT = "123e4567-e89b-12d3-a456-426614174000"
CALL = "0fc6daf8-7251-4553-9488-867ba0b82d8e"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all generated here."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=test-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "1", *extra, cwd=d)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_service(tmp_path: Path, fake: TelzinoFake, web: dict | None, **config) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = tmp_path / "config.yml"
    cfg.write_text(yaml.safe_dump({"listen_address": f"127.0.0.1:{port}", "store_path": str(tmp_path / "c.db"),
                                   "accounts": [{"name": "tz", "provider": "telzino", "base_url": fake.url,
                                                 "settings": fake.demo_settings()}], **config}))
    args = [sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config", str(cfg)]
    if web is not None:
        (tmp_path / "web.yml").write_text(yaml.safe_dump(web))
        args += ["--web.config.file", str(tmp_path / "web.yml")]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def answers(url: str, **kwargs) -> bool:
    try:
        httpx.get(url, timeout=2, **kwargs)
        return True
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def fake():
    f = TelzinoFake()
    with f.running():
        yield f


def test_tls_and_basic_auth_on_every_endpoint(tmp_path, pki, fake):
    hashed = bcrypt.hashpw(b"pa55word", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")  # htpasswd style
    web = {"tls_server_config": {"cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key")},
           "basic_auth_users": {"alice": hashed}}
    proc, port = run_service(tmp_path, fake, web, api_token="tok")
    url = f"https://127.0.0.1:{port}"
    ca = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    try:
        wait_until(lambda: answers(f"{url}/-/healthy", verify=ca), message="TLS listener")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).raise_for_status()  # plain HTTP refused
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/metrics", timeout=5)  # not trusted without the CA
        for path in ("/metrics", "/-/healthy", "/-/ready", "/", "/api/v1/calls", "/api/v1/openapi.json"):
            for auth in (None, ("alice", "wrong"), ("bob", "pa55word")):
                r = httpx.get(url + path, verify=ca, auth=auth, timeout=10)
                assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic"), (path, auth)
            assert httpx.get(url + path, verify=ca, auth=("alice", "pa55word"), timeout=10).status_code == 200, path
        body = {"account": "tz", "call_id": CALL, "params": {"agent_id": AGENT}}
        r = httpx.post(f"{url}/api/v1/calls", json=body, verify=ca, auth=("alice", "pa55word"), timeout=10)
        assert r.status_code == 401  # basic auth passes, the API token is still needed for writes
        r = httpx.post(f"{url}/api/v1/calls", json=body, verify=ca, auth=("alice", "pa55word"),
                       headers={"X-API-Token": "tok"}, timeout=10)
        assert r.status_code == 201
        cli = subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", "watch", "--url", url,
                              "--ca-file", str(pki / "ca.crt"), "--basic-auth", "alice:pa55word", "--token", "tok",
                              "--account", "tz", "--call-id", CALL, "--param", f"agent_id={AGENT}"],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0 and "already known" in cli.stdout, cli.stderr
    finally:
        stop(proc)


def test_client_certificates_required(tmp_path, pki, fake):
    web = {"tls_server_config": {"cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key"),
                                 "client_auth_type": "RequireAndVerifyClientCert",
                                 "client_ca_file": str(pki / "ca.crt"), "min_version": "TLS13"}}
    proc, port = run_service(tmp_path, fake, web)
    url = f"https://127.0.0.1:{port}/metrics"
    with_cert = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with_cert.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    without = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    try:
        wait_until(lambda: answers(url, verify=with_cert), message="mTLS listener")
        assert httpx.get(url, verify=with_cert, timeout=10).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=without, timeout=10).raise_for_status()
        old = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        old.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, verify=old, timeout=10)  # below min_version
    finally:
        stop(proc)


@pytest.mark.parametrize("web, message", [
    ({"basic_auth_users": {"alice": "plaintext"}}, "not a bcrypt hash"),
    ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "missing.key"}}, "cannot load certificates"),
    ({"tls_server_config": {"cert_file": "a", "key_file": "b"}, "bogus": 1}, "bogus"),
    ({"tls_server_config": {"cert_file": "x", "key_file": "y", "min_version": "SSL3"}}, "min_version"),
])
def test_bad_web_config_is_a_clear_error(tmp_path, web, message):
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(web))
    with pytest.raises(ConfigError, match=message) as info:
        load_web_config(path)
    assert "plaintext" not in str(info.value)


def test_api_token_can_protect_reads(tmp_path, registry, fake):
    config = make_config(tmp_path, [account("tz", "telzino", fake.url, fake.demo_settings())],
                         api_token="read-tok", api_token_for_reads=True)
    with running_service(config, registry) as svc:
        assert svc.client.get("/api/v1/calls").status_code == 401
        assert svc.client.get(f"/api/v1/calls/tz/{CALL}").status_code == 401
        assert svc.client.get("/api/v1/calls", headers={"Authorization": "Bearer read-tok"}).status_code == 200
        assert svc.client.get("/metrics").status_code == 200  # metrics are not part of the API
