"""What every benchmark reader shares: the sample it returns and small helpers for reading files.

A reader is built from its benchmark folder (``<data-root>/<name>``, local or ``s3://``), lists the
protocol's samples in a stable order (:meth:`BenchmarkReader.list_samples`) and reads one by id
(:meth:`BenchmarkReader.load`). Readers know the benchmark's files, units and invalid values only;
alignment, caps, crops and metrics belong to :mod:`evaluation.protocol`. Readers are cheap to build and to
pickle, so that each Ray worker builds its own from the folder URL.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from pipeline import storage


class BenchmarkError(ValueError):
    """A benchmark file is missing, malformed or inconsistent; the message names the file."""


@dataclasses.dataclass
class BenchmarkSample:
    """One evaluation image with its ground truth.

    ``rgb`` is uint8 ``[H, W, 3]``. Dense benchmarks set ``depth`` (float32 ``[H, W]``, metres, same size as
    ``rgb``) and ``valid`` (bool ``[H, W]``); DIW sets ``pairs`` (``[N, 5]`` rows ``(y1, x1, y2, x2, rel)``,
    0-based pixels of ``rgb``, rel +1 when point 1 is closer). Segmentation benchmarks set ``labels`` (uint8
    ``[H, W]`` class ids, 255 = ignore, as in the shard contract). ``source`` names the ground-truth file.
    ``reason`` is set when the protocol's split lists the image but it has no ground truth to score (KITTI's
    Eigen frames without annotated depth): then nothing else is read (``rgb`` None) and the evaluation reports the
    image with this reason instead of a number.
    """

    id: str
    rgb: np.ndarray | None
    source: str
    depth: np.ndarray | None = None
    valid: np.ndarray | None = None
    pairs: np.ndarray | None = None
    labels: np.ndarray | None = None
    reason: str = ""


class BenchmarkReader:
    """Base class: subclasses set ``name`` and implement :meth:`list_samples` and :meth:`load`."""

    name: str = ""

    def __init__(self, root: str):
        self.root = str(root).rstrip("/")

    def list_samples(self) -> list[str]:
        raise NotImplementedError

    def load(self, sample_id: str) -> BenchmarkSample:
        raise NotImplementedError

    # ----------------------------------------------------------------- helpers for subclasses

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    def require_root(self) -> list[str]:
        """All files under the benchmark folder; a missing or empty folder is a clear error."""
        files = storage.list_files(self.root)
        if not files:
            raise FileNotFoundError(f"{self.name}: benchmark folder {self.root} is missing or empty")
        return files

    def relative(self, url: str) -> str:
        return url[len(self.root) + 1:]


def read_rgb(url: str) -> np.ndarray:
    """An image file (PNG, JPEG, PPM, DIW's JPEG ``.thumb``) as uint8 RGB ``[H, W, 3]``."""
    try:
        with Image.open(io.BytesIO(storage.read_bytes(url))) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"{url}: not a readable image ({exc})") from exc


def read_png_uint16(url: str) -> np.ndarray:
    """A 16-bit single-channel PNG as uint16 ``[H, W]`` (KITTI and TUM ground truth)."""
    with Image.open(io.BytesIO(storage.read_bytes(url))) as image:
        if image.mode not in ("I;16", "I;16B", "I", "I;16L"):
            raise BenchmarkError(f"{url}: expected a 16-bit depth PNG, got PIL mode {image.mode}")
        return np.asarray(image).astype(np.uint16)


def read_class_ids(url: str, rgb: np.ndarray, classes: int, labels: str, missing: str) -> np.ndarray:
    """A segmentation benchmark's label map (values 0 = unlabelled, 1..``classes``) as class ids uint8 ``[H, W]``:
    0 becomes ``IGNORE_LABEL``, k becomes k - 1 (ADE20K's and PASCAL-Context's released convention). ``labels``
    words the valid values for the error (e.g. ``"ADE20K labels are 0..150"``), ``missing`` names a missing file
    (``"annotation missing"``); the map must have ``rgb``'s size."""
    from pipeline.shards import IGNORE_LABEL

    try:
        with Image.open(io.BytesIO(storage.read_bytes(url))) as image:
            values = np.asarray(image)
    except FileNotFoundError:
        raise BenchmarkError(f"{url}: {missing}") from None
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"{url}: not a readable label map ({exc})") from exc
    if values.ndim != 2:
        raise BenchmarkError(f"{url}: expected a single-channel label map, got shape {list(values.shape)}")
    check_size(rgb, values, url)
    if values.max(initial=0) > classes:
        raise BenchmarkError(f"{url}: values above {classes} (max {int(values.max())}); {labels}")
    return np.where(values == 0, IGNORE_LABEL, values.astype(np.int64) - 1).astype(np.uint8)


def check_size(rgb: np.ndarray, depth: np.ndarray, gt_url: str) -> None:
    if rgb.shape[:2] != depth.shape[:2]:
        raise BenchmarkError(
            f"{gt_url}: ground truth is {depth.shape[0]}x{depth.shape[1]} but its image is "
            f"{rgb.shape[0]}x{rgb.shape[1]}"
        )
