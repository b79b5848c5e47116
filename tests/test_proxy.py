"""Proxies: a real forwarding proxy on 127.0.0.1 (`forward_proxy`) between the transport and
fake providers, with a provider host name that only the proxy can resolve, so a client that
goes around the proxy fails.

CONNECT tunnels for https and absolute-form for http; proxy_url and the environment
(HTTPS_PROXY / HTTP_PROXY / NO_PROXY, either case); no_proxy and NO_PROXY bypass; a proxy
requiring basic auth (407 without it); a proxy that cannot reach the provider (502); and, end
to end through the real service, a user behind an authenticating proxy with a private CA who
sets only the standard environment variables — with every credential kept out of logs,
metrics, API answers, error messages and the store.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from outbound_call_exporter import ErrorReason, PollError, State
from outbound_call_exporter.testing import Step

from conftest import account, make_config, running_service, wait_until
from forward_proxy import ForwardProxy
from test_http_client import fetch, no_ambient_tls_or_proxy  # noqa: F401  (an autouse fixture)
from tls_provider import PROVIDER_NAME, Certs, TLSTelzinoFake, tls_server

USER, PASSWORD = "oce", "pr0xy-pa55w0rd"
HEADER_SECRET = "c0nnect-h3ader-s3cret"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def proxy():
    with ForwardProxy(hosts={PROVIDER_NAME: "127.0.0.1"}).running() as running:
        yield running


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def through(http_client: dict, certs: Certs, scheme: str = "https", path: str = "/v1/x"
                  ) -> httpx.Response | PollError:
    """GET `scheme://PROVIDER_NAME:port/path` from a provider on 127.0.0.1 (TLS for https)."""
    async with tls_server(certs.server_context() if scheme == "https" else None) as port:
        tls = {"tls_config": {"ca_file": str(certs.ca_file)}} if scheme == "https" else {}
        return await fetch({**tls, **http_client}, f"{scheme}://{PROVIDER_NAME}:{port}{path}")


def test_https_is_tunnelled_with_connect_to_a_name_only_the_proxy_resolves(proxy, certs):
    answer = run(through({"proxy_url": proxy.url}, certs))
    assert answer.json() == {"path": "/v1/x", "tls": True}
    assert proxy.heads[0].startswith(f"CONNECT {PROVIDER_NAME}:".encode())
    around = run(through({"proxy_from_environment": False}, certs))  # no proxy: the name does not resolve
    assert isinstance(around, PollError) and around.reason is ErrorReason.CONNECTION_ERROR
    assert f"DNS lookup of {PROVIDER_NAME} failed" in str(around)


def test_http_is_sent_in_absolute_form(proxy, certs):
    answer = run(through({"proxy_url": proxy.url}, certs, scheme="http", path="/v1/y?a=1"))
    assert answer.json() == {"path": "/v1/y", "tls": False}
    assert proxy.heads[0].startswith(f"GET http://{PROVIDER_NAME}:".encode())
    assert b"/v1/y?a=1 HTTP/1.1\r\n" in proxy.heads[0]


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy"])
def test_the_environment_proxy_is_used_by_default(proxy, certs, monkeypatch, name):
    monkeypatch.setenv(name, proxy.url)
    assert run(through({}, certs)).json() == {"path": "/v1/x", "tls": True}
    assert len(proxy.heads) == 1
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert run(through({}, certs, scheme="http")).json() == {"path": "/v1/x", "tls": False}
    assert len(proxy.heads) == 2
    ignored = run(through({"proxy_from_environment": False}, certs))
    assert isinstance(ignored, PollError) and "DNS lookup" in str(ignored)


def test_no_proxy_and_loopback_go_direct(proxy, certs, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", f"localhost,.example.invalid,{PROVIDER_NAME}")
    bypassed = run(through({}, certs))  # NO_PROXY names it: direct, and only the proxy could resolve it
    assert isinstance(bypassed, PollError) and f"DNS lookup of {PROVIDER_NAME} failed" in str(bypassed)
    assert "via proxy" not in str(bypassed)
    bypassed = run(through({"no_proxy": PROVIDER_NAME}, certs))  # no_proxy in the config does the same
    assert isinstance(bypassed, PollError) and "DNS lookup" in str(bypassed)
    monkeypatch.delenv("NO_PROXY")

    async def loopback(http_client: dict) -> httpx.Response | PollError:
        async with tls_server(None) as port:
            return await fetch(http_client, f"http://127.0.0.1:{port}/direct")
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert run(loopback({})).json() == {"path": "/direct", "tls": False}  # an environment proxy never gets loopback
    assert run(loopback({"proxy_url": proxy.url, "no_proxy": "10.0.0.0/8,127.0.0.0/8"})).json()["path"] == "/direct"
    assert proxy.heads == []
    assert run(loopback({"proxy_url": proxy.url})).json()["path"] == "/direct"  # an explicit proxy does
    assert len(proxy.heads) == 1


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_proxy_requiring_basic_auth(proxy, certs, scheme, caplog):
    proxy.auth = (USER, PASSWORD)
    with caplog.at_level(logging.WARNING):
        refused = run(through({"proxy_url": proxy.url}, certs, scheme=scheme))
        wrong = run(through({"proxy_url": proxy.url_with(USER, "wrong-" + PASSWORD)}, certs, scheme=scheme))
    for error in (refused, wrong):
        assert isinstance(error, PollError) and error.reason is ErrorReason.CONNECTION_ERROR
        assert "407" in str(error) and f"via proxy 127.0.0.1:{proxy.port}" in str(error)
        assert f"{PROVIDER_NAME}:" in str(error) and PASSWORD not in str(error)
    assert run(through({"proxy_url": proxy.url_with(USER, PASSWORD)}, certs, scheme=scheme)).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("transport")]
    assert lines and all(PROVIDER_NAME in line and f"proxy 127.0.0.1:{proxy.port}" in line for line in lines)
    assert PASSWORD not in caplog.text


def test_proxy_connect_header_is_sent_with_connect(proxy, certs):
    from forward_proxy import _basic
    proxy.auth = (USER, PASSWORD)
    answer = run(through({"proxy_url": proxy.url, "proxy_connect_header": {
        "Proxy-Authorization": [_basic(USER, PASSWORD)], "X-Tenant": ["a", "b"]}}, certs))
    assert answer.status_code == 200
    assert b"X-Tenant: a, b\r\n" in proxy.heads[0]


def test_a_proxy_that_cannot_reach_the_provider(proxy, certs):
    proxy.hosts[PROVIDER_NAME] = "127.0.0.1"

    async def main():
        return await fetch({"proxy_url": proxy.url}, f"https://{PROVIDER_NAME}:9/x")  # nothing listens on 9
    error = run(main())
    assert isinstance(error, PollError) and error.reason is ErrorReason.CONNECTION_ERROR
    assert "refused CONNECT: 502" in str(error) and f"{PROVIDER_NAME}:9 via proxy 127.0.0.1:" in str(error)


def test_behind_an_authenticating_proxy_with_a_private_ca_by_environment_only(tmp_path, registry, proxy, certs,
                                                                            monkeypatch, caplog):
    """The issue's "done when": only HTTPS_PROXY and SSL_CERT_FILE set, nothing in the config.
    First with a wrong proxy password and a CONNECT header secret: every request fails as a
    `connection_error`, and neither secret shows anywhere. Then with the right password: every
    call is polled to its end through the proxy."""
    proxy.auth = (USER, PASSWORD)
    fake = TLSTelzinoFake(speed=1.0)
    fake.ssl_context = certs.server_context()
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_file))
    with fake.running():
        base_url = f"https://{PROVIDER_NAME}:{fake.port}"
        secret_header = {"proxy_connect_header": {"X-Proxy-Token": [HEADER_SECRET]}}

        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, "wrong-" + PASSWORD))
        config = make_config(tmp_path, [account("t", "telzino", base_url, fake.demo_settings(),
                                                http_client=secret_header)])
        with caplog.at_level(logging.DEBUG), running_service(config, registry) as svc:
            call = fake.add_call(steps=[Step("queued", 0), Step("completed", 0.5)])
            assert svc.client.post("/api/v1/calls", json={"account": "t", "call_id": call.call_id,
                                                          "params": call.params}).status_code == 201
            labels = {"provider": "telzino", "account": "t"}
            wait_until(lambda: (svc.metric("outbound_call_status_request_errors_total", reason="connection_error",
                                           **labels) or 0) >= 2, message="refused requests counted")
            shown = svc.metrics_text() + svc.client.get(f"/api/v1/calls/t/{call.call_id}").text
            shown += svc.client.get("/api/v1/calls").text + svc.client.get("/").text
        stored = _store_bytes(tmp_path)
        assert call.call_id in stored  # the store was written (and is searched below)
        shown += caplog.text + stored
        for secret in ("wrong-" + PASSWORD, PASSWORD, HEADER_SECRET):
            assert secret not in shown
        assert f"cannot reach {PROVIDER_NAME}:{fake.port} via proxy 127.0.0.1:{proxy.port}" in caplog.text
        assert any(HEADER_SECRET.encode() in head for head in proxy.heads)  # it did reach the proxy

        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(USER, PASSWORD))
        calls = [fake.add_call(steps=[Step("queued", 0), Step("in_progress", 0.3), Step(s, 0.8)])
                 for s in ("completed", "busy", "no_answer")]
        config = make_config(tmp_path / "2", [account("t", "telzino", base_url, fake.demo_settings())])
        with running_service(config, registry) as svc:
            assert svc.client.post("/api/v1/calls", json=[{"account": "t", "call_id": c.call_id, "params": c.params}
                                                          for c in calls]).status_code == 201
            for c, state in zip(calls, (State.COMPLETED, State.BUSY, State.NO_ANSWER)):
                wait_until(lambda: svc.call("t", c.call_id)["state"] == state.value, message=f"{state} via proxy")
            assert svc.metric("outbound_call_status_request_errors_total", reason="connection_error", **labels) == 0
        assert sum(head.startswith(b"CONNECT") for head in proxy.heads) >= 2


def _store_bytes(directory: Path) -> str:
    """The SQLite store's files (database, WAL), as text to search."""
    return "".join(path.read_bytes().decode("latin-1") for path in directory.glob("calls.db*"))


