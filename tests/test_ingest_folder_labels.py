"""The folder adapter with ``--target semantic_labels``: label maps of any dataset, without writing code."""


import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.sources import get_source
from pipeline.shards import IGNORE_LABEL
from tests.helpers.adapter_tools import H, W, rgb, write_files
from tests.helpers.images import encode, palette_png


def test_label_maps_become_seg_png_with_ignore(tmp_path):
    labels = (np.arange(H * W).reshape(H, W) % 7).astype(np.uint8)
    labels[0] = 255  # the dataset's own "void"
    write_files(str(tmp_path), {"s1/img/0.jpg": encode(rgb(0), "JPEG"), "s1/lab/0.png": encode(labels),
                               "s1/img/1.jpg": encode(rgb(1), "JPEG"), "s1/lab/1.png": palette_png(labels),
                               "s1/img/2.jpg": encode(rgb(2), "JPEG"), "s1/lab/2.png": encode(labels * 0 + 254)})
    source = get_source("folder")(str(tmp_path), image_glob="*/img/*.jpg", target_glob="*/lab/*.png",
                                  target="semantic_labels", invalid_value=255, name="mine")
    refs = source.list_samples()
    for ref in refs[:2]:  # grey and palette PNG: the same ids
        sample = assemble_sample(source, ref, "train", min_valid_fraction=0.5)
        assert sample.disparity is None and sample.meta["kind"] == "semantic_labels"
        expected = labels.copy()
        expected[0] = IGNORE_LABEL
        np.testing.assert_array_equal(sample.segmentation, expected)
    assert (assemble_sample(source, refs[2], "train").segmentation == 254).all()


def test_label_options_are_checked(tmp_path):
    cls = get_source("folder")
    with pytest.raises(ValueError, match="--target-divisor must be 1"):
        cls(str(tmp_path), image_glob="*/a/*.jpg", target_glob="*/b/*.png", target="semantic_labels", divisor=1000)
    write_files(str(tmp_path), {"s/img/0.jpg": encode(rgb(0), "JPEG"),
                               "s/lab/0.png": encode(np.full((H, W), 255, np.uint8))})
    source = cls(str(tmp_path), image_glob="*/img/*.jpg", target_glob="*/lab/*.png", target="semantic_labels")
    with pytest.raises(BadInput, match=r"class ids outside 0..254"):  # 255 without --invalid-value 255
        assemble_sample(source, source.list_samples()[0], "train")
