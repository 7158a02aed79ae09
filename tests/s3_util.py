"""A local S3-compatible server (moto on 127.0.0.1) that records its requests, and fsspec
pointed at it, for the S3 tests.

Imported only by the tests that start such a server (after ``importorskip`` of
fsspec, s3fs and moto), so that other tests do not load them.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import fsspec
import pytest
from moto.moto_server import threaded_moto_server


@contextlib.contextmanager
def s3_at(endpoint: str) -> Iterator[None]:
    """Point fsspec's ``s3://`` at ``endpoint`` with fake credentials, set here only."""
    previous = fsspec.config.conf.get("s3")
    with pytest.MonkeyPatch.context() as env:
        # Fake credentials: nothing may reach a real account.
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            env.setenv(key, value)
        env.delenv("AWS_PROFILE", raising=False)
        fsspec.config.conf["s3"] = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        try:
            yield
        finally:
            if previous is None:
                fsspec.config.conf.pop("s3", None)
            else:
                fsspec.config.conf["s3"] = previous


def operation(environ: dict[str, Any]) -> str:
    """What an S3 request asks for, in the words the tests use."""
    method = environ["REQUEST_METHOD"]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    key = environ.get("PATH_INFO", "/").lstrip("/").partition("/")[2]
    if method == "GET" and "list-type" in query:
        return "list one folder" if query.get("delimiter", [""])[0] else "list flat"
    if method == "GET" and key:
        return "get"
    return method.lower()


_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


class Request(NamedTuple):
    """One request the server received: what it asked for, the key, who signed it."""

    op: str
    key: str
    access_key: str


class CountingMotoServer(threaded_moto_server.ThreadedMotoServer):  # type: ignore[misc]
    """moto's S3 server, recording each request: operation, key and the signer's access key."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ: dict[str, Any], start_response: Any) -> Any:
            key = environ.get("PATH_INFO", "/").lstrip("/").partition("/")[2]
            signer = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
            request = Request(operation(environ), key, signer.group(1) if signer else "")
            with self._lock:
                self.requests.append(request)
            return app(environ, start_response)

        self._server = make_server(
            self._ip_address, self._port, counting, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def counted(self) -> Counter[str]:
        with self._lock:
            return Counter(r.op for r in self.requests)

    def keys(self, op: str) -> list[str]:
        with self._lock:
            return sorted(r.key for r in self.requests if r.op == op)

    def by(self, access_key: str) -> list[Request]:
        """The requests signed with ``access_key``."""
        with self._lock:
            return [r for r in self.requests if r.access_key == access_key]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
