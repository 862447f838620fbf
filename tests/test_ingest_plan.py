"""Planning (split by group, screening, shard assignment) and the mask-aware ``--max-side`` resize."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.plan import IngestSettings, make_plan, split_of
from ingest.resize import resize_sample, resize_target, target_size
from ingest.sources.base import SampleRef
from ingest.sources.folder import FolderAdapter
from pipeline.shards import Sample


def adapter(tmp_path) -> FolderAdapter:
    return FolderAdapter(str(tmp_path), image_glob="*/rgb/*.jpg", target_glob="*/d/*.png", target="metric_depth")


def refs(groups: int, frames: int) -> list[SampleRef]:
    return [SampleRef(f"g{g:03d}/{f:03d}", {"rgb": f"g{g:03d}/rgb/{f:03d}.jpg"}, f"g{g:03d}")
            for g in range(groups) for f in range(frames)]


def test_split_is_by_group_never_by_frame_and_near_the_fraction(tmp_path):
    listing = refs(400, 3)
    settings = IngestSettings(val_fraction=0.25)
    by_group: dict[str, set[str]] = {}
    for ref in listing:
        by_group.setdefault(ref.group, set()).add(split_of(ref, settings))
    assert all(len(s) == 1 for s in by_group.values())  # a scene never straddles splits
    val = sum(s == {"val"} for s in by_group.values()) / len(by_group)
    assert 0.18 < val < 0.32  # 400 hashed groups: binomial sd ~0.022
    # the official split wins; no fraction or split_by none: all train
    assert split_of(SampleRef("x", {}, "g000", split="test"), settings) == "test"
    assert {split_of(r, IngestSettings(val_fraction=0.25, split_by="none")) for r in listing} == {"train"}
    assert {split_of(r, IngestSettings()) for r in listing} == {"train"}


def test_plan_is_sorted_by_id_fixed_per_shard_and_independent_of_listing_order(tmp_path):
    listing = refs(5, 5)
    settings = IngestSettings(val_fraction=0.3)
    plan = make_plan(adapter(tmp_path), listing, settings, samples_per_shard=4)
    shuffled = make_plan(adapter(tmp_path), list(reversed(listing)), settings, samples_per_shard=4)
    assert [(s.split, s.index, s.fingerprint) for s in plan.shards] == \
           [(s.split, s.index, s.fingerprint) for s in shuffled.shards]
    for split in plan.splits:
        shards = [s for s in plan.shards if s.split == split]
        ids = [r.id for s in shards for r in s.refs]
        assert ids == sorted(ids) and [s.index for s in shards] == list(range(len(shards)))
        assert all(len(s.refs) == 4 for s in shards[:-1]) and 1 <= len(shards[-1].refs) <= 4
    assert sum(len(s.refs) for s in plan.shards) == plan.inputs == 25
    # anything that changes the bytes changes the fingerprints
    resized = make_plan(adapter(tmp_path), listing, IngestSettings(val_fraction=0.3, max_side=64), 4)
    assert not {s.fingerprint for s in plan.shards} & {s.fingerprint for s in resized.shards}
    same = make_plan(adapter(tmp_path), listing, IngestSettings(val_fraction=0.3, workers=7), 4)
    assert [s.fingerprint for s in same.shards] == [s.fingerprint for s in plan.shards]


def test_a_newer_writer_changes_the_fingerprints(tmp_path, monkeypatch):
    """Shards of an older writer (other bytes for the same sample) are rewritten by a resumed run."""
    listing = refs(2, 3)
    before = make_plan(adapter(tmp_path), listing, IngestSettings(), samples_per_shard=2)
    monkeypatch.setattr("ingest.plan.WRITER_VERSION", "test-next")
    after = make_plan(adapter(tmp_path), listing, IngestSettings(), samples_per_shard=2)
    assert not {s.fingerprint for s in before.shards} & {s.fingerprint for s in after.shards}


def test_duplicate_ids_and_paths_escaping_the_root_are_rejected_while_planning(tmp_path):
    listing = refs(1, 3) + [
        SampleRef("g000/001", {"rgb": "copy/001.jpg"}, "g000"),
        SampleRef("evil", {"rgb": "../outside.jpg"}, "g9"),
        SampleRef("abs", {"rgb": "/etc/passwd"}, "g9"),
    ]
    plan = make_plan(adapter(tmp_path), listing, IngestSettings(), samples_per_shard=10)
    reasons = {r.path: r.reason for r in plan.rejects["train"]}
    root = str(tmp_path)
    assert reasons[f"{root}/g000/rgb/001.jpg"].startswith("duplicate id 'g000/001'")
    assert f"also listed as {root}/copy/001.jpg" in reasons[f"{root}/g000/rgb/001.jpg"]
    assert reasons[f"{root}/copy/001.jpg"].startswith("duplicate id 'g000/001'")
    assert reasons[f"{root}/../outside.jpg"] == "../outside.jpg: path escapes the source root"
    assert "path escapes the source root" in reasons[f"{root}//etc/passwd"]
    assert [r.id for s in plan.shards for r in s.refs] == ["g000/000", "g000/002"]
    assert plan.inputs == 6


@pytest.mark.parametrize("bad", [dict(val_fraction=1.0), dict(max_side=0), dict(workers=0),
                                 dict(shard_size_mb=0), dict(split_by="frame"), dict(disparity_dtype="float64")])
def test_bad_settings_name_the_option(bad):
    with pytest.raises(ValueError, match="--" + next(iter(bad)).replace("_", "-")):
        IngestSettings(**bad)


def test_masked_averaging_never_mixes_valid_and_invalid_pixels():
    # 4x4 -> 2x2: each output pixel averages one 2x2 block, over its valid pixels only.
    disparity = np.array([[1, 3, 5, 5],
                          [2, 2, 5, 5],
                          [9, 0, 0, 0],
                          [0, 0, 0, 7]], np.float32)
    valid = disparity > 0
    out, out_valid = resize_target(disparity, valid, (2, 2))
    assert out_valid.tolist() == [[True, True], [False, False]]  # 1/4 valid < half: invalid
    np.testing.assert_allclose(out, [[2.0, 5.0], [0.0, 0.0]], rtol=1e-6)
    two = np.array([[4, 0], [8, 0]], np.float32)
    out, out_valid = resize_target(two, two > 0, (1, 1))
    assert out_valid.tolist() == [[True]] and out[0, 0] == pytest.approx(6.0)  # not (4+8)/4 = 3


def test_resize_property_output_stays_within_the_valid_input_range():
    rng = np.random.default_rng(1)
    for _ in range(20):
        h, w = rng.integers(8, 40, 2)
        disparity = rng.uniform(1, 2, (h, w)).astype(np.float32)
        valid = rng.random((h, w)) > 0.4
        size = target_size(int(h), int(w), int(rng.integers(3, 8)))
        out, out_valid = resize_target(disparity, valid, size)
        assert out.shape == size and (out[~out_valid] == 0).all()
        assert (out[out_valid] >= 1 - 1e-5).all() and (out[out_valid] <= 2 + 1e-5).all()


def test_resize_sample_keeps_aspect_and_reencodes_the_image():
    rgb = np.zeros((48, 64, 3), np.uint8)
    sample = Sample("s-a", rgb, np.ones((48, 64), np.float32), np.ones((48, 64), bool),
                    {"source": "s", "id": "a", "split": "train", "kind": "metric_depth", "height": 48, "width": 64},
                    b"jpeg bytes", "jpg")
    small = resize_sample(sample, 32)
    assert small.rgb.shape == (24, 32, 3) and small.disparity.shape == small.mask.shape == (24, 32)
    assert small.rgb_bytes is None and small.rgb_format == "jpg"  # the writer re-encodes as JPEG
    assert (small.meta["height"], small.meta["width"], small.meta["original_size"]) == (24, 32, [48, 64])
    assert resize_sample(sample, 64) is sample and resize_sample(sample, None) is sample


def test_resize_rescales_stereo_disparity_and_intrinsics_with_the_grid():
    meta = {"source": "s", "id": "a", "split": "train", "kind": "stereo_disparity", "height": 40, "width": 80,
            "fx": 100.0, "fy": 100.0, "cx": 39.5, "cy": 19.5}
    sample = Sample("s-a", np.zeros((40, 80, 3), np.uint8), np.full((40, 80), 12.0, np.float32),
                    np.ones((40, 80), bool), meta)
    small = resize_sample(sample, 20)  # 80 -> 20: a quarter
    np.testing.assert_allclose(small.disparity, 3.0)  # pixels of the new grid
    assert (small.meta["fx"], small.meta["fy"], small.meta["cx"], small.meta["cy"]) == (25.0, 25.0, 9.5, 4.5)
    depth_like = resize_sample(Sample("s-a", sample.rgb, sample.disparity, sample.mask,
                                      {**meta, "kind": "metric_depth"}), 20)
    np.testing.assert_allclose(depth_like.disparity, 12.0)  # 1/d does not depend on the grid
