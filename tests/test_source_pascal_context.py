"""PASCAL-Context adapter on the VOC2010 layout: the split lists say which images are read and in which split,
labels shift to 0..58 with background ignored (or stay 0..59 with background a class: --pascal-classes 60), and a
value above 59 or a listed file that is missing is a reject naming the file (local and s3)."""

import argparse

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.command import build_adapter, source_lines
from ingest.conversion import TargetKind
from ingest.plan import IngestSettings, make_plan
from ingest.shard_task import write_shard
from pipeline.label_sets import PASCAL_CONTEXT_CLASSES, PASCAL_CONTEXT_NAMES, PASCAL_CONTEXT_PALETTE, voc_colormap
from pipeline.shards import IGNORE_LABEL, iter_shard
from tests.helpers.adapter_tools import H, W, adapter, rgb, write_files
from tests.helpers.images import encode, palette_png
from tests.helpers.label_maps import BASE


def labels(seed: int) -> np.ndarray:
    """A uint8 [H, W] Context label map: values 0..59, background (0) in the first column."""
    values = (np.arange(H * W).reshape(H, W) * 7 + seed * 13) % 60
    values[:, 0] = 0
    values[1, 1], values[2, 2] = 59, 1  # the last class and the first
    return values.astype(np.uint8)


@pytest.fixture
def context_root(storage_root):
    root = f"{storage_root}/context"
    files = {}
    for name, seed in [("2008_000002", 0), ("2008_000003", 1), ("2008_000007", 2), ("2008_000008", 3)]:
        files[f"{BASE}/JPEGImages/{name}.jpg"] = encode(rgb(seed), "JPEG")
        files[f"{BASE}/SegmentationClassContext/{name}.png"] = encode(labels(seed))
    files[f"{BASE}/SegmentationClassContext/2008_000008.png"] = palette_png(labels(3))  # indices, not colours
    bad = labels(4)
    bad[0, 3] = 60  # no Context class
    files[f"{BASE}/JPEGImages/2008_000009.jpg"] = encode(rgb(4), "JPEG")
    files[f"{BASE}/SegmentationClassContext/2008_000009.png"] = encode(bad)
    files[f"{BASE}/JPEGImages/2008_000010.jpg"] = encode(rgb(5), "JPEG")  # listed, its label map missing
    # In neither list (VOC2010's detection images): never read.
    files[f"{BASE}/JPEGImages/2007_000001.jpg"] = encode(rgb(6), "JPEG")
    files[f"{BASE}/SegmentationClassContext/2007_000001.png"] = encode(labels(6))
    lists = f"{BASE}/ImageSets/SegmentationContext"
    files[f"{lists}/train.txt"] = b"2008_000002\n2008_000003\n2008_000011\n"  # 2008_000011: listed, image missing
    files[f"{lists}/val.txt"] = b"2008_000007\n2008_000008\n2008_000009\n2008_000010\n\n"
    write_files(root, files)
    return root


def by_name(source) -> dict:
    return {ref.id.rsplit("/", 1)[-1]: ref for ref in source.list_samples()}


def test_the_split_lists_say_what_is_read_and_where(context_root):
    source = adapter("pascal_context", context_root)
    assert source.kind is TargetKind.SEMANTIC_LABELS and source.name == "pascal_context"
    refs = by_name(source)
    assert sorted(refs) == ["2008_000002", "2008_000003", "2008_000007", "2008_000008", "2008_000009",
                            "2008_000010", "2008_000011"]  # 2007_000001 is in no list
    assert {n: r.split for n, r in refs.items()} == {**dict.fromkeys(["2008_000002", "2008_000003", "2008_000011"],
                                                                     "train"),
                                                     **dict.fromkeys(["2008_000007", "2008_000008", "2008_000009",
                                                                      "2008_000010"], "val")}
    assert refs["2008_000002"].id == f"{BASE}/2008_000002" and refs["2008_000002"].group == "2008_000002"


def test_labels_shift_to_59_classes_and_background_is_ignored(context_root):
    source = adapter("pascal_context", context_root)
    refs = by_name(source)
    for name, seed in [("2008_000002", 0), ("2008_000007", 2), ("2008_000008", 3)]:  # 08: the palette PNG
        sample = assemble_sample(source, refs[name], refs[name].split)
        expected = labels(seed).astype(np.int64) - 1  # by hand: k -> k - 1, 0 -> 255
        expected[labels(seed) == 0] = IGNORE_LABEL
        np.testing.assert_array_equal(sample.segmentation, expected.astype(np.uint8))
        assert (sample.segmentation[:, 0] == IGNORE_LABEL).all()
        assert sample.segmentation[1, 1] == 58 and sample.segmentation[2, 2] == 0
        assert sample.meta["num_classes"] == 59 and sample.meta["kind"] == "semantic_labels"
        assert sample.rgb_format == "jpg" and sample.key.startswith("pascal_context-")


