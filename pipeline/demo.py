"""A tiny synthetic corpus for the quickstart and smoke checks: procedural scenes with exact depth.

Each scene is a slanted ground plane with a few spheres in front of it, rendered by ray casting with a
pinhole camera, so depth (metres) and therefore disparity (1 / depth) are exact. This is not training
data; it exercises the shard contract end to end without any download.
"""

from __future__ import annotations

import numpy as np

from pipeline.shards import Sample, make_key


def render_scene(seed: int, height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Return (rgb uint8 [H, W, 3], depth float32 [H, W] in metres) of one random scene."""
    rng = np.random.default_rng(seed)
    focal = 0.9 * width
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    rays = np.stack([(xs - width / 2) / focal, (ys - height / 2) / focal, np.ones_like(xs)], axis=-1)
    # Ground plane y = cam_height (camera looks along +z, +y is down); rays above the horizon see the sky.
    cam_height = rng.uniform(1.0, 2.0)
    with np.errstate(divide="ignore"):
        t_plane = np.where(rays[..., 1] > 1e-3, cam_height / rays[..., 1], np.inf)
    depth = np.minimum(t_plane, 80.0)
    colour = np.where(np.isfinite(t_plane)[..., None], [0.45, 0.40, 0.30], [0.55, 0.70, 0.95])
    checker = ((np.floor(xs / 8) + np.floor(ys / 8)) % 2)[..., None] * 0.1
    colour = colour + checker
    for _ in range(rng.integers(2, 5)):
        centre = np.array([rng.uniform(-2, 2), rng.uniform(-0.5, cam_height - 0.3), rng.uniform(3, 12)])
        radius = rng.uniform(0.4, 1.2)
        b = rays @ centre
        c = centre @ centre - radius**2
        disc = b**2 - (rays * rays).sum(-1) * c
        hit = disc > 0
        t = np.where(hit, (b - np.sqrt(np.maximum(disc, 0))) / (rays * rays).sum(-1), np.inf)
        closer = hit & (t > 0) & (t < depth)
        depth = np.where(closer, t, depth)
        colour = np.where(closer[..., None], rng.uniform(0.2, 1.0, 3) * (0.5 + 0.5 / (1 + t[..., None] / 5)), colour)
    rgb = (np.clip(colour, 0, 1) * 255).astype(np.uint8)
    # Rays have unit z, so the ray parameter t is z-depth (what sensors and renderers report).
    return rgb, depth.astype(np.float32)


def demo_samples(count: int, split: str = "train", source: str = "demo") -> list[Sample]:
    """``count`` synthetic samples in the shard contract (disparity = 1 / depth)."""
    samples = []
    for i in range(count):
        rgb, depth = render_scene(seed=i)
        mask = depth < 80.0  # the far cap stands for "no measurement", as a real sensor's range would
        disparity = np.where(mask, 1.0 / depth, 0.0).astype(np.float32)
        sample_id = f"scene{i:05d}"
        meta = {"source": source, "id": sample_id, "split": split, "kind": "metric_depth", "units": "metres",
                "height": rgb.shape[0], "width": rgb.shape[1]}
        samples.append(Sample(make_key(source, sample_id), rgb, disparity, mask, meta, rgb_format="png"))
    return samples
