"""One input sample -> one contract ``Sample``: read through the adapter, check, convert.

A depth source's target becomes disparity (``to_disparity``); a segmentation source's label map (kind
``semantic_labels``) becomes the ``seg.png`` class ids with 255 = ignore (``to_labels``). This is where
every per-sample reject reason ends up as one :class:`~ingest.bad_input.BadInput` (the adapter and the format
readers raise it for unreadable files, the conversion for bad values; here: size mismatch, too few valid
pixels, and whatever else an adapter raised), so the ingest job only has to catch ``BadInput`` and record
``str(exc)``.
"""

from __future__ import annotations

import numpy as np

from ingest.bad_input import BadInput
from ingest.conversion import to_disparity, to_labels
from ingest.sources.base import SampleRef, SourceAdapter
from pipeline import storage
from pipeline.shards import Sample, make_key


def assemble_sample(adapter: SourceAdapter, ref: SampleRef, split: str, min_valid_fraction: float = 0.01) -> Sample:
    """Read ``ref`` through ``adapter`` and return a contract sample of split ``split``.

    Raises :class:`~ingest.bad_input.BadInput` naming the reason: unreadable image or target, image/target
    size mismatch, NaN/Inf/negative values where valid (class ids outside 0..254 for a label map), or fewer
    than ``min_valid_fraction`` valid pixels. The fraction rule is for depth only: a label map is kept
    however few pixels are labelled, because segmentation benchmarks score every labelled pixel of every
    image (an image with none adds nothing to the confusion matrix, and drops nothing either). Any other
    exception an adapter raises is that input's problem too (``cannot read: <type>: <message>``); only a
    ``StorageError`` (the store failing, not the input) passes through.
    """
    try:
        return _assemble(adapter, ref, split, min_valid_fraction)
    except (BadInput, storage.StorageError):
        raise
    except Exception as exc:  # an adapter (ours or another package's) tripping over an odd file
        raise BadInput(f"cannot read: {type(exc).__name__}: {exc}") from exc


def _assemble(adapter: SourceAdapter, ref: SampleRef, split: str, min_valid_fraction: float) -> Sample:
    rgb = adapter.read_rgb(ref)
    target, valid = adapter.read_target(ref)
    if rgb.pixels.shape[:2] != target.shape:
        raise BadInput(f"image is {list(rgb.pixels.shape[:2])} but target is {list(target.shape)}")
    if adapter.kind.is_labels:
        labels, disparity, valid = to_labels(target, valid), None, None
    else:
        labels = None
        disparity, valid = to_disparity(target, valid, adapter.kind)
    meta = adapter.metadata(ref)
    if valid is not None:
        _check_valid_fraction(valid, min_valid_fraction)
    h, w = target.shape
    meta = {**meta, "source": adapter.name, "id": ref.id, "split": split, "kind": adapter.kind.value,
            "group": ref.group, "height": h, "width": w}
    return Sample(make_key(adapter.name, ref.id), rgb.pixels, disparity, valid, meta, rgb.encoded, rgb.format,
                  segmentation=labels)


def _check_valid_fraction(valid: np.ndarray, minimum: float) -> None:
    fraction = np.count_nonzero(valid) / valid.size if valid.size else 0.0
    if fraction < minimum:
        raise BadInput(f"only {fraction:.2%} of target pixels are valid (minimum {minimum:.2%})")
