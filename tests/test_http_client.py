"""`http_client`: config (names, inheritance, check-config errors) and TLS against real TLS
servers on 127.0.0.1 whose certificates come from a CA made in the test.

Trust: the CA is trusted through tls_config.ca_file, SSL_CERT_FILE or SSL_CERT_DIR, and
refused without any of them; client certificates, server_name, insecure_skip_verify and
min_version each change what a real handshake does. Proxies: test_proxy.py.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from outbound_call_exporter import ErrorReason, PollError
from outbound_call_exporter.cli import main as cli
from outbound_call_exporter.config import Config, load_config, resolve_accounts
from outbound_call_exporter.httpclient import HTTPClientConfig, resolve
from outbound_call_exporter.transport import AiohttpTransport

from conftest import require_tool
from tls_provider import PROVIDER_NAME, Certs, tls_server

AGENT = "123e4567-e89b-12d3-a456-426614174000"
ACCOUNT = {"name": "t", "provider": "telzino", "settings": {"token": "tok", "agent_id": AGENT}}


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(autouse=True)
def no_ambient_tls_or_proxy(monkeypatch):
    """The machine's own trust and proxy settings must not decide these tests."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY",
                 "https_proxy", "http_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def transport(http_client: dict | None = None) -> AiohttpTransport:
    client = resolve(HTTPClientConfig.model_validate(http_client or {}), "http_client")
    return AiohttpTransport(4, 5, 1 << 20, client, name="t")


async def fetch(http_client: dict | None, url: str) -> httpx.Response | PollError:
    """One GET through a fresh transport: the answer, or the PollError it raised."""
    t = transport(http_client)
    try:
        return await t.send(httpx.Request("GET", url))
    except PollError as exc:
        return exc
    finally:
        await t.aclose()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# -- config -------------------------------------------------------------------------------------


