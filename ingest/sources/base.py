"""The adapter interface: how one dataset's released layout becomes samples.

An adapter is a small class with the same four methods (list, RGB, target, metadata). It knows the
source's layout, units and invalid values, and nothing else: it never resizes, augments, converts to
disparity or to the label map (``ingest.conversion`` does that from the class's ``kind``) or writes shards.
Files are read through ``pipeline.storage``, so ``root`` may be a local directory or an ``s3://`` prefix.
"""

from __future__ import annotations

import abc
import dataclasses
import io
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from pipeline import storage


@dataclasses.dataclass(frozen=True)
class SampleRef:
    """One input sample as listed: a unique ``id``, its files relative to the root, its split group.

    ``group`` is the scene or video the frame belongs to: the train/val split hashes it, so frames of
    one scene never straddle splits. ``split`` is the source's own official split when it has one.
    """

    id: str
    files: dict[str, str]
    group: str
    split: str | None = None


@dataclasses.dataclass
class RGB:
    """uint8 ``[H, W, 3]`` plus the source's own encoded bytes when they are JPEG or PNG (kept as is)."""

    pixels: np.ndarray
    encoded: bytes | None = None
    format: str = "png"


class SourceAdapter(abc.ABC):
    """Base class of every dataset adapter. Subclasses set ``name`` and ``kind`` and the four methods."""

    name: ClassVar[str]
    kind: ClassVar[TargetKind]

    def __init__(self, root: str, options: storage.S3Options | None = None):
        self.root = str(root).rstrip("/") if str(root) != "/" else "/"
        self.options = options
        self._files: list[str] | None = None

    # ----------------------------------------------------------------- the four methods

    @abc.abstractmethod
    def list_samples(self) -> list[SampleRef]:
        """Every sample under the root, in a deterministic order (sorted by id)."""

    @abc.abstractmethod
    def read_rgb(self, ref: SampleRef) -> RGB:
        """The colour image of one sample."""

    @abc.abstractmethod
    def read_target(self, ref: SampleRef) -> tuple[np.ndarray, np.ndarray]:
        """``(target float32 [H, W] in the units of ``kind``, valid bool [H, W])``.

        For ``kind = semantic_labels`` the target is the class ids (integer ``[H, W]``, numbered from 0)
        and ``valid`` marks the labelled pixels (the others become 255 = ignore in the shard).
        """

    def metadata(self, ref: SampleRef) -> dict[str, Any]:
        """What the source knows beyond the pixels (intrinsics, baseline, units); JSON-serialisable."""
        return {}

    # ----------------------------------------------------------------- helpers for subclasses

    def files(self) -> list[str]:
        """All files under the root, relative to it, sorted (listed once)."""
        if self._files is None:
            prefix = self.root.rstrip("/") + "/"
            self._files = [u[len(prefix):] for u in storage.list_files(self.root, self.options)]
        return self._files

    def url(self, relative: str) -> str:
        parts = relative.split("/")
        if relative.startswith("/") or ".." in parts:
            raise BadInput(f"{relative}: path escapes the source root {self.root}")
        return storage.join(self.root, relative)

    def read_bytes(self, relative: str) -> bytes:
        try:
            return storage.read_bytes(self.url(relative), self.options)
        except FileNotFoundError as exc:
            raise BadInput(f"{relative}: file is missing") from exc

    def decode(self, relative: str, reader: Callable[..., Any], what: str = "target", **kwargs) -> Any:
        """``reader(bytes, **kwargs)`` (one of ``ingest.formats``) on the file ``relative`` under the root.

        A missing file raises ``BadInput("<relative>: <what> missing")``; a file the reader rejects raises
        ``BadInput("<relative>: <reader's reason>")``.
        """
        try:
            data = self.read_bytes(relative)
        except BadInput as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                raise BadInput(f"{relative}: {what} missing") from exc
            raise
        try:
            return reader(data, **kwargs)
        except BadInput as exc:
            raise BadInput(f"{relative}: {exc}") from exc

    def decode_image(self, relative: str, data: bytes | None = None) -> Image.Image:
        data = self.read_bytes(relative) if data is None else data
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
            return img
        except Exception as exc:  # PIL raises many exception types for broken files
            raise BadInput(f"{relative}: unreadable or truncated image ({exc})") from exc

    def rgb_from_file(self, relative: str) -> RGB:
        """Decode a colour image, keeping its bytes when it is already JPEG or PNG."""
        data = self.read_bytes(relative)
        img = self.decode_image(relative, data)
        pixels = np.asarray(img.convert("RGB"))
        fmt = {"JPEG": "jpg", "PNG": "png"}.get(img.format or "")
        # A PNG of another mode (16-bit, palette, RGBA) is re-encoded so the shard holds 8-bit RGB.
        keep = fmt is not None and img.mode == "RGB"
        return RGB(pixels, data if keep else None, fmt if keep else "png")
