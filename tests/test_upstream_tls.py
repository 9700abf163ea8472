"""The upstream over HTTPS: every connection pool verifies the server's certificate with
the one TLS context they share, made as httpx2 makes its own (here: the CA named by
SSL_CERT_FILE); an upstream whose certificate that CA did not sign is refused."""

from __future__ import annotations

import ssl
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fake_upstream import FakeUpstream
from support import app_settings

from services.llm import UpstreamError, build_llm
from services.llm.http_pool import UPSTREAM_POOLS, _pool_of

POOLS_USED = 4


def _certificates(folder) -> tuple[str, str, str]:
    """A CA (its certificate's path) and a certificate for 127.0.0.1 it signed (cert, key)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    )
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=x")
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return str(folder / "ca.pem"), str(folder / "server.pem"), str(folder / "server.key")


@pytest.fixture
def tls_upstream(tmp_path):
    ca, cert, key = _certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = FakeUpstream(tls=context).start()
    yield server, ca
    server.stop()


def test_every_pool_reaches_an_https_upstream_through_one_shared_context(tls_upstream, monkeypatch):
    server, ca = tls_upstream
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    llm = build_llm(app_settings("sqlite://", server))
    try:
        contexts = {id(_pool_of(client._client)._ssl_context) for client in llm.pool.deployments()[0].chat._clients}
        assert len(llm.pool.deployments()[0].chat._clients) == UPSTREAM_POOLS and len(contexts) == 1
        # Calls held at the upstream until POOLS_USED are in flight: each takes a pool of its own.
        everyone_in = threading.Barrier(POOLS_USED, timeout=20)
        server.on_request = lambda _received: everyone_in.wait()
        messages = [{"role": "user", "content": "hello"}]
        with ThreadPoolExecutor(POOLS_USED) as pool:
            replies = list(pool.map(lambda _: llm.complete(messages), range(POOLS_USED)))
        assert [reply.text for reply in replies] == ["echo: hello"] * POOLS_USED
        assert len({received.peer for received in server.received}) == POOLS_USED  # four connections
        # ... in four pools (four calls through one pool would open four connections too).
        clients = llm.pool.deployments()[0].chat._clients
        assert sum(bool(_pool_of(client._client).connections) for client in clients) == POOLS_USED
    finally:
        llm.close()


def test_an_upstream_certificate_no_trusted_ca_signed_is_refused(tls_upstream, monkeypatch, tmp_path):
    server, _ = tls_upstream
    other = tmp_path / "other"
    other.mkdir()
    stranger_ca, _, _ = _certificates(other)
    monkeypatch.setenv("SSL_CERT_FILE", stranger_ca)
    llm = build_llm(app_settings("sqlite://", server))
    try:
        with pytest.raises(UpstreamError):
            llm.complete([{"role": "user", "content": "hello"}])
        assert server.received == []  # refused at the handshake: no request was read
    finally:
        llm.close()
