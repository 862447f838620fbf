"""TartanAir adapter: <env>/<Easy|Hard>/P###/image_left/*_left.png + depth_left/*_left_depth.npy (metres)."""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from tests.helpers.adapter_tools import H, W, adapter, rgb, round_trip, write_files
from tests.helpers.images import encode, npy

SKY = 10000.0  # TartanAir renders the sky thousands of metres away


def depth(seed: int) -> np.ndarray:
    d = np.linspace(1.0, 30.0, H * W, dtype=np.float32).reshape(H, W) + seed
    d[:2] = SKY
    return d


@pytest.fixture
def tartanair_root(storage_root):
    root = f"{storage_root}/tartanair"
    files = {}
    for env, level, traj, frame, seed in [("abandonedfactory", "Easy", "P000", "000000", 0),
                                          ("abandonedfactory", "Hard", "P001", "000000", 1),
                                          ("amusement", "Easy", "P008", "000017", 2)]:
        base = f"{env}/{level}/{traj}"
        files[f"{base}/image_left/{frame}_left.png"] = encode(rgb(seed))
        files[f"{base}/depth_left/{frame}_left_depth.npy"] = npy(depth(seed))
        files[f"{base}/image_right/{frame}_right.png"] = encode(rgb(seed))  # not read
    files["amusement/Easy/P008/image_left/000018_left.png"] = encode(rgb(4))
    files["amusement/Easy/P008/depth_left/000018_left_depth.npy"] = npy(depth(4)[:, :-1])  # size mismatch
    files["amusement/Easy/P008/image_left/000019_left.png"] = encode(rgb(5))
    files["amusement/Easy/P008/depth_left/000019_left_depth.npy"] = npy(depth(5).astype(object))  # pickled
    write_files(root, files)
    return root


def test_listing_and_sky_stays_valid(tartanair_root, storage_root):
    source = adapter("tartanair", tartanair_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == ["abandonedfactory/Easy/P000/000000", "abandonedfactory/Hard/P001/000000",
                                    "amusement/Easy/P008/000017", "amusement/Easy/P008/000018",
                                    "amusement/Easy/P008/000019"]
    assert [r.group for r in refs] == ["abandonedfactory"] * 2 + ["amusement"] * 3

    sample = assemble_sample(source, refs[2], "train")
    d = depth(2).astype(np.float64)
    assert sample.mask.all()  # the sky is valid ...
    np.testing.assert_allclose(sample.disparity, 1 / d, rtol=1e-6)
    assert np.allclose(sample.disparity[:2], 1e-4) and (sample.disparity[:2] > 0).all()  # ... near-zero disparity
    assert sample.meta["fx"] == 320.0 and sample.meta["baseline_m"] == 0.25
    round_trip(source, refs[:3], f"{storage_root}/out")


def test_bad_inputs_have_reasons(tartanair_root):
    source = adapter("tartanair", tartanair_root)
    refs = source.list_samples()
    with pytest.raises(BadInput, match=r"image is \[8, 12\] but target is \[8, 11\]"):
        assemble_sample(source, refs[3], "train")
    with pytest.raises(BadInput, match=r"000019_left_depth.npy: unreadable or truncated .npy"):
        assemble_sample(source, refs[4], "train")
