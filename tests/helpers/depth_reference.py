"""The metric depth metrics (DPT Tables 2 and 3) written out in numpy from their formulas, one image at a time:
what the product's ``pipeline.depth_metrics`` and the metric protocols are checked against."""

from __future__ import annotations

import numpy as np

from pipeline.depth_metrics import DEPTH_METRICS


def image_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Each metric of one image from its valid pixels' predicted and true depths (1-d, metres)."""
    p, g = pred.astype(np.float64), gt.astype(np.float64)
    ratio = np.maximum(p / g, g / p)
    e = np.log(p) - np.log(g)
    return {
        "d1": np.mean(ratio < 1.25), "d2": np.mean(ratio < 1.25 ** 2), "d3": np.mean(ratio < 1.25 ** 3),
        "abs_rel": np.mean(np.abs(g - p) / g), "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)), "rmse_log": np.sqrt(np.mean(e ** 2)),
        "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
        "silog": 100 * np.sqrt(np.mean(e ** 2) - np.mean(e) ** 2),
    }


def reference(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Each image's metrics on its valid pixels (``[H, W]`` or ``[B, H, W]``), averaged over the images that have
    one."""
    rows = [image_metrics(p[m], g[m]) for p, g, m in zip(pred.reshape(-1, *pred.shape[-2:]),
                                                          gt.reshape(-1, *gt.shape[-2:]),
                                                          mask.reshape(-1, *mask.shape[-2:])) if m.any()]
    return {k: float(np.mean([r[k] for r in rows])) for k in DEPTH_METRICS}
