"""The one exception of ingest for "this input cannot be written, here is why".

Each layer raises it for what it finds wrong with one input, in one line: a format reader (``ingest.formats``:
truncated bytes, an unknown layout; it sees bytes only, so its message names no file), an adapter
(``SourceAdapter.decode`` puts the file's path in front of a reader's message, and the adapter's own checks
name their file), the conversion of a kind (``ingest.conversion``: NaN, negative values, class ids out of
range) and the assembly of a sample (``ingest.assemble``: sizes that differ, too few valid pixels; anything
else an adapter raises becomes a ``BadInput`` there too). The ingest job catches this type alone and records
``str(exc)`` as the reason in ``rejects.parquet``. It sits below every other ingest module so that each layer
imports it without importing the layers above.
"""

from __future__ import annotations


class BadInput(ValueError):
    """One input is not written; ``str(exc)`` is the reason, one line naming the file where one is known."""
