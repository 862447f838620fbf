"""One input sample -> one contract ``Sample``: read through the adapter, check, convert.

A depth source's target becomes disparity (``to_disparity``); a segmentation source's label map (kind
``semantic_labels``) becomes the ``seg.png`` class ids with 255 = ignore (``to_labels``). This is where
every per-sample reject reason is decided (the adapter raises for unreadable files; here: size mismatch,
bad values, too few valid pixels), so the ingest job only has to catch :class:`RejectedSample` and
record ``str(exc)``.
"""

from __future__ import annotations

import numpy as np

from ingest.conversion import InvalidTarget, to_disparity, to_labels
from ingest.sources.base import SampleReadError, SampleRef, SourceAdapter
from pipeline.shards import Sample, make_key


class RejectedSample(ValueError):
    """This input is not written; ``str(exc)`` is the reason recorded in rejects.parquet."""


def assemble_sample(adapter: SourceAdapter, ref: SampleRef, split: str, min_valid_fraction: float = 0.01) -> Sample:
    """Read ``ref`` through ``adapter`` and return a contract sample of split ``split``.

    Raises :class:`RejectedSample` naming the reason: unreadable image or target, image/target size
    mismatch, NaN/Inf/negative values where valid (class ids outside 0..254 for a label map), or fewer
    than ``min_valid_fraction`` valid pixels. The fraction rule is for depth only: a label map is kept
    however few pixels are labelled, because segmentation benchmarks score every labelled pixel of every
    image (an image with none adds nothing to the confusion matrix, and drops nothing either).
    """
    try:
        rgb = adapter.read_rgb(ref)
        target, valid = adapter.read_target(ref)
        if rgb.pixels.shape[:2] != target.shape:
            raise RejectedSample(f"image is {list(rgb.pixels.shape[:2])} but target is {list(target.shape)}")
        if adapter.kind.is_labels:
            labels, disparity, valid = to_labels(target, valid), None, None
        else:
            labels = None
            disparity, valid = to_disparity(target, valid, adapter.kind)
        meta = adapter.metadata(ref)
    except (SampleReadError, InvalidTarget) as exc:
        raise RejectedSample(str(exc)) from exc
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
        raise RejectedSample(f"only {fraction:.2%} of target pixels are valid (minimum {minimum:.2%})")
