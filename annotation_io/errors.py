"""The one exception of annotation_io: a malformed file or payload, with where and what."""

from __future__ import annotations


class AnnotationFormatError(ValueError):
    """A file or payload does not match its format.

    Args:
        message: what is wrong and, where possible, what to do about it.
        source: the file path or task id the data came from.
        where: a JSON-path-like pointer to the bad entry/field, e.g. ``annotations[3].keypoints``.
    """

    def __init__(self, message: str, *, source: str | None = None, where: str | None = None) -> None:
        self.source = source
        self.where = where
        parts = []
        if source:
            parts.append(str(source))
        if where:
            parts.append(where)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
