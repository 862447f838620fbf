"""`dpt predict` and `dpt export` end to end on a tiny checkpoint the test writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from training.model import build_model, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("dpt_tiny")
    with torch.no_grad():
        model.head.predict.bias.fill_(1.0)  # keep outputs above the final ReLU so that maps are not flat
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, str(path), name="dpt_tiny")
    return path


def _images(root):
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 255, (50, 30, 3), dtype=np.uint8)).save(root / "sub" / "b.jpg")
    Image.fromarray(rng.integers(0, 255, (37, 53), dtype=np.uint8)).save(root / "sub" / "gray.png")
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "notes.txt").write_text("ignored: not an image suffix")


def test_predict_writes_maps_and_reports_unreadable(checkpoint, tmp_path, capsys):
    _images(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "in"), str(tmp_path / "missing.png"), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--batch-size", "2", "--device", "cpu", "--npy"])
    err = capsys.readouterr().err
    assert code == 1  # something was skipped
    assert "broken.jpg: unreadable image" in err and "missing.png" in err
    for stem, (h, w) in {"a": (37, 53), "sub/b": (50, 30), "sub/gray": (37, 53)}.items():
        gray = np.asarray(Image.open(out / f"{stem}.png"))
        assert gray.dtype == np.uint16 and gray.shape == (h, w)
        assert gray.min() == 0 and gray.max() == 65535  # per-image min-max scaling
        color = np.asarray(Image.open(out / f"{stem}.color.png"))
        assert color.shape == (h, w, 3) and color.dtype == np.uint8
        disparity = np.load(out / f"{stem}.npy")
        assert disparity.shape == (h, w) and disparity.dtype == np.float32 and (disparity >= 0).all()
        # the 16-bit PNG is the same map, scaled
        unit = (disparity - disparity.min()) / (disparity.max() - disparity.min())
        assert np.abs(unit * 65535 - gray.astype(np.float64)).max() <= 1.0
    assert not (out / "broken.png").exists()


def test_predict_same_result_in_any_batch(checkpoint, tmp_path):
    _images(tmp_path / "in")
    for batch in ("1", "3"):
        assert main(["predict", str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "sub" / "gray.png"),
                     "--checkpoint", str(checkpoint), "--out", str(tmp_path / batch), "--batch-size", batch,
                     "--npy"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "1" / "a.npy"), np.load(tmp_path / "3" / "a.npy"), rtol=1e-4,
                               atol=1e-5)


def test_prepare_keeps_aspect_and_multiple_of_32():
    from training.model.config import Preprocess
    from training.model.inference import prepare, target_size

    pre = Preprocess(size=384, multiple_of=32)
    assert target_size(480, 640, pre) == (288, 384)
    assert target_size(375, 1242, pre) == (128, 384)
    assert target_size(1000, 10, pre) == (384, 32)
    x = prepare(np.full((10, 20, 3), 255, np.uint8), pre)
    assert x.shape == (3, 192, 384) and torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5


def test_export_onnx_matches_pytorch(checkpoint, tmp_path):
    import onnxruntime

    from training.export_command import check_onnx
    from training.model import load_model

    out = tmp_path / "tiny.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    model = load_model(str(checkpoint)).eval()
    # sizes other than the export size: dynamic height, width and batch
    assert check_onnx(model, str(out), [(64, 64), (96, 32), (32, 128)], batch=3) < 1e-3
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert "dpt.preprocess" in session.get_modelmeta().custom_metadata_map


def test_predict_on_real_fixture_images(checkpoint, tmp_path, shared_fixtures):
    """Real files in their native formats: a KITTI PNG (375x1242) and an NYU raw PPM (480x640)."""
    kitti = shared_fixtures / "kitti_stereo_2015" / "training" / "image_2" / "000046_10.png"
    nyu = shared_fixtures / "nyu_depth_v2" / "raw" / "NYU_color.ppm"
    assert main(["predict", str(kitti), str(nyu), "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 0
    assert np.asarray(Image.open(tmp_path / "000046_10.png")).shape == (375, 1242)
    assert np.asarray(Image.open(tmp_path / "NYU_color.color.png")).shape == (480, 640, 3)
