"""The one error hierarchy of tastemaker.

Every error a caller can act on is a subclass of :class:`TastemakerError`. Store code wraps driver
exceptions in :class:`StoreError`, so no SQLAlchemy or psycopg exception leaks out of the library.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "DataFormatError",
    "InvalidBatchError",
    "NotFittedError",
    "RecordError",
    "StoreError",
    "TastemakerError",
    "UnknownNameError",
]


class TastemakerError(Exception):
    """Base class of every error raised on purpose by tastemaker."""


class ConfigError(TastemakerError, ValueError):
    """A configuration value is invalid; the message names the key, the value and what is allowed."""


class UnknownNameError(ConfigError, KeyError):
    """A name (model, protocol, layout, ...) is not one of the known choices."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.kind, self.name, self.known = kind, name, tuple(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(self.known))}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class DataFormatError(TastemakerError, ValueError):
    """An input file or table does not have the expected layout."""


class NotFittedError(TastemakerError, RuntimeError):
    """A model was used before ``fit``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not fitted yet; call fit(snapshot) first")


class ArtifactError(TastemakerError):
    """A model artifact is missing, incomplete, corrupt or from an incompatible version."""


class StoreError(TastemakerError):
    """The store could not complete an operation (connection, migration, constraint)."""


class OverloadedError(TastemakerError):
    """The server is behind: a request waited longer than it may for its turn, and is refused instead of
    being answered late (a client has given up on it by then, and serving it would delay every later one)."""


@dataclass(frozen=True)
class RecordError:
    """One rejected record of a batch: its position in the batch, the field and the reason."""

    index: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"record {self.index}: {self.field}: {self.reason}"


class InvalidBatchError(TastemakerError, ValueError):
    """A strict-mode batch had invalid records; nothing of the batch was written.

    ``stored_before`` counts rows of a larger import, sent in earlier batches, that were stored.
    """

    def __init__(self, errors: list[RecordError], stored_before: int = 0) -> None:
        self.errors = list(errors)
        self.stored_before = stored_before
        shown = "; ".join(str(e) for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        earlier = (
            f" ({stored_before:,} rows before this batch were stored; fix and re-run, stored rows count as duplicates)"
            if stored_before
            else ""
        )
        super().__init__(f"batch rejected, nothing of it written: {shown}{more}{earlier}")