def check_config(tmp_path, capsys, text: str) -> tuple[int, str]:
    path = tmp_path / "config.yml"
    if "accounts:" not in text:  # a config needs an account
        text += "accounts:\n  - {name: t, provider: telzino, settings: {token: tok, agent_id: " + AGENT + "}}\n"
    path.write_text(f"store_path: {tmp_path / 'calls.db'}\n" + text)
    code = cli(["check-config", "--config", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("text, field, message", [
    ("http_client: {tls_config: {ca_file: /nonexistent/ca.pem}}\n",
     "http_client.tls_config.ca_file", "no such file"),
    ("http_client: {tls_config: {key_file: KEY}}\n",
     "http_client.tls_config.key_file", "without cert_file"),
    ("http_client: {tls_config: {cert_file: CERT}}\n",
     "http_client.tls_config.cert_file", "without key_file"),
    ("http_client: {tls_config: {min_version: TLS14}}\n",
     "http_client.tls_config.min_version", "'TLS10', 'TLS11', 'TLS12' or 'TLS13'"),
    ("http_client: {tls_config: {ca_file: KEY}}\n",
     "http_client.tls_config.ca_file", "cannot load"),
    ("http_client: {tls_config: {cert_file: CERT, key_file: CA}}\n",
     "http_client.tls_config.cert_file", "cannot load"),
    ("http_client: {proxy_url: 'socks5://oce:pr0xy-pa55@proxy.invalid:1080'}\n",
     "http_client.proxy_url", "scheme 'socks5' is not supported"),
    ("http_client: {tls_config: {insecure: true}}\n",
     "http_client.tls_config.insecure", "unknown key"),
    ("accounts:\n  - {name: t, provider: telzino, settings: {token: tok, agent_id: " + AGENT + "},"
     " http_client: {tls_config: {key_file: KEY}}}\n",
     "accounts[0] (t).http_client.tls_config.key_file", "without cert_file"),
    ("accounts:\n  - {name: t, provider: telzino, settings: {token: tok, agent_id: " + AGENT + "},"
     " http_client: {tls_config: {ca_file: /nonexistent/ca.pem}}}\n",
     "accounts[0] (t).http_client.tls_config.ca_file", "no such file"),
], ids=["missing-ca", "key-without-cert", "cert-without-key", "unknown-tls-version", "ca-not-pem",
        "key-not-matching", "socks-proxy", "unknown-key", "account-key-without-cert", "account-missing-ca"])
def test_check_config_names_the_field(tmp_path, capsys, certs, text, field, message):
    text = (text.replace("KEY", str(certs.client_key)).replace("CERT", str(certs.client_cert))
            .replace("CA", str(certs.ca_file)))
    code, out = check_config(tmp_path, capsys, text)
    assert code != 0
    assert f"{field}: " in out and message in out, out
    assert "pr0xy-pa55" not in out and "PRIVATE KEY" not in out


def test_check_config_accepts_a_full_http_client_and_an_environment_proxy(tmp_path, capsys, certs, monkeypatch):
    text = f"""
http_client:
  proxy_url: "http://oce:pr0xy-pa55@proxy.corp.invalid:3128"
  no_proxy: "localhost,127.0.0.1,.internal.invalid"
  proxy_connect_header: {{X-Proxy-Token: ["hdr-s3cret"]}}
  follow_redirects: false
  tls_config:
    ca_file: {certs.ca_file}
    cert_file: {certs.client_cert}
    key_file: {certs.client_key}
    server_name: {PROVIDER_NAME}
    min_version: TLS12
accounts:
  - {{name: t, provider: telzino, settings: {{token: tok, agent_id: {AGENT}}}}}
"""
    code, out = check_config(tmp_path, capsys, text)
    assert code == 0, out
    monkeypatch.setenv("HTTPS_PROXY", "socks5h://proxy.invalid:1080")
    code, out = check_config(tmp_path, capsys, "accounts:\n  - {name: t, provider: telzino, settings: "
                                               f"{{token: tok, agent_id: {AGENT}}}}}\n")
    assert code != 0 and "environment variable HTTPS_PROXY: scheme 'socks5h' is not supported" in out, out


def test_accounts_inherit_the_top_level_key_by_key(tmp_path, certs, registry):
    config = Config(store_path=tmp_path / "calls.db", http_client={
        "proxy_url": "http://oce:pr0xy-pa55@proxy.corp.invalid:3128", "no_proxy": ".internal.invalid",
        "tls_config": {"ca_file": str(certs.ca_file), "min_version": "TLS13"}},
        accounts=[{**ACCOUNT, "name": "inherits"},
                  {**ACCOUNT, "name": "overrides", "http_client": {
                      "no_proxy": "*", "tls_config": {"server_name": PROVIDER_NAME}}},
                  {**ACCOUNT, "name": "unsets", "http_client": {
                      "proxy_url": None, "proxy_from_environment": False, "tls_config": {"ca_file": None}}}])
    inherits, overrides, unsets = (a.http_client for a in resolve_accounts(config, registry))
    assert inherits.proxy_for("https", "api.telzino.com", 443).host == "proxy.corp.invalid:3128"
    assert inherits.proxy_for("https", "x.internal.invalid", 443) is None
    assert inherits.server_name is None and inherits.ssl_context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert overrides.proxy_for("https", "api.telzino.com", 443) is None  # its own no_proxy: "*"
    assert overrides.server_name == PROVIDER_NAME
    assert overrides.ssl_context is inherits.ssl_context  # same TLS settings: one context, built once
    assert unsets.proxy_for("https", "api.telzino.com", 443) is None
    assert unsets.ssl_context is not inherits.ssl_context
    assert unsets.ssl_context.minimum_version is ssl.TLSVersion.TLSv1_3  # min_version still inherited


def test_proxy_secrets_stay_secret_and_tls_paths_are_not_secret_files(tmp_path, certs, registry, monkeypatch):
    """`ca_file` is a path (not the `*_file` secret indirection); the proxy password and CONNECT
    header values are secrets: absent from reprs and dumps, scrubbed like plugin secrets."""
    path = tmp_path / "config.yml"
    path.write_text(f"store_path: {tmp_path / 'calls.db'}\nhttp_client:\n  tls_config: {{ca_file: {certs.ca_file}}}\n"
                    f"  proxy_connect_header: {{X-Proxy-Token: hdr-s3cret}}\naccounts:\n"
                    f"  - {{name: t, provider: telzino, settings: {{token: tok, agent_id: {AGENT}}}}}\n")
    monkeypatch.setenv("OCE_HTTP_CLIENT__PROXY_URL", "http://oce:pr0xy-pa55@proxy.corp.invalid:3128")
    config = load_config(path)
    assert config.http_client.tls_config.ca_file == certs.ca_file
    shown = repr(config) + str(config) + config.model_dump_json()
    assert "pr0xy-pa55" not in shown and "hdr-s3cret" not in shown
    [account] = resolve_accounts(config, registry)
    assert {"pr0xy-pa55", "hdr-s3cret"} <= set(account.secrets)
    assert "pr0xy-pa55" not in repr(account.http_client.proxy_for("https", "api.telzino.com", 443).host)


# -- TLS ----------------------------------------------------------------------------------------


def test_private_ca_trusted_via_ca_file_or_ssl_cert_file_and_refused_without(certs, monkeypatch):
    async def main():
        async with tls_server(certs.server_context()) as port:
            url = f"https://127.0.0.1:{port}/v1/x"
            refused = await fetch({}, url)
            by_ca_file = await fetch({"tls_config": {"ca_file": str(certs.ca_file)}}, url)
            monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_file))
            by_env = await fetch({}, url)
            return refused, by_ca_file, by_env
    refused, by_ca_file, by_env = run(main())
    assert isinstance(refused, PollError) and refused.reason is ErrorReason.CONNECTION_ERROR
    assert "TLS certificate not trusted" in str(refused) and "127.0.0.1:" in str(refused)
    assert by_ca_file.json() == {"path": "/v1/x", "tls": True}
    assert by_env.json() == {"path": "/v1/x", "tls": True}


