"""Where a walk for checkpoints starts, and how a template splits to walk it.

A :class:`Root` is the folder or URL the user gave, opened on its storage; a
:class:`Layout` is a template checked for walking (relative, inside the root,
readable back) and split into one template per folder level plus the leaf.
Scanning walks with both, and retention uses both to check every path before
deleting it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

from ._errors import TemplateError
from ._rank import COUNTERS
from ._storage import Storage, storage_for
from ._template import Template

__all__ = ["Layout", "Root", "cached_template", "check_inside_root", "layout_for", "open_root"]


# --------------------------------------------------------------------------- roots


@dataclass(frozen=True, slots=True)
class Root:
    """A folder or URL to find checkpoints under, opened on its storage.

    Attributes:
        text: the root as the user spelled it (paths in records are spelled
            the same way).
        storage: the storage that reads it.
        inner: the root as that storage names it (a URL without its scheme).
        local: whether the storage is the local file system.
    """

    text: str
    storage: Storage
    inner: str
    local: bool

    def path(self, name: str) -> str:
        """The user-facing path or URL of a name relative to the root."""
        if not self.local or "://" in self.text:
            base = self.text if self.text.endswith("/") else self.text + "/"
            return base + name
        return os.path.join(self.text, name) if self.text else name

    def inner_path(self, name: str) -> str:
        """The storage's path of a name relative to the root."""
        return self.join(self.inner, name)

    def join(self, folder: str, name: str) -> str:
        """The storage's path of ``name`` inside ``folder`` (a storage path)."""
        if self.local:
            return os.path.join(folder, name) if folder else name
        return self.storage.join(folder, name)


def open_root(root: str | os.PathLike[str]) -> Root:
    """Open a folder path or an fsspec URL.

    Raises:
        TypeError: ``root`` is neither a path nor a string.
        ImportError: the URL needs fsspec, which is not installed.
    """
    text = os.fspath(root)
    if not isinstance(text, str):
        raise TypeError(f"root must be a path or a URL string, got {type(root).__name__}")
    storage, inner = storage_for(text)
    return Root(text, storage, inner, not storage.remote)


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True, slots=True, eq=False)
class Layout:
    """A template split for walking: one template per folder level, plus the leaf.

    Attributes:
        template: the whole template.
        text: its text.
        dirs: one template per folder level (``lr={lr:.0e}``), outermost first.
        leaf: the template of the file names.
        fast: the leaf's :meth:`Template.counter_search` pattern, or ``None``.
        fast_bytes: the same pattern for a listing in bytes, where it is ASCII.
        has_counter: whether the template has a progress counter
            (``ckptname._rank.COUNTERS``) at any level.
    """

    template: Template
    text: str
    dirs: tuple[Template, ...]
    leaf: Template
    fast: re.Pattern[str] | None
    fast_bytes: re.Pattern[bytes] | None
    has_counter: bool


@lru_cache(maxsize=128)
def cached_template(text: str) -> Template:
    """``Template(text)``, compiled once per text (templates are immutable)."""
    return Template(text)


def layout_for(template: Template | str) -> Layout:
    """Compile and check a template for walking (cached).

    Raises:
        TemplateError: the template does not compile, cannot be read back,
            or would reach outside the root (see :func:`check_inside_root`).
        TypeError: ``template`` is neither a ``Template`` nor a ``str``.
    """
    if isinstance(template, str):
        template = cached_template(template)
    elif not isinstance(template, Template):
        raise TypeError(
            f"template must be a str or a ckptname.Template, got {type(template).__name__}"
        )
    return _layout_of(template)


@lru_cache(maxsize=128)
def _layout_of(template: Template) -> Layout:
    check_inside_root(template)
    if not template.reversible:
        template.parse("")  # raises the TemplateError that says why
    segments = template.segments
    leaf = segments[-1]
    has_counter = any(c in template.fields for c in COUNTERS)
    fast = leaf.counter_search(COUNTERS) if has_counter else None
    fast_bytes = None
    if fast is not None and fast.pattern.isascii():
        fast_bytes = re.compile(fast.pattern.encode("ascii"), fast.flags & ~re.UNICODE)
    return Layout(
        template=template,
        text=template.text,
        dirs=tuple(segments[:-1]),
        leaf=leaf,
        fast=fast,
        fast_bytes=fast_bytes,
        has_counter=has_counter,
    )


_DRIVE = re.compile(r"[A-Za-z]:")


def check_inside_root(template: Template) -> None:
    """Refuse a template that names paths outside the root, or ckptname's own files.

    Raises:
        TemplateError: the template is an absolute path (or starts with a
            drive letter), has a ``..``, ``.`` or empty path part, or contains
            ``.ckptname``.
    """
    text = template.text
    if text.startswith(("/", "\\")) or _DRIVE.match(text):
        raise TemplateError(
            "template is an absolute path; a template is relative to root, so pass the "
            "folder as root and the rest as template",
            text,
            0,
        )
    if ".ckptname" in text:
        raise TemplateError(
            "template contains '.ckptname', which marks ckptname's own files (sidecars, "
            "state, temporary files); no checkpoint can match it, so rename the checkpoints",
            text,
            text.index(".ckptname"),
        )
    column = 0
    for segment in template.segments:
        part = segment.text
        if part == "..":
            raise TemplateError(
                "template has the path part '..', which leads out of root; pass the "
                "parent folder as root instead",
                text,
                column,
            )
        if part in ("", "."):
            what = "an empty path part" if part == "" else "the path part '.'"
            raise TemplateError(
                f"template has {what}, which names no folder of its own; remove it",
                text,
                column,
            )
        column += len(part) + 1
