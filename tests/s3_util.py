"""A local S3-compatible server (moto on 127.0.0.1) that records its requests and can be
made to fail, and fsspec pointed at it, for the S3 tests.

Imported only by the tests that start such a server (after ``importorskip`` of
fsspec, s3fs and moto), so that other tests do not load them.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import fsspec
import pytest
from moto.moto_server import threaded_moto_server

# botocore tries each request once (s3fs retries only dropped connections): the tests see the
# failures that ckptname itself retries, in a fraction of a second each.
NO_LIBRARY_RETRIES: dict[str, Any] = {
    "config_kwargs": {"retries": {"total_max_attempts": 1}, "connect_timeout": 2},
}


@contextlib.contextmanager
def s3_at(endpoint: str, **options: Any) -> Iterator[None]:
    """Point fsspec's ``s3://`` at ``endpoint`` with fake credentials, set here only.

    ``options`` are more s3fs arguments (``NO_LIBRARY_RETRIES``, say).
    """
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
        fsspec.config.conf["s3"] = {
            "endpoint_url": endpoint,
            "key": "testing",
            "secret": "testing",
            **options,
        }
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


_INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


@dataclass
class Fault:
    """Answer some requests with an HTTP error instead of serving them.

    Requests with operation ``op`` whose key ``key`` accepts are counted; the
    first ``skip`` of them are served, the next ``times`` (every one after
    them, where ``None``) fail with ``status``, and ``delay`` seconds pass
    before each of those answers.
    """

    op: str
    key: Callable[[str], bool]
    skip: int = 0
    times: int | None = None
    status: int = 500
    delay: float = 0.0
    seen: int = 0
    failed: int = 0

    def fails(self, request: Request) -> bool:
        if request.op != self.op or not self.key(request.key):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.failed >= self.times):
            return False
        self.failed += 1
        return True


class CountingMotoServer(threaded_moto_server.ThreadedMotoServer):  # type: ignore[misc]
    """moto's S3 server, recording each request: operation, key and the signer's access key.

    :meth:`fail` makes chosen requests fail; :meth:`stop` and :meth:`start`
    again take the server away and bring it back on the same port (the
    objects stay: moto keeps them in this process).
    """

    def __init__(self, port: int = 0) -> None:
        super().__init__(ip_address="127.0.0.1", port=port, verbose=False)
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server
        from werkzeug.wsgi import get_input_stream

        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ: dict[str, Any], start_response: Any) -> Any:
            key = environ.get("PATH_INFO", "/").lstrip("/").partition("/")[2]
            signer = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
            request = Request(operation(environ), key, signer.group(1) if signer else "")
            with self._lock:
                self.requests.append(request)
                fault = next((f for f in self.faults if f.fails(request)), None)
            if fault is not None:
                get_input_stream(environ).read()  # the body, as a server reads it before answering
                time.sleep(fault.delay)
                start_response(f"{fault.status} Error", [("Content-Type", "application/xml")])
                return [_INTERNAL_ERROR]
            return app(environ, start_response)

        self._server = make_server(
            self._ip_address, self._port, counting, True, request_handler=MotoRequestHandler
        )
        # The next start() takes the same port: a restarted server, not a new one.
        self._port = self._server.server_address[1]
        self._server_ready_event.set()
        self._server.serve_forever()

    def fail(
        self,
        op: str,
        key: str | Callable[[str], bool] = "",
        *,
        skip: int = 0,
        times: int | None = None,
        status: int = 500,
        delay: float = 0.0,
    ) -> Fault:
        """Make requests fail (see :class:`Fault`); ``key`` a text the key ends with, or a test."""
        test = key if callable(key) else (lambda k, end=key: k.endswith(end))
        fault = Fault(op, test, skip, times, status, delay)
        with self._lock:
            self.faults.append(fault)
        return fault

    def heal(self) -> None:
        """Serve every request again."""
        with self._lock:
            self.faults.clear()

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
