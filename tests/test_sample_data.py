"""The quickstart's generated trees are read by the REAL adapters and benchmark readers, with exact values."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.benchmarks import make_reader
from ingest.assemble import assemble_sample
from ingest.sources import get_source
from pipeline import storage
from pipeline.demo import SKY_DEPTH, render_scene
from pipeline.sample_data import write_sample_data

SIZE = (24, 32)


@pytest.fixture
def trees(storage_root):
    return storage_root, write_sample_data(storage_root, per_source=5, per_benchmark=3, size=SIZE)


def test_training_sources_read_back_exactly(trees):
    _, roots = trees
    for name, scale in [("tartanair", 1.0), ("hrwsi", None), ("diml", 1.0)]:
        adapter = get_source(name)(roots[name])
        refs = adapter.list_samples()
        assert len(refs) == 5, name
        sample = assemble_sample(adapter, refs[0], split=refs[0].split or "train")
        assert sample.rgb.shape == (*SIZE, 3) and sample.mask.any()
        if name == "tartanair":  # float32 metres: disparity is exactly 1 / depth, sky valid and near zero
            ref = refs[1]  # ids are <env>/Easy/P000/<frame>; the frame number is the scene's seed
            sample = assemble_sample(adapter, ref, split="train")
            _, depth = render_scene(int(ref.id.rsplit("/", 1)[1]), *SIZE)
            assert int(ref.id.rsplit("/", 1)[1]) > 0
            np.testing.assert_allclose(sample.disparity, 1.0 / depth, rtol=1e-6)
            assert sample.mask.all() and sample.disparity.min() == pytest.approx(1 / SKY_DEPTH)
        if name == "diml":  # millimetres: within half a millimetre of the rendered depth, sky invalid
            depth_m = 1.0 / sample.disparity[sample.mask]
            assert depth_m.max() < 10.0 and not sample.mask.all()


def test_benchmarks_read_back(trees):
    root, _ = trees
    for name, rel_tol in [("tum", 1e-4), ("kitti", 2e-3)]:
        reader = make_reader(name, storage.join(root, "benchmarks"))
        ids = reader.list_samples()
        assert len(ids) == 3, name
        sample = reader.load(ids[0])
        assert sample.rgb.shape == (*SIZE, 3) and sample.valid.any()
        assert sample.depth[sample.valid].max() < (10.0 if name == "tum" else 80.0)


def test_nyu_labeled_set_reads_back_in_metres_for_the_benchmarks_and_the_source(storage_root, tmp_path, monkeypatch):
    monkeypatch.setenv("DPT_CACHE", str(tmp_path / "cache"))  # where an s3:// .mat is downloaded: not ~/.cache
    roots = write_sample_data(storage_root, per_source=1, per_benchmark=2, size=SIZE, benchmarks=["nyu"])
    assert set(roots) == {"tartanair", "hrwsi", "diml", "nyu"}  # no tum, kitti: not asked for
    for name in ("nyu", "nyu_metric"):
        reader = make_reader(name, storage.join(storage_root, "benchmarks"))
        assert reader.list_samples() == ["0002", "0004"], name  # splits.mat: the even frames are the test split
    sample = make_reader("nyu_metric", storage.join(storage_root, "benchmarks")).load("0002")
    rgb, depth = render_scene(1_000_000 + 10_000 + 1, *SIZE)  # frame 2: the benchmark seeds, offset 1
    np.testing.assert_array_equal(sample.rgb, rgb)
    np.testing.assert_array_equal(sample.valid, depth <= 10.0)  # the Kinect's range: the sky is no measurement
    np.testing.assert_array_equal(sample.depth[sample.valid], depth[depth <= 10.0])
    assert sample.valid.any() and not sample.valid.all()
    refs = get_source("nyu")(roots["nyu"]).list_samples()
    assert [(r.split, r.group) for r in refs] == [("train", "room_0000"), ("test", "room_0001"),
                                                  ("train", "room_0002"), ("test", "room_0000")]


def test_an_unknown_benchmark_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"^benchmarks: no sample data for \['eth3d'\]; choose from \['tum', 'kitti', "
                                         r"'nyu'\]$"):
        write_sample_data(str(tmp_path / "data"), benchmarks=["tum", "eth3d"])
    assert not (tmp_path / "data").exists()
