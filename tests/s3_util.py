"""fsspec pointed at a local S3-compatible server (moto on 127.0.0.1), for the S3 tests.

Imported only by the tests that start such a server, so that other tests do not
load fsspec.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import fsspec
import pytest


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
