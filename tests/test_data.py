"""The training data path: disjoint slots, realised mixing proportions, aligned augmentation, s3 streaming."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest
import torch

from tests.helpers.training_corpus import write_source
from training import augment
from training.data import (DataConfig, LoaderConfig, ShardsConfig, StreamConfig, make_loader, source_counts,
                           source_manifests, source_stream, validation_batches)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("corpus"))
    keys = {
        "alpha": write_source(prefix, "alpha", 14, per_shard=3),  # 5 shards: dealt out to 4 slots
        "beta": write_source(prefix, "beta", 6, per_shard=6),  # 1 shard: fewer shards than slots
    }
    write_source(prefix, "beta", 5, per_shard=2, split="val", offset=100)
    return prefix, keys


def _config(prefix: str, **kw) -> DataConfig:
    return DataConfig(
        shards=ShardsConfig(prefix=prefix, sources=["alpha", "beta"]),
        geometric=augment.GeometricConfig(size=32),
        stream=StreamConfig(shuffle=4, seed=1),
        **kw,
    )


@pytest.mark.parametrize("source", ["alpha", "beta"])
def test_slots_read_disjoint_samples_that_cover_the_source(corpus, source):
    prefix, keys = corpus
    urls = source_counts(ShardsConfig(prefix, [source]))[source]
    world, workers = 2, 2
    seen = []
    for rank, worker in itertools.product(range(world), range(workers)):
        epoch = [s["__key__"] for s in source_stream(urls, (rank, world, worker, workers), StreamConfig(4, 1), 7, epochs=1)]
        assert epoch, f"slot {rank}/{worker} got no sample of {source}"
        seen.extend(epoch)
    assert len(seen) == len(set(seen)), "a sample was read by two slots in one epoch"
    assert sorted(seen) == sorted(keys[source])


def test_streams_are_endless_and_reshuffled_per_epoch(corpus):
    prefix, keys = corpus
    counts = source_counts(ShardsConfig(prefix, ["beta"]))["beta"]
    stream = source_stream(counts, (0, 1, 0, 1), StreamConfig(shuffle=6, seed=1), 3)
    first, second = ([next(stream)["__key__"] for _ in range(6)] for _ in range(2))
    assert sorted(first) == sorted(second) == sorted(keys["beta"])
    assert first != second


def test_realised_source_proportions_follow_the_weights(corpus):
    prefix, _ = corpus
    config = _config(prefix, weights={"alpha": 3.0, "beta": 1.0}, loader=LoaderConfig(batch_size=8, workers=0))
    loader = make_loader(config)
    counts = collections.Counter(s for _ in range(50) for s in next(loader)["source"])
    share = counts["alpha"] / sum(counts.values())
    assert share == pytest.approx(0.75, abs=0.07)  # 400 draws: sd 0.022


def test_batches_have_the_contracted_shapes_and_workers_do_not_repeat(corpus):
    prefix, keys = corpus
    config = _config(prefix, weights={"alpha": 1.0, "beta": 0.0}, loader=LoaderConfig(batch_size=2, workers=2))
    loader = make_loader(config, sources=["alpha"])
    batch = next(loader)
    assert batch["image"].shape == (2, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["disparity"].shape == (2, 1, 32, 32) and batch["mask"].dtype == torch.bool
    # Two workers, each over its own shards: the first epoch's 14 samples come without repeats.
    keys_seen = batch["key"] + [k for _ in range(5) for k in next(loader)["key"]]
    assert len(keys_seen) == len(set(keys_seen)) == 12
    assert set(keys_seen) <= set(keys["alpha"])


def test_loader_streams_shards_from_s3(s3_bucket):
    keys = write_source(s3_bucket, "gamma", 6, per_shard=2)
    config = DataConfig(shards=ShardsConfig(s3_bucket, ["gamma"]), geometric=augment.GeometricConfig(size=16),
                        stream=StreamConfig(shuffle=0), loader=LoaderConfig(batch_size=3, workers=1))
    loader = make_loader(config)
    got = next(loader)["key"] + next(loader)["key"]
    assert sorted(got) == sorted(keys)


def test_validation_batches_split_ranks_without_overlap(corpus):
    prefix, _ = corpus
    config = _config(prefix, loader=LoaderConfig(batch_size=2))
    per_rank = [[k for b in validation_batches(config, "beta", "val", rank, 2) for k in b["key"]] for rank in (0, 1)]
    assert sorted(per_rank[0] + per_rank[1]) == [f"beta-scene{i:05d}" for i in range(100, 105)]
    assert not set(per_rank[0]) & set(per_rank[1])


def test_missing_source_and_unknown_weight_are_named(corpus):
    prefix, _ = corpus
    with pytest.raises(FileNotFoundError, match="source 'delta'"):
        source_manifests(ShardsConfig(prefix, ["delta"]))
    with pytest.raises(ValueError, match=r"\['delta'\]"):
        make_loader(_config(prefix, weights={"delta": 1.0}))


# --------------------------------------------------------------------------- augmentation


def _coded_sample(h=40, w=70, seed=0):
    """An image whose red channel encodes the disparity, so alignment can be read back after augmenting."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    disparity = (1.0 + (xs / w) * 0.6 + (ys / h) * 0.4).astype(np.float32)  # smooth, in [1, 2]
    mask = rng.random((h, w)) > 0.2
    mask[:, : w // 5] = False  # an invalid band, as sky or out of sensor range
    disparity[~mask] = 0.0
    red = np.clip((1.0 + (xs / w) * 0.6 + (ys / h) * 0.4 - 1.0) * 255, 0, 255)
    rgb = np.stack([red, np.zeros_like(red), np.zeros_like(red)], -1).astype(np.uint8)
    return rgb, disparity, mask


@pytest.mark.parametrize("side", ["longer", "shorter"])
def test_geometric_augmentation_keeps_target_and_mask_aligned_without_mixing(side):
    rgb, disparity, mask = _coded_sample()
    config = augment.GeometricConfig(size=48, resize_side=side)
    flips = 0
    for seed in range(12):
        image, disp, valid, frame = augment.geometric(*augment.to_tensors(rgb, disparity, mask), config,
                                                      np.random.default_rng(seed))
        assert image.shape == (3, 48, 48) and disp.shape == valid.shape == frame.shape == (48, 48)
        assert valid.any() and not (valid & ~frame).any()  # padding is never a valid target
        # Every valid target is a mean of valid inputs (all in [1, 2]); mixing with invalid zeros would go below.
        assert disp[valid].min() >= 1.0 - 1e-5 and disp[valid].max() <= 2.0 + 1e-5
        assert (disp[~valid] == 0).all()
        # The image was moved exactly like the target: red still encodes the disparity where it is valid.
        decoded = image[0][valid] + 1.0
        assert (decoded - disp[valid]).abs().max() < 0.03
        left = disp[valid & (torch.arange(48) < 24)].mean()
        right = disp[valid & (torch.arange(48) >= 24)].mean()
        flips += int(left > right)  # disparity grows to the right unless flipped
    assert 2 <= flips <= 10


def test_resize_masked_marks_mixed_support_invalid():
    disparity = torch.tensor([[2.0] * 8 + [0.0] * 8] * 4)
    mask = disparity > 0
    out, valid = augment.resize_masked(disparity, mask, (2, 8))
    # Halving with the antialiasing triangle filter: output column j draws on input columns 2j-1 .. 2j+2,
    # so columns 0-2 see only valid inputs and column 3 already touches the invalid half.
    assert valid.tolist() == [[True] * 3 + [False] * 5] * 2
    assert out[valid].tolist() == pytest.approx([2.0] * 6) and (out[~valid] == 0).all()


def test_validation_transform_is_deterministic_and_photometric_leaves_target_alone():
    rgb, disparity, mask = _coded_sample()
    tensors = augment.to_tensors(rgb, disparity, mask)
    a = augment.geometric(*tensors, augment.GeometricConfig(size=48), None)
    b = augment.geometric(*tensors, augment.GeometricConfig(size=48), None)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    jitter = augment.PhotometricConfig(brightness=0.4, contrast=0.4, saturation=0.4)
    changed = augment.photometric(a[0].clone(), jitter, np.random.default_rng(0))
    assert not torch.equal(changed, a[0]) and changed.min() >= 0 and changed.max() <= 1
    normalised = augment.normalize(a[0], a[3], augment.NormalizeConfig())
    assert (normalised[:, ~a[3]] == 0).all()
