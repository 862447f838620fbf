"""ADE20K adapter: images/<split>/*.jpg + annotations/<split>/*.png label maps (0 = other -> 255 ignore,
k -> k - 1), official split from the folder, written as seg.png shards (local and s3)."""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.conversion import TargetKind
from ingest.plan import IngestSettings, make_plan
from ingest.resize import resize_sample
from ingest.shard_task import write_shard
from pipeline.manifest import verify_shard
from pipeline.shards import IGNORE_LABEL, SEG_MEMBER, ShardWriter, iter_shard, iter_shard_members, shard_url
from tests.helpers.adapter_tools import H, W, adapter, rgb, write_files
from tests.helpers.images import encode, palette_png

ROOT = "ADEChallengeData2016"


def annotation(seed: int) -> np.ndarray:
    """A uint8 [H, W] ADE annotation: values 0..150, with 0 ("other") in the first column."""
    values = (np.arange(H * W).reshape(H, W) * 7 + seed * 13) % 151
    values[:, 0] = 0
    values[1, 1] = 150  # the last class
    values[2, 2] = 1  # the first class
    return values.astype(np.uint8)


@pytest.fixture
def ade_root(storage_root):
    root = f"{storage_root}/ade"
    files = {}
    for split, name, seed in [("training", "ADE_train_00000001", 0), ("training", "ADE_train_00000002", 1),
                              ("validation", "ADE_val_00000001", 2)]:
        files[f"{ROOT}/images/{split}/{name}.jpg"] = encode(rgb(seed), "JPEG")
        files[f"{ROOT}/annotations/{split}/{name}.png"] = encode(annotation(seed))
    # A palette annotation: the indices are the labels, never the colours.
    files[f"{ROOT}/images/validation/ADE_val_00000002.jpg"] = encode(rgb(3), "JPEG")
    files[f"{ROOT}/annotations/validation/ADE_val_00000002.png"] = palette_png(annotation(3))
    # Bad inputs: an annotation missing, a value that is no ADE class, a size mismatch.
    files[f"{ROOT}/images/validation/ADE_val_00000003.jpg"] = encode(rgb(4), "JPEG")
    files[f"{ROOT}/images/validation/ADE_val_00000004.jpg"] = encode(rgb(5), "JPEG")
    bad = annotation(5)
    bad[0, 3] = 151
    files[f"{ROOT}/annotations/validation/ADE_val_00000004.png"] = encode(bad)
    files[f"{ROOT}/images/validation/ADE_val_00000005.jpg"] = encode(rgb(6), "JPEG")
    files[f"{ROOT}/annotations/validation/ADE_val_00000005.png"] = encode(annotation(6)[:, :5])
    # Released alongside, never read as samples: the class list and the unlabelled test images.
    files[f"{ROOT}/objectInfo150.txt"] = b"Idx\tRatio\tTrain\tVal\tName\n1\t0.1576\t11664\t1172\twall\n"
    files[f"{ROOT}/images/testing/ADE_test_00000001.jpg"] = encode(rgb(7), "JPEG")
    write_files(root, files)
    return root


def expected_labels(values: np.ndarray) -> np.ndarray:
    # By hand: 0 -> 255, k -> k - 1.
    out = values.astype(np.int64) - 1
    out[values == 0] = 255
    return out.astype(np.uint8)


def test_listing_uses_the_official_split(ade_root):
    source = adapter("ade20k", ade_root)
    assert source.kind is TargetKind.SEMANTIC_LABELS
    refs = source.list_samples()
    ids = [r.id.split("/")[-1] for r in refs]
    assert ids == ["ADE_train_00000001", "ADE_train_00000002"] + [f"ADE_val_0000000{i}" for i in range(1, 6)]
    assert [r.split for r in refs] == ["train"] * 2 + ["val"] * 5
    assert all(r.group == r.id for r in refs)


