"""Exceptions raised by ckptname.

Every error ckptname raises on purpose derives from :class:`CkptnameError`, and
each child also derives from the built-in exception a caller would catch
without knowing about ckptname::

    CkptnameError(Exception)
    ├── TemplateError(CkptnameError, ValueError)      bad template text, or a
    │                                                 template that cannot be read back
    ├── RenderError(CkptnameError, ValueError)        a value that cannot be written
    │                                                 into a name that reads back safely
    ├── MissingFieldError(CkptnameError, LookupError) a field with no value
    ├── CheckpointError(CkptnameError, RuntimeError)  a checkpoint folder in a state
    │   │                                             that training must not continue from
    │   ├── CheckpointSaveError(CheckpointError, OSError)  a save failed on disk or remote
    │   ├── StorageError(CheckpointError, OSError)    an object store failed a read, a
    │   │                                             listing, a write or a delete, or
    │   │                                             the local disk refused a listing
    │   │                                             or a read
    │   └── FolderLockedError(CheckpointError)        another live run holds the folder's
    │                                                 lock (``.ckptname.lock``)
    ├── MetadataError(CkptnameError, ValueError)      a sidecar or state file that
    │                                                 cannot be read
    ├── ClusterError(CkptnameError, ValueError)       a cluster configuration that does
    │                                                 not say which process writes
    ├── CountError(CkptnameError, ValueError)         a batch count that cannot be known,
    │                                                 or a resume that would not count
    │                                                 the same batches as the run did
    └── MonitorError(CkptnameError, ValueError)       a metric to rank by, or a mode,
                                                      that cannot be used

Warnings ckptname gives (a resume whose counters disagree, a save that failed
with ``on_save_error="warn"``) are :class:`CkptnameWarning`, a ``UserWarning``.

``MissingFieldError`` is a ``LookupError`` and deliberately not a ``KeyError``:
``str(KeyError("..."))`` wraps the message in quotes.

An error whose way out depends on where the user called ckptname from carries
an :class:`Advice` (set with :func:`advised`): the message holds the Python
spelling, ``advice.api``, verbatim, and the command line shows
``str(error).replace(advice.api, advice.cli)``:

=======================================  =======================================
``advice.api`` (in the message)          ``advice.cli`` (what ``ckptname`` shows)
=======================================  =======================================
``pass mode='min' or mode='max'``        ``pass --mode min or --mode max``
=======================================  =======================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "Advice",
    "CheckpointError",
    "CheckpointSaveError",
    "CkptnameError",
    "CkptnameWarning",
    "ClusterError",
    "CountError",
    "FolderLockedError",
    "MetadataError",
    "MissingFieldError",
    "MonitorError",
    "RenderError",
    "StorageError",
    "TemplateError",
]


@dataclass(frozen=True)
class Advice:
    """One way out, spelled for the Python API and for the command line.

    Attributes:
        api: the words in the message, e.g. ``"pass mode='min' or mode='max'"``.
        cli: the same advice for the command line, e.g.
            ``"pass --mode min or --mode max"``.
    """

    api: str
    cli: str


class CkptnameError(Exception):
    """Root of every error that ckptname raises on purpose.

    Attributes:
        advice: the way out the message gives, where the command line spells
            it differently (see :class:`Advice`), else ``None``.
    """

    advice: Advice | None = None


E = TypeVar("E", bound=CkptnameError)


def advised(error: E, advice: Advice) -> E:
    """Attach ``advice`` to ``error`` and return the error, for ``raise advised(...)``.

    ``str(error)`` must contain ``advice.api`` verbatim: the command line
    replaces that text with ``advice.cli``.
    """
    error.advice = advice
    return error


class CkptnameWarning(UserWarning):
    """A warning from ckptname: something to look at that does not stop training."""


class TemplateError(CkptnameError, ValueError):
    """A template that does not compile, or that cannot be read back.

    Attributes:
        reason: the message without the template and caret lines.
        template: the template text, or ``None``.
        column: 0-based column the caret points at, or ``None``.
    """

    def __init__(self, reason: str, template: str | None = None, column: int | None = None):
        self.reason = reason
        self.template = template
        self.column = column
        message = reason
        if template is not None:
            message += f"\n  {template}"
            if column is not None:
                message += "\n  " + " " * _display_width(template[:column]) + "^"
        super().__init__(message)


class RenderError(CkptnameError, ValueError):
    """A value that cannot be written into a name that reads back to it safely."""


class MissingFieldError(CkptnameError, LookupError):
    """A template field, or a monitored metric, has no value.

    Attributes:
        fields: the names that were missing.
        available: the keys that were given.
    """

    def __init__(self, message: str, fields: tuple[str, ...] = (), available: tuple[str, ...] = ()):
        self.fields = fields
        self.available = available
        super().__init__(message)


class CheckpointError(CkptnameError, RuntimeError):
    """A checkpoint folder that training must not continue from as it is."""


class CheckpointSaveError(CheckpointError, OSError):
    """Writing a checkpoint, its sidecar or the state file failed."""


class StorageError(CheckpointError, OSError):
    """A file system failed a read, a listing, a write or a delete.

    An object store (any fsspec file system) failing for any reason, or the
    local disk refusing to list a folder or read ckptname's own files
    (permission denied, an I/O error).

    Whatever the file system library raised (an ``OSError``, a botocore or
    aiohttp client error, a timeout) becomes this error, chained as its
    ``__cause__``: the message names what was done, the URL and the cause,
    and ``errno`` is kept where the cause had one. A read that failed for a
    transient reason (a refused or dropped connection, a timeout, HTTP 5xx or
    throttling) was retried before (``ckptname._storage`` has the policy).
    Absent files are not failures: they stay ``FileNotFoundError``.

    Attributes:
        url: the path or URL the operation was on.
        cause: the cause, in words (``"HTTP 500: We encountered an internal error..."``).
        attempts: how many times the operation was tried.
    """

    def __init__(self, message: str, *, url: str, cause: str, attempts: int = 1) -> None:
        self.url = url
        self.cause = cause
        self.attempts = attempts
        super().__init__(message)


class FolderLockedError(CheckpointError):
    """Another live training run holds the checkpoint folder's lock.

    Attributes:
        path: the lock file.
        pid: the owner's process id, where the lock says.
        host: the owner's host name, where the lock says.
    """

    def __init__(
        self, message: str, *, path: str, pid: int | None = None, host: str | None = None
    ) -> None:
        self.path = path
        self.pid = pid
        self.host = host
        super().__init__(message)


class MetadataError(CkptnameError, ValueError):
    """A metadata sidecar or state file that cannot be read."""


class ClusterError(CkptnameError, ValueError):
    """A cluster configuration that does not say which process writes.

    Raised for a ``TF_CONFIG`` that is not valid JSON, names a task its own
    cluster does not have, or has more than one chief: guessing there could
    make two processes write one folder, or none.
    """


class CountError(CkptnameError, ValueError):
    """A global batch count that cannot be known, or that a resume would not keep true.

    Raised where the batches training runs cannot be counted exactly (an
    input of unknown length with ``steps_per_execution > 1``), where nothing
    records how many batches came before (a restart with no checkpoint to
    say), and where a resumed run would count other batches than the run it
    continues (another batch size, ``steps_per_epoch`` or data length):
    never a guess that would put a wrong number into a name.
    """


class MonitorError(CkptnameError, ValueError):
    """A metric to rank checkpoints by, or a ``mode``, that cannot be used.

    Raised for a ``mode`` other than ``"min"``, ``"max"`` or ``"auto"``, and for
    ``mode="auto"`` with a metric name that does not say which way is better.
    """


def _display_width(text: str) -> int:
    # Tabs and wide characters are rare in templates; count code points, which
    # is what terminals show for the ASCII that templates almost always are.
    return len(text)
