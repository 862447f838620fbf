"""Procedural scenes with exact depth, for the quickstart and smoke checks (no download, no licence).

Each scene is a ground plane under a sky with a few spheres standing in front, ray cast through a pinhole
camera, so depth along the optical axis (metres) is exact. The ground carries a checker pattern fixed
in world coordinates and the spheres are shaded by their normals, so the image holds real depth cues
(texture gradient, occlusion, shading) that a model can learn from.
"""

from __future__ import annotations

import numpy as np

from pipeline.shards import Sample, make_key

SKY_DEPTH = 1000.0  # metres: "very far", like a renderer's sky; valid, with near-zero disparity


def render_scene(seed: int, height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Return (rgb uint8 [H, W, 3], depth float32 [H, W] in metres along the optical axis)."""
    rng = np.random.default_rng(seed)
    focal = 0.9 * width
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    # Rays with unit z: the ray parameter t is then the z-depth itself.
    rays = np.stack([(xs - width / 2) / focal, (ys - height / 2) / focal + rng.uniform(-0.05, 0.15),
                     np.ones_like(xs)], axis=-1)
    cam_height = rng.uniform(1.2, 2.5)
    with np.errstate(divide="ignore"):
        t_ground = np.where(rays[..., 1] > 1e-3, cam_height / rays[..., 1], np.inf)
    ground = np.isfinite(t_ground) & (t_ground < SKY_DEPTH)
    depth = np.where(ground, t_ground, SKY_DEPTH)
    # World-space checker: squares shrink with distance, the texture gradient monocular depth relies on.
    gx, gz = rays[..., 0] * depth, depth
    checker = ((np.floor(gx / 1.0) + np.floor(gz / 1.0)) % 2)[..., None]
    ground_colour = np.array(rng.uniform(0.3, 0.6, 3)) * (0.75 + 0.25 * checker)
    sky_colour = np.array([0.55, 0.70, 0.95]) * (1 - 0.3 * (ys / height))[..., None]
    colour = np.where(ground[..., None], ground_colour, sky_colour)
    norm2 = (rays * rays).sum(-1)
    for _ in range(rng.integers(2, 6)):
        radius = rng.uniform(0.3, 1.5)
        centre = np.array([rng.uniform(-4, 4), cam_height - radius, rng.uniform(3, 25)])
        b = rays @ centre
        disc = b**2 - norm2 * (centre @ centre - radius**2)
        t = np.where(disc > 0, (b - np.sqrt(np.maximum(disc, 0))) / norm2, np.inf)
        hit = (t > 0) & (t < depth)
        normal = (rays * np.where(hit, t, 0)[..., None] - centre) / radius
        light = np.clip(normal @ np.array([-0.4, -0.8, -0.45]), 0, 1)[..., None]
        sphere_colour = rng.uniform(0.2, 1.0, 3) * (0.3 + 0.7 * light)
        depth = np.where(hit, t, depth)
        colour = np.where(hit[..., None], sphere_colour, colour)
    rgb = (np.clip(colour, 0, 1) * 255).astype(np.uint8)
    return rgb, depth.astype(np.float32)


def demo_samples(count: int, split: str = "train", source: str = "demo", first: int = 0) -> list[Sample]:
    """``count`` synthetic samples in the shard contract, the scenes of seeds ``first, first + 1, ...`` (disparity =
    1 / depth; the sky is unmeasured, as for a depth sensor's limited range)."""
    samples = []
    for i in range(first, first + count):
        rgb, depth = render_scene(seed=i)
        mask = depth < SKY_DEPTH
        disparity = np.where(mask, 1.0 / depth, 0.0).astype(np.float32)
        sample_id = f"scene{i:05d}"
        meta = {"source": source, "id": sample_id, "split": split, "kind": "metric_depth", "units": "metres",
                "height": rgb.shape[0], "width": rgb.shape[1]}
        samples.append(Sample(make_key(source, sample_id), rgb, disparity, mask, meta, rgb_format="png"))
    return samples
