"""Agent release versions, compared as dotted numbers (``0.10.0`` is after ``0.9.1``)."""

from __future__ import annotations

import re

VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,63}")


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key: numeric parts as numbers, others as text (after every number)."""
    parts = re.split(r"[.+-]", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def newer(candidate: str, than: str) -> bool:
    """Whether `candidate` is a later release than `than`."""
    return version_key(candidate) > version_key(than)


def is_version(text: object) -> bool:
    """Whether `text` can be a release version."""
    return isinstance(text, str) and bool(VERSION_RE.fullmatch(text))
