"""`healthcheck`: exit 0 when the service at the config's listen_address answers /-/healthy,
1 otherwise (Docker's codes), over plain HTTP and over TLS with client certificates and basic
auth from the web config."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import bcrypt
import yaml

from test_web_security import free_port, openssl, pki, stop  # noqa: F401  (pki is a fixture)
from conftest import make_config, running_service, wait_until

ACCOUNT = {"name": "tz", "provider": "telzino", "base_url": "http://127.0.0.1:9",
           "settings": {"token": "healthcheck-token", "agent_id": str(uuid.uuid4())}}


def healthcheck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", "healthcheck", *args],
                          capture_output=True, text=True, timeout=60)


def write_config(path: Path, listen: str) -> Path:
    path.write_text(yaml.safe_dump({"listen_address": listen, "store_path": str(path.parent / "c.db"),
                                    "accounts": [ACCOUNT]}))
    return path


def test_healthy_by_config_and_by_listen_address(tmp_path):
    with running_service(make_config(tmp_path, [ACCOUNT])) as svc:
        port = svc.url.rsplit(":", 1)[1]
        config = write_config(tmp_path / "config.yml", f"0.0.0.0:{port}")  # what a container listens on
        result = healthcheck("--config", str(config))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"healthy: http://127.0.0.1:{port}/-/healthy"
        assert healthcheck("--listen", f"127.0.0.1:{port}").returncode == 0


def test_unhealthy_is_exit_1_with_the_reason(tmp_path):
    port = free_port()
    result = healthcheck("--config", str(write_config(tmp_path / "config.yml", f"0.0.0.0:{port}")))
    assert result.returncode == 1
    assert f"unhealthy: http://127.0.0.1:{port}/-/healthy: ConnectError" in result.stderr
    (tmp_path / "bad.yml").write_text("listen_address: nowhere\n")
    result = healthcheck("--config", str(tmp_path / "bad.yml"))
    assert result.returncode == 1 and "unhealthy:" in result.stderr and "listen_address" in result.stderr


def test_over_tls_with_client_certificates_and_basic_auth(tmp_path, pki):  # noqa: F811
    port = free_port()
    config = write_config(tmp_path / "config.yml", f"127.0.0.1:{port}")
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key"),
                              "client_auth_type": "RequireAndVerifyClientCert",
                              "client_ca_file": str(pki / "ca.crt")},
        "basic_auth_users": {"alice": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()}}))
    proc = subprocess.Popen([sys.executable, "-m", "outbound_call_exporter.cli", "run", "--config", str(config),
                             "--web.config.file", str(web)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result = wait_until(lambda: (r := healthcheck("--config", str(config), "--web.config.file", str(web)))
                            .returncode == 0 and r, timeout=30, interval=0.3, message="a healthy TLS service")
        assert result.stdout.strip() == f"healthy: https://127.0.0.1:{port}/-/healthy answers (basic auth required)"
        plain = healthcheck("--config", str(config))  # plain HTTP to a TLS listener
        assert plain.returncode == 1
    finally:
        stop(proc)
