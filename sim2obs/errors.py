"""Error hierarchy of sim2obs.

Every class also subclasses the matching builtin, so ``except ValueError`` keeps working,
and carries the offending value, the allowed values, or the file and field at fault.
"""
from __future__ import annotations

from typing import Any, Iterable


class Sim2obsError(Exception):
    """Base class of every error raised by sim2obs."""


class Sim2obsValueError(Sim2obsError, ValueError):
    """A value is outside what is allowed.

    Attributes: ``value`` (what was given) and ``allowed`` (what is accepted, if known).
    """

    def __init__(self, message: str, value: Any = None, allowed: Any = None):
        self.value = value
        self.allowed = allowed
        text = message
        if value is not None:
            text += f" (got {value!r}"
            text += f"; allowed: {allowed})" if allowed is not None else ")"
        super().__init__(text)


class ConfigError(Sim2obsValueError):
    """A configuration key or value is invalid. ``key`` is the dotted config path."""

    def __init__(self, key: str, message: str, value: Any = None, allowed: Any = None):
        self.key = key
        super().__init__(f"config '{key}': {message}", value=value, allowed=allowed)


class DataFormatError(Sim2obsError, OSError):
    """A galaxy-set file (or a real-data input file) is unreadable or violates the schema.

    Attributes: ``path`` (the file) and ``field`` (the HDF5 path, column or attribute at fault).
    """

    def __init__(self, path: Any, field: str | None, message: str):
        self.path = str(path)
        self.field = field
        where = f"{self.path}" + (f" [{field}]" if field else "")
        # OSError's two-argument form would reinterpret our text; keep one argument.
        Exception.__init__(self, f"{where}: {message}")

    def __str__(self) -> str:  # OSError formats args specially; keep the message as written
        return self.args[0]


class UnknownNameError(Sim2obsError, KeyError):
    """A name looked up in a registry does not exist; the message suggests close matches."""

    def __init__(self, kind: str, name: str, known: Iterable[str], suggestions: list[str]):
        self.kind, self.name, self.known, self.suggestions = kind, name, sorted(known), suggestions
        hint = f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"unknown {kind} {name!r}{hint} (known: {', '.join(self.known) or 'none'})")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DownloadError(Sim2obsError, OSError):
    """A remote file could not be fetched, or arrived truncated or corrupt (and was not cached).

    Attributes: ``url``, ``status`` (HTTP code, or None for a timeout, a refused connection or a
    bad file), ``cache_path`` (where a copy fetched by other means can be placed by hand) and
    ``hint`` (what to do). The message names all of them.
    """

    def __init__(self, url: str, message: str, status: int | None = None, cache_path: Any = None,
                 hint: str | None = None):
        self.url, self.status, self.hint = url, status, hint
        self.cache_path = str(cache_path) if cache_path is not None else None
        text = f"{message} [{url}]"
        if self.cache_path:
            text += f"; a copy obtained elsewhere can be placed by hand at {self.cache_path}"
        if hint:
            text += f"; {hint}"
        Exception.__init__(self, text)

    def __str__(self) -> str:  # OSError formats args specially; keep the message as written
        return self.args[0]
