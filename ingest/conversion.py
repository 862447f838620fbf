"""The one conversion from what a source measured to the corpus target: disparity (inverse depth).

Every source's native values become disparity up to an unknown scale and shift, which is exactly what the
scale- and shift-invariant loss consumes and why differently measured sources can be mixed (MiDaS, DPT).
Adapters only turn their files into ``(target, valid)`` in the source's own units; this function is the
only place where a kind becomes disparity.

=====================  ==============================================  ============================
kind                   target as the adapter returns it                disparity
=====================  ==============================================  ============================
``metric_depth``       depth along the optical axis, metres            ``1 / depth``, 1/metre
``relative_depth``     depth up to an unknown scale (SfM, MVS)         ``1 / depth``
``stereo_disparity``   disparity in pixels (stereo matching, GT)       as is
``inverse_depth``      inverse depth up to scale (larger = nearer)     as is
=====================  ==============================================  ============================

A label map (kind ``semantic_labels``, for segmentation) is not a depth target: :func:`to_labels` turns the
adapter's class ids and labelled-pixel mask into the contract's ``seg.png`` (uint8, 255 = ignore).

Metric depth keeps its metres (the metric contract of :mod:`pipeline.shards`): its disparity is exactly
``1 / depth`` in 1/metre, never rescaled or normalised, so metric fine-tuning recovers depth in metres as
``1 / disparity``. Here that is one correctly rounded float32 division (``np.float32(1) / depth`` for a
float32 target); what the stored dtype keeps of it is said in :mod:`pipeline.shards`.

Pixels very far away (sky at thousands of metres) stay valid with a disparity near zero: that is what
the loss should learn for them, rather than ignoring them.
"""

from __future__ import annotations

import enum

import numpy as np

from ingest.bad_input import BadInput
from pipeline.shards import IGNORE_LABEL


class TargetKind(str, enum.Enum):
    METRIC_DEPTH = "metric_depth"
    RELATIVE_DEPTH = "relative_depth"
    STEREO_DISPARITY = "stereo_disparity"
    INVERSE_DEPTH = "inverse_depth"
    SEMANTIC_LABELS = "semantic_labels"

    @property
    def is_depth(self) -> bool:
        return self in (TargetKind.METRIC_DEPTH, TargetKind.RELATIVE_DEPTH)

    @property
    def is_labels(self) -> bool:
        """A segmentation label map (class ids), not a geometric target."""
        return self is TargetKind.SEMANTIC_LABELS


def to_disparity(target: np.ndarray, valid: np.ndarray, kind: TargetKind | str) -> tuple[np.ndarray, np.ndarray]:
    """Convert ``target`` float ``[H, W]`` of ``kind`` to ``(disparity float32 [H, W], valid bool [H, W])``.

    ``valid`` marks the pixels the source measured. Depth of 0 is "no measurement" for every depth
    source and becomes invalid; NaN, Inf or negative values inside ``valid`` raise
    :class:`~ingest.bad_input.BadInput` (the ingest job turns that into a reject with the message as its reason).
    """
    kind = TargetKind(kind)
    if kind.is_labels:
        raise ValueError("semantic_labels are class ids, not a depth target: convert them with to_labels")
    # float32 throughout (the stored target is float32 at most; 1/d rounded once, correctly, in float32);
    # a float64 target is worked in float64 and rounded once at the end.
    target = np.asarray(target)
    work = np.float64 if target.dtype == np.float64 else np.float32
    target = target.astype(work, copy=False)
    valid = np.asarray(valid, dtype=bool)
    if target.shape != valid.shape or target.ndim != 2:
        raise BadInput(f"target {list(target.shape)} and valid {list(valid.shape)} must be one [H, W]")
    if not (np.isfinite(target).all() and target.min(initial=0) >= 0):  # else: no pixel can be bad
        _check_valid_values(target[valid])
    if kind.is_depth:
        valid = valid & (target > 0)
        disparity = np.zeros(target.shape, work)
        np.divide(work(1), target, out=disparity, where=valid)
    else:
        disparity = np.where(valid, target, work(0))
    return disparity.astype(np.float32, copy=False), valid


def _check_valid_values(values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise BadInput(f"{int(bad.sum())} valid pixels are NaN or Inf")
    if (values < 0).any():
        raise BadInput(f"{int((values < 0).sum())} valid pixels are negative")


def to_labels(classes: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Class ids ``[H, W]`` (integers 0..254) and ``labelled`` bool ``[H, W]`` -> uint8 ``[H, W]`` label map
    with :data:`pipeline.shards.IGNORE_LABEL` (255) where a pixel is not labelled.

    A labelled pixel whose id is not an integer in 0..254 raises :class:`~ingest.bad_input.BadInput` (255 is
    reserved for "ignore", so a map of more than 255 classes needs another encoding).
    """
    classes = np.asarray(classes)
    labelled = np.asarray(labelled, dtype=bool)
    if classes.shape != labelled.shape or classes.ndim != 2:
        raise BadInput(f"classes {list(classes.shape)} and labelled {list(labelled.shape)} must be one [H, W]")
    values = classes[labelled]
    if values.size and not np.issubdtype(values.dtype, np.integer):
        if not np.isfinite(values).all() or (values != np.round(values)).any():
            raise BadInput("labelled pixels hold class ids that are not integers")
    bad = (values < 0) | (values >= IGNORE_LABEL)
    if bad.any():
        raise BadInput(f"{int(bad.sum())} labelled pixels have class ids outside 0..{IGNORE_LABEL - 1} "
                       f"(found {values[bad].min()}..{values[bad].max()})")
    labels = np.full(classes.shape, IGNORE_LABEL, np.uint8)
    labels[labelled] = values.astype(np.uint8)
    return labels