def test_labels_shift_down_and_other_is_ignored(ade_root):
    source = adapter("ade20k", ade_root)
    refs = source.list_samples()
    for ref, seed in [(refs[0], 0), (refs[2], 2), (refs[3], 3)]:  # refs[3] is the palette PNG
        sample = assemble_sample(source, ref, ref.split)
        assert sample.disparity is None and sample.mask is None
        assert sample.segmentation.dtype == np.uint8
        np.testing.assert_array_equal(sample.segmentation, expected_labels(annotation(seed)))
        assert (sample.segmentation[:, 0] == IGNORE_LABEL).all()
        assert sample.segmentation[1, 1] == 149 and sample.segmentation[2, 2] == 0
        assert sample.meta["kind"] == "semantic_labels" and sample.meta["num_classes"] == 150
        assert sample.rgb_format == "jpg" and sample.rgb_bytes is not None  # the source's JPEG kept


def test_bad_inputs_have_reasons(ade_root):
    source = adapter("ade20k", ade_root)
    refs = {r.id.split("/")[-1]: r for r in source.list_samples()}
    with pytest.raises(BadInput, match=r"annotations/validation/ADE_val_00000003.png: annotation missing"):
        assemble_sample(source, refs["ADE_val_00000003"], "val")
    with pytest.raises(BadInput, match=r"ADE_val_00000004.png: 1 pixels hold values above 150 \(max 151\)"):
        assemble_sample(source, refs["ADE_val_00000004"], "val")
    with pytest.raises(BadInput, match=r"image is \[8, 12\] but target is \[8, 5\]"):
        assemble_sample(source, refs["ADE_val_00000005"], "val")


def test_an_all_other_image_is_kept(tmp_path):
    # Segmentation scores every labelled pixel of every image: no minimum labelled fraction.
    write_files(str(tmp_path), {"images/training/a.jpg": encode(rgb(), "JPEG"),
                               "annotations/training/a.png": encode(np.zeros((H, W), np.uint8))})
    source = adapter("ade20k", str(tmp_path))
    sample = assemble_sample(source, source.list_samples()[0], "train", min_valid_fraction=0.5)
    assert (sample.segmentation == IGNORE_LABEL).all()


def test_shard_round_trip_and_resize_keeps_labels(ade_root, storage_root):
    source = adapter("ade20k", ade_root)
    refs = source.list_samples()[:4]
    samples = [assemble_sample(source, ref, "train") for ref in refs]
    url = shard_url(f"{storage_root}/out", "ade20k", "train", 0)
    with ShardWriter(url) as writer:
        for sample in samples:
            writer.write(sample)
    members = list(iter_shard_members(url))
    assert all(SEG_MEMBER in m and "disp.npy" not in m and "mask.png" not in m for m in members)
    for orig, back in zip(samples, iter_shard(url)):
        np.testing.assert_array_equal(back.segmentation, orig.segmentation)
        assert back.disparity is None and back.meta == orig.meta

    small = resize_sample(samples[0], max_side=6)  # 8x12 -> 4x6: nearest keeps ids, never blends
    assert small.segmentation.shape == (4, 6) and small.rgb.shape == (4, 6, 3)
    np.testing.assert_array_equal(small.segmentation, resize_nearest(samples[0].segmentation, (4, 6)))
    assert set(np.unique(small.segmentation)) <= set(np.unique(samples[0].segmentation))


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # Exact 2x downscale: PIL's nearest takes the source pixel under each output pixel's centre,
    # i.e. index floor((i + 0.5) * 2) = 2 i + 1.
    h, w = size
    return labels[1::2, 1::2][:h, :w]


def test_shard_task_writes_segmentation_and_rejects(ade_root, storage_root):
    source = adapter("ade20k", ade_root)
    settings = IngestSettings(max_side=6, samples_per_shard=10)
    plan = make_plan(source, source.list_samples(), settings, samples_per_shard=10)
    records = {shard.split: write_shard(source, shard, f"{storage_root}/corpus", settings) for shard in plan.shards}
    assert records["train"].samples == 2
    assert records["val"].samples == 2 and len(records["val"].rejects) == 3
    reasons = " | ".join(reason for _, reason in records["val"].rejects)
    assert "annotation missing" in reasons and "above 150" in reasons and "but target is" in reasons
    verify_shard(records["val"].info)
    for sample in iter_shard(records["val"].url):
        assert sample.segmentation.shape == (4, 6) and sample.meta["original_size"] == [H, W]