def test_ssl_cert_dir_is_honoured(certs, tmp_path, monkeypatch):
    openssl = require_tool("openssl", "openssl")
    shutil.copy(certs.ca_file, tmp_path / "corp-ca.pem")
    subprocess.run([openssl, "rehash", str(tmp_path)], check=True, capture_output=True, timeout=60)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))

    async def main():
        async with tls_server(certs.server_context()) as port:
            return await fetch({}, f"https://127.0.0.1:{port}/dir")
    assert run(main()).json() == {"path": "/dir", "tls": True}


def test_a_provider_requiring_a_client_certificate(certs):
    trust = {"ca_file": str(certs.ca_file)}

    async def main():
        async with tls_server(certs.server_context(client_cert=True)) as port:
            url = f"https://127.0.0.1:{port}/mtls"
            without = await fetch({"tls_config": trust}, url)
            with_cert = await fetch({"tls_config": {**trust, "cert_file": str(certs.client_cert),
                                                    "key_file": str(certs.client_key)}}, url)
            return without, with_cert
    without, with_cert = run(main())
    assert isinstance(without, PollError) and without.reason is ErrorReason.CONNECTION_ERROR
    # TLS 1.3: the server's "certificate required" alert comes after the handshake and reaches
    # the client as the connection closing, without a reason
    assert "127.0.0.1:" in str(without) and "closed" in str(without), str(without)
    assert with_cert.json() == {"path": "/mtls", "tls": True}


def test_server_name_sets_sni_and_the_name_verified(certs):
    seen: list[str | None] = []
    server = certs.server_context(name_only=True)  # valid for PROVIDER_NAME only
    server.sni_callback = lambda sock, name, ctx: seen.append(name)
    trust = {"ca_file": str(certs.ca_file)}

    async def main():
        async with tls_server(server) as port:
            url = f"https://127.0.0.1:{port}/sni"
            return await fetch({"tls_config": trust}, url), \
                await fetch({"tls_config": {**trust, "server_name": PROVIDER_NAME}}, url)
    mismatch, named = run(main())
    assert isinstance(mismatch, PollError) and "TLS certificate not trusted" in str(mismatch)
    assert named.json() == {"path": "/sni", "tls": True}
    assert seen[-1] == PROVIDER_NAME


def test_insecure_skip_verify_connects_and_warns_at_start_up(certs, caplog):
    async def main():
        async with tls_server(certs.server_context()) as port:
            return await fetch({"tls_config": {"insecure_skip_verify": True}}, f"https://127.0.0.1:{port}/i")
    with caplog.at_level(logging.WARNING):
        assert run(main()).json() == {"path": "/i", "tls": True}
    assert any("insecure_skip_verify" in r.getMessage() and "account t" in r.getMessage() for r in caplog.records)


def test_min_version_refuses_an_older_server(certs):
    trust = {"ca_file": str(certs.ca_file)}

    async def main():
        async with tls_server(certs.server_context(max_version=ssl.TLSVersion.TLSv1_2)) as port:
            url = f"https://127.0.0.1:{port}/v"
            return await fetch({"tls_config": {**trust, "min_version": "TLS13"}}, url), \
                await fetch({"tls_config": {**trust, "min_version": "TLS12"}}, url)
    refused, accepted = run(main())
    assert isinstance(refused, PollError) and refused.reason is ErrorReason.CONNECTION_ERROR
    assert "TLS handshake failed" in str(refused), str(refused)
    assert accepted.json() == {"path": "/v", "tls": True}


def test_check_config_runs_as_a_program(tmp_path, certs):
    path = tmp_path / "config.yml"
    path.write_text(f"store_path: {tmp_path / 'calls.db'}\nhttp_client: {{tls_config: {{ca_file: {certs.ca_file}}}}}\n"
                    "accounts:\n  - {name: t, provider: telzino, settings: {token: tok, agent_id: " + AGENT + "}}\n")
    ok = subprocess.run([sys.executable, "-m", "outbound_call_exporter.cli", "check-config", "--config", str(path)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


def test_the_readme_worked_example_is_a_valid_config(tmp_path, capsys, certs):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Networks: proxies, private CAs, client certificates"):]
    example = section[section.index("```yaml\n") + len("```yaml\n"):]
    example = example[:example.index("```")]
    for path, real in (("/etc/ssl/private/corp-ca.pem", certs.ca_file), ("/etc/oce/trillet-client.crt", certs.client_cert),
                       ("/etc/oce/trillet-client.key", certs.client_key)):
        assert path in example
        example = example.replace(path, str(real))
    for name in ("telzino", "trillet"):
        (tmp_path / name).write_text("secret\n")
        example = example.replace(f"/run/secrets/{name}", str(tmp_path / name))
    code, out = check_config(tmp_path, capsys, example)
    assert code == 0, out
    assert "telzino-main (telzino), trillet-eu (trillet)" in out