def test_bad_inputs_name_their_file(context_root):
    source = adapter("pascal_context", context_root)
    refs = by_name(source)
    with pytest.raises(BadInput, match=rf"SegmentationClassContext/2008_000009.png: 1 pixels hold values above 59 "
                                       r"\(max 60\)"):
        assemble_sample(source, refs["2008_000009"], "val")
    with pytest.raises(BadInput, match=r"SegmentationClassContext/2008_000010.png: label map missing"):
        assemble_sample(source, refs["2008_000010"], "val")
    with pytest.raises(BadInput, match=rf"JPEGImages/2008_000011.jpg: image missing \(listed in "
                                       rf"{BASE}/ImageSets/SegmentationContext/train.txt\)"):
        assemble_sample(source, refs["2008_000011"], "train")


def test_the_60_class_variant_keeps_background_as_class_0(context_root):
    args = argparse.Namespace(source="pascal_context", root=context_root, pascal_classes=60)
    source = build_adapter(args, None)
    assert source.name == "pascal_context_60" and source.classes == 60  # its own shard folder and keys
    ref = by_name(source)["2008_000003"]
    sample = assemble_sample(source, ref, "train")
    np.testing.assert_array_equal(sample.segmentation, labels(1))
    assert sample.meta["num_classes"] == 60 and sample.key.startswith("pascal_context_60-")
    with pytest.raises(ValueError, match="--pascal-classes must be 59 or 60"):
        type(source)(context_root, classes=21)
    with pytest.raises(ValueError, match=r"^--pascal-classes only apply to source pascal_context, not 'ade20k'$"):
        build_adapter(argparse.Namespace(source="ade20k", root=context_root, pascal_classes=60), None)
    with pytest.raises(ValueError, match=r"^--image-glob only apply to source folder, not 'pascal_context'$"):
        build_adapter(argparse.Namespace(source="pascal_context", root=context_root, image_glob="*.jpg"), None)


def test_every_listed_input_is_written_or_rejected(context_root, storage_root):
    source = adapter("pascal_context", context_root)
    settings = IngestSettings(samples_per_shard=10)
    plan = make_plan(source, source.list_samples(), settings, samples_per_shard=10)
    records = {shard.split: write_shard(source, shard, f"{storage_root}/corpus", settings) for shard in plan.shards}
    assert (records["train"].samples, len(records["train"].rejects)) == (2, 1)
    assert (records["val"].samples, len(records["val"].rejects)) == (2, 2)
    reasons = sorted(reason for record in records.values() for _, reason in record.rejects)
    assert len(reasons) == 3 and all(len(r.splitlines()) == 1 for r in reasons)
    assert any("2008_000009.png: 1 pixels hold values above 59" in r for r in reasons)
    assert any("2008_000010.png: label map missing" in r for r in reasons)
    assert any("2008_000011.jpg: image missing" in r for r in reasons)
    written = [s for record in records.values() for s in iter_shard(record.url)]
    assert sorted(s.meta["id"].rsplit("/", 1)[-1] for s in written) == ["2008_000002", "2008_000003",
                                                                          "2008_000007", "2008_000008"]
    assert all(s.segmentation.max() < PASCAL_CONTEXT_CLASSES or s.segmentation.max() == IGNORE_LABEL
               for s in written)


def test_lists_are_required_and_the_source_is_listed(tmp_path):
    write_files(str(tmp_path), {f"{BASE}/JPEGImages/a.jpg": encode(rgb(), "JPEG"),
                               f"{BASE}/SegmentationClassContext/a.png": encode(labels(0))})
    with pytest.raises(ValueError, match="holds SegmentationClassContext label maps but no ImageSets/"
                                         "SegmentationContext/train.txt or val.txt"):
        adapter("pascal_context", str(tmp_path)).list_samples()
    lines = {line.split()[0]: line for line in source_lines()}
    assert lines["pascal_context"].startswith("pascal_context PASCAL-Context on VOC2010: JPEGImages/*.jpg")
    # The label set: 59 names in label order, each its own colour (the VOC colour of its label value).
    assert len(PASCAL_CONTEXT_NAMES) == 59 and PASCAL_CONTEXT_NAMES[0] == "aeroplane"
    assert PASCAL_CONTEXT_NAMES[-1] == "wood" and list(PASCAL_CONTEXT_NAMES) == sorted(PASCAL_CONTEXT_NAMES)
    assert PASCAL_CONTEXT_PALETTE.shape == (59, 3) and len({tuple(c) for c in PASCAL_CONTEXT_PALETTE}) == 59
    assert tuple(PASCAL_CONTEXT_PALETTE[0]) == (128, 0, 0) and tuple(voc_colormap()[0]) == (0, 0, 0)