@pytest.mark.parametrize("host, port, pattern, bypassed", [
    ("api.example.com", 443, "example.com", True),           # the domain and its subdomains
    ("example.com", 443, "example.com", True),
    ("badexample.com", 443, "example.com", False),
    ("example.com", 443, ".example.com", False),             # a leading dot: subdomains only
    ("api.example.com", 443, "*.example.com", True),
    ("api.example.com", 443, "api.example.com:443", True),   # with a port: that port only
    ("api.example.com", 8443, "api.example.com:443", False),
    ("10.1.2.3", 443, "10.0.0.0/8", True),                   # CIDR and plain IPs
    ("10.1.2.3", 443, "10.1.2.4", False),
    ("2001:db8::1", 443, "2001:db8::/32", True),
    ("anything.example", 80, "*", True),
    ("API.Example.COM", 443, "Example.com", True),           # names compare case-insensitively
])
def test_no_proxy_rules_are_gos(host, port, pattern, bypassed):
    from outbound_call_exporter.httpclient import HTTPClientConfig, resolve
    client = resolve(HTTPClientConfig(proxy_url="http://proxy.invalid:3128", no_proxy=f"other.invalid, {pattern}"), "t")
    url_port = None if port == 443 else port  # an https URL without a port means 443
    assert (client.proxy_for("https", host, url_port) is None) is bypassed
