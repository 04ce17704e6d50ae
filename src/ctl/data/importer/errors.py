"""The two refusals of the importer: a bad schema YAML and a bad input record."""

from __future__ import annotations


class SpecError(ValueError):
    """A schema YAML that cannot describe an import; the message names the file and the key path."""

    def __init__(self, origin: str, key: str, reason: str) -> None:
        super().__init__(f"{origin}: {key}: {reason}" if key else f"{origin}: {reason}")
        self.origin = origin
        self.key = key


class InputError(ValueError):
    """A problem in an input file; the message names the file, where (line or row), the column and value.

    ``where`` reads ``line 12`` for text files (1-based physical line, the header being line 1),
    ``line 12, event 3`` for event-line files and ``row 12`` for Parquet (1-based, in file order).
    """

    def __init__(self, file: str, reason: str, where: str | None = None, column: str | None = None) -> None:
        parts = [part for part in (where, f"column {column!r}" if column is not None else None) if part]
        super().__init__(f"{file}: {', '.join(parts)}: {reason}" if parts else f"{file}: {reason}")
        self.file = file
        self.where = where
        self.column = column
