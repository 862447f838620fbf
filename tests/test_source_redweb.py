"""ReDWeb adapter: Imgs/*.jpg + RDs/*.png, RD = negative disparity with 255 invalid."""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from tests.helpers.adapter_tools import H, W, adapter, rgb, round_trip, write_files
from tests.helpers.images import encode


def rd_map(seed: int) -> np.ndarray:
    rd = (np.arange(H * W).reshape(H, W) * 2 + seed).astype(np.uint8)
    rd[0, :3] = 255  # background / sky: invalid
    return rd


@pytest.fixture
def redweb_root(storage_root):
    root = f"{storage_root}/ReDWeb"
    write_files(root, {
        "ReDWeb_V1/Imgs/b_200.jpg": encode(rgb(1), "JPEG"),
        "ReDWeb_V1/RDs/b_200.png": encode(rd_map(1)),
        "ReDWeb_V1/Imgs/a_100.jpg": encode(rgb(0), "JPEG"),
        "ReDWeb_V1/RDs/a_100.png": encode(rd_map(0)),
        "ReDWeb_V1/Imgs/c_no_target.jpg": encode(rgb(2), "JPEG"),
        "ReDWeb_V1/RDs/d_no_image.png": encode(rd_map(3)),
        "ReDWeb_V1/RDs/e_colour.png": encode(rgb(4)),
        "ReDWeb_V1/Imgs/e_colour.jpg": encode(rgb(4), "JPEG"),
        "ReDWeb_V1/README.txt": b"not a sample",
    })
    return root


def test_listing_and_conversion(redweb_root, storage_root):
    source = adapter("redweb", redweb_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == [f"ReDWeb_V1/{n}" for n in ("a_100", "b_200", "c_no_target", "d_no_image", "e_colour")]
    assert [r.group for r in refs] == [r.id for r in refs]  # no scenes: each image is its own group
    assert refs[0].files == {"image": "ReDWeb_V1/Imgs/a_100.jpg", "target": "ReDWeb_V1/RDs/a_100.png"}

    sample = assemble_sample(source, refs[0], "train")
    rd = rd_map(0).astype(np.float32)
    valid = rd != 255
    np.testing.assert_array_equal(sample.mask, valid)
    np.testing.assert_array_equal(sample.disparity[valid], 255 - rd[valid])  # nearer (smaller RD) = larger
    assert (sample.disparity[~valid] == 0).all()
    assert sample.rgb_format == "jpg" and sample.meta["kind"] == "inverse_depth"
    round_trip(source, refs[:2], f"{storage_root}/out")


def test_bad_inputs_have_reasons(redweb_root):
    source = adapter("redweb", redweb_root)
    refs = {r.id.split("/")[-1]: r for r in source.list_samples()}
    with pytest.raises(BadInput, match=r"RDs/c_no_target.png: target missing"):
        source.read_target(refs["c_no_target"])
    with pytest.raises(BadInput, match=r"Imgs/d_no_image.jpg: file is missing"):
        assemble_sample(source, refs["d_no_image"], "train")
    with pytest.raises(BadInput, match=r"RDs/e_colour.png: expected a single-channel map"):
        assemble_sample(source, refs["e_colour"], "train")
