"""HR-WSI adapter: <split>/imgs/*.jpg + gts/*.png disparity + valid_masks/*.png."""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from tests.helpers.adapter_tools import H, W, adapter, rgb, round_trip, write_files
from tests.helpers.images import encode


def gt(seed: int) -> np.ndarray:
    return (np.arange(H * W).reshape(H, W) + 10 * seed).astype(np.uint8)


def mask(seed: int) -> np.ndarray:
    m = np.full((H, W), 255, np.uint8)
    m[seed % H, :] = 0
    return m


@pytest.fixture
def hrwsi_root(storage_root):
    root = f"{storage_root}/hrwsi"
    files = {}
    for split, name, seed in [("train", "00012", 0), ("train", "00013", 1), ("val", "00001", 2)]:
        files[f"HR-WSI/{split}/imgs/{name}.jpg"] = encode(rgb(seed), "JPEG")
        files[f"HR-WSI/{split}/gts/{name}.png"] = encode(gt(seed))
        files[f"HR-WSI/{split}/valid_masks/{name}.png"] = encode(mask(seed))
        files[f"HR-WSI/{split}/instance_masks/{name}.png"] = encode(mask(seed))  # not read
    files["HR-WSI/val/imgs/00002.jpg"] = encode(rgb(3), "JPEG")
    files["HR-WSI/val/gts/00002.png"] = encode(gt(3))  # its valid mask is missing
    files["HR-WSI/val/imgs/00003.jpg"] = encode(rgb(4), "JPEG")
    files["HR-WSI/val/gts/00003.png"] = encode(gt(4))
    files["HR-WSI/val/valid_masks/00003.png"] = encode(mask(4)[:, :5])
    write_files(root, files)
    return root


def test_listing_and_conversion(hrwsi_root, storage_root):
    source = adapter("hrwsi", hrwsi_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == ["HR-WSI/train/00012", "HR-WSI/train/00013", "HR-WSI/val/00001",
                                    "HR-WSI/val/00002", "HR-WSI/val/00003"]
    assert [r.split for r in refs] == ["train", "train", "val", "val", "val"]
    assert len({r.group for r in refs}) == 5

    sample = assemble_sample(source, refs[1], "train")
    valid = mask(1) > 0
    np.testing.assert_array_equal(sample.mask, valid)
    np.testing.assert_array_equal(sample.disparity, np.where(valid, gt(1), 0).astype(np.float32))
    assert sample.meta["kind"] == "inverse_depth"
    round_trip(source, refs[:3], f"{storage_root}/out")


def test_bad_inputs_have_reasons(hrwsi_root):
    source = adapter("hrwsi", hrwsi_root)
    refs = source.list_samples()
    with pytest.raises(BadInput, match=r"valid_masks/00002.png: valid mask missing"):
        assemble_sample(source, refs[3], "train")
    with pytest.raises(BadInput, match=r"valid_masks/00003.png: mask is \[8, 5\] but disparity is \[8, 12\]"):
        assemble_sample(source, refs[4], "train")
