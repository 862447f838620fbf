"""Readers (and small writers, for tests and users' own conversions) of the native target formats.

One file per format: ``pfm`` (Portable Float Map), ``png`` (8- and 16-bit grayscale PNG), ``exr``
(OpenEXR), ``h5`` (HDF5 datasets), ``npy`` (NumPy arrays). Readers take the file's bytes, so they work on
anything ``pipeline.storage`` can read, and raise :class:`FormatError` for a truncated file or a layout they
do not know. :func:`load` is how adapters call them: it reads a file relative to the adapter's root and
turns every failure into a ``SampleReadError`` naming the file, which the ingest job records as the reject
reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ingest.sources.base import SampleReadError, SourceAdapter


class FormatError(ValueError):
    """The bytes are not a valid file of the format, or use a layout this reader does not know."""


def load(adapter: SourceAdapter, relative: str, reader: Callable[..., Any], what: str = "target", **kwargs) -> Any:
    """``reader(bytes, **kwargs)`` on the file ``relative`` under ``adapter.root``.

    A missing file raises ``SampleReadError("<relative>: <what> missing")``; a file the reader rejects
    raises ``SampleReadError("<relative>: <reader's reason>")``.
    """
    try:
        data = adapter.read_bytes(relative)
    except SampleReadError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            raise SampleReadError(f"{relative}: {what} missing") from exc
        raise
    try:
        return reader(data, **kwargs)
    except FormatError as exc:
        raise SampleReadError(f"{relative}: {exc}") from exc
