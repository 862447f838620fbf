"""`dpt predict` and `dpt export` end to end on a tiny checkpoint the test writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from tests.helpers.checkpoints import train_checkpoint
from tests.helpers.cli import run_dpt
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
    code = main(["predict", str(tmp_path / "in"), str(tmp_path / "in" / "notes.txt"), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--batch-size", "2", "--device", "cpu", "--npy"])
    captured = capsys.readouterr()
    assert code == 1  # something was skipped
    # the file and the reason, not PIL's message with the in-memory buffer's repr
    assert f"skipped {tmp_path / 'in' / 'broken.jpg'}: not an image (cannot identify image file)\n" in captured.err
    assert f"skipped {tmp_path / 'in' / 'notes.txt'}: not an image (cannot identify image file)\n" in captured.err
    assert "BytesIO" not in captured.err
    assert captured.out.strip().endswith(f"wrote 3 of 5 images to {out}")
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


def test_predict_journey_with_the_checkpoint_directory_dpt_train_prints(tmp_path):
    """`dpt predict` as a user runs it, on the directory `dpt train` ends with: one unreadable input is named with
    its reason and the count says what was written; when nothing could be read, nothing is claimed or created."""
    directory = train_checkpoint(str(tmp_path / "train"))
    inputs = tmp_path / "in"
    _images(inputs)
    out = run_dpt(tmp_path / "cwd", "predict", str(inputs / "notes.txt"), str(inputs / "a.png"),
                  "--checkpoint", directory, "--out", "maps")
    assert out.code == 1
    assert out.stderr.splitlines()[-1] == f"skipped {inputs / 'notes.txt'}: not an image (cannot identify image file)"
    assert out.stdout.splitlines()[-1] == "wrote 1 of 2 images to maps"
    assert sorted(p.name for p in (tmp_path / "cwd" / "maps").iterdir()) == ["a.color.png", "a.png"]

    out = run_dpt(tmp_path / "cwd2", "predict", str(inputs / "notes.txt"), "--checkpoint", directory, "--out", "maps")
    assert out.code == 1 and out.stdout == ""
    assert out.stderr.splitlines()[-2:] == [
        f"skipped {inputs / 'notes.txt'}: not an image (cannot identify image file)",
        "nothing written: none of the 1 image(s) could be read"]
    assert out.created == []  # no maps/ folder for a claim that was never true


@pytest.mark.parametrize("args, line", [
    (["{in}/missing.png"], "IMAGE_OR_DIR {in}/missing.png: no such file or directory"),
    (["{in}/sub", "{in}/empty"], "IMAGE_OR_DIR {in}/empty: a directory without images"),
    (["{in}/sub", "--checkpoint", "{in}/a.png"],
     "--checkpoint {in}/a.png: neither a safetensors file nor a torch file"),
    (["{in}/sub", "--checkpoint", "{in}"], "--checkpoint {in}: a directory without model.safetensors (neither a checkpoint "
                                           "directory of dpt train nor a training run's directory of checkpoint_* "
                                           "directories)"),
    (["{in}/sub", "--out", "{in}/a.png/maps"], "--out {in}/a.png/maps: {in}/a.png is a file, not a directory"),
    (["{in}/sub", "--colormap", "nope"], "--colormap 'nope': not a matplotlib colormap (e.g. inferno, magma, viridis)"),
    (["{in}/sub", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
])
def test_predict_checks_its_inputs_before_loading_the_model(checkpoint, tmp_path, args, line):
    inputs = tmp_path / "in"
    _images(inputs)
    (inputs / "empty").mkdir()
    argv = [a.replace("{in}", str(inputs)) for a in args]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(checkpoint)]
    if "--out" not in argv:
        argv += ["--out", "maps"]
    out = run_dpt(tmp_path / "cwd", "predict", *argv)
    assert out.code == 1
    assert out.stderr == f"dpt predict: error: {line.replace('{in}', str(inputs))}\n"
    assert out.created == []
    assert sorted(p.name for p in inputs.iterdir()) == ["a.png", "broken.jpg", "empty", "notes.txt", "sub"]


def test_predict_same_result_in_any_batch(checkpoint, tmp_path):
    _images(tmp_path / "in")
    for batch in ("1", "3"):
        assert main(["predict", str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "sub" / "gray.png"),
                     "--checkpoint", str(checkpoint), "--out", str(tmp_path / batch), "--batch-size", batch,
                     "--npy"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "1" / "a.npy"), np.load(tmp_path / "3" / "a.npy"), rtol=1e-4,
                               atol=1e-5)


def test_predict_and_eval_give_the_same_map(checkpoint, tmp_path):
    """One inference path: the disparity `dpt predict --npy` writes for an image is the map that `dpt eval`'s
    workers (``EvalWorker`` with the ``CheckpointLoader`` it builds) score for the same image. DIW's picture holds
    that map unaligned and, for an image this small, at full size."""
    from evaluation.job import EvalWorker
    from evaluation.model_loading import CheckpointLoader
    from tests.helpers import eval_data

    root = str(tmp_path / "benchmarks")
    (image_id,) = eval_data.write_diw(root, frames=1)
    assert main(["predict", f"{root}/diw/DIW_test/{image_id}", "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "maps"), "--npy", "--device", "cpu"]) == 0
    predicted = np.load(tmp_path / "maps" / f"{image_id.removesuffix('.thumb')}.npy")
    worker = EvalWorker(CheckpointLoader(str(checkpoint)), batch_size=1, threads=torch.get_num_threads())
    result = worker.run("diw", root, [image_id], [image_id])
    assert result.error is None, result.error
    evaluated = result.pictures[0].pred
    assert evaluated.shape == predicted.shape == (30, 40) and predicted.std() > 1e-3  # not a flat map
    np.testing.assert_allclose(evaluated, predicted, rtol=0, atol=1e-5)


def test_prepare_keeps_aspect_and_multiple_of_32():
    from training.model.config import Preprocess
    from training.model.inference import prepare, target_size

    pre = Preprocess(size=384, multiple_of=32)
    assert target_size(480, 640, pre) == (288, 384)
    assert target_size(375, 1242, pre) == (128, 384)
    assert target_size(1000, 10, pre) == (384, 32)
    x = prepare(np.full((10, 20, 3), 255, np.uint8), pre)
    assert x.shape == (3, 192, 384) and torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5


def test_predict_refuses_a_model_that_returns_no_disparity_map():
    from training.model.inference import predict

    two_channels = torch.nn.Conv2d(3, 2, 1)  # class logits, say, not [B, 1, h, w] disparity
    with pytest.raises(RuntimeError, match=r"model returned \(1, 2, 32, 64\) .* expected \[B, 1, H, W\] disparity"):
        predict(two_channels, torch.zeros(1, 3, 32, 64), [(10, 20)])


def test_predict_and_export_to_a_bucket_that_is_not_there(checkpoint, tmp_path, s3_env, capsys):
    _images(tmp_path / "in")
    for command, out in (("predict", "s3://no-such-bucket-dpt/maps"), ("export", "s3://no-such-bucket-dpt/m.onnx")):
        argv = [str(tmp_path / "in" / "a.png")] if command == "predict" else []
        assert main([command, *argv, "--checkpoint", str(checkpoint), "--out", out]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"dpt {command}: error: --out {out}: cannot be written "
                              "(cannot list s3://no-such-bucket-dpt")
        assert "NoSuchBucket" in err and s3_env["AWS_SECRET_ACCESS_KEY"] not in err and len(err.splitlines()) == 1


def test_export_onnx_matches_pytorch(checkpoint, tmp_path):
    import onnxruntime

    from training.export_command import check_onnx
    from training.model import load_model

    out = tmp_path / "tiny.onnx"
    model = load_model(str(checkpoint)).eval()
    directory = train_checkpoint(str(tmp_path / "train"), model)  # the directory `dpt train` prints is accepted
    assert main(["export", "--checkpoint", directory, "--format", "onnx", "--out", str(out)]) == 0
    # sizes other than the export size: dynamic height, width and batch
    assert check_onnx(model, str(out), [(64, 64), (96, 32), (32, 128)], batch=3) < 1e-3
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert "dpt.preprocess" in metadata
    assert json.loads(metadata["dpt.resize_back"]) == {"mode": "bicubic", "align_corners": False, "min": 0.0}


@pytest.mark.parametrize("args, line", [
    (["--checkpoint", "{tmp}/nowhere"], "--checkpoint {tmp}/nowhere: no such file or directory"),
    (["--out", "{tmp}"], "--out {tmp}: is a directory; give the file to write"),
    (["--height", "100"], "--height must be a positive multiple of 32, got 100"),
    (["--model", "dpt_nope"], "--model: unknown DPT model 'dpt_nope'; known: "),
])
def test_export_checks_its_inputs_before_loading_the_model(checkpoint, tmp_path, capsys, monkeypatch, args, line):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    argv += [] if "--checkpoint" in argv else ["--checkpoint", str(checkpoint)]
    argv += [] if "--out" in argv else ["--out", str(tmp_path / "out" / "model.onnx")]
    monkeypatch.chdir(tmp_path)
    assert main(["export", *argv]) == 1
    assert capsys.readouterr().err.startswith(f"dpt export: error: {line.replace('{tmp}', str(tmp_path))}")
    assert list(tmp_path.iterdir()) == []


def test_predict_on_real_fixture_images(checkpoint, tmp_path, shared_fixtures):
    """Real files in their native formats: a KITTI PNG (375x1242) and an NYU raw PPM (480x640)."""
    kitti = shared_fixtures / "kitti_stereo_2015" / "training" / "image_2" / "000046_10.png"
    nyu = shared_fixtures / "nyu_depth_v2" / "raw" / "NYU_color.ppm"
    assert main(["predict", str(kitti), str(nyu), "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 0
    assert np.asarray(Image.open(tmp_path / "000046_10.png")).shape == (375, 1242)
    assert np.asarray(Image.open(tmp_path / "NYU_color.color.png")).shape == (480, 640, 3)


def test_predict_on_a_metric_checkpoint_writes_metres(tmp_path, capsys):
    """`dpt predict` of a metric model (issue 17): depth in metres as .npy, the same in millimetres as a 16-bit
    PNG, and the colour picture with its bar; the .npy is the one inference path's output for the image."""
    from training.model.inference import predict_images
    from training.tasks.metric_depth import png_to_metres

    torch.manual_seed(0)
    model = build_model("dpt_tiny", metric_output=(2.5, 0.015))  # f ~ 0.05 -> about 6-10 m
    path = tmp_path / "metric.safetensors"
    save_checkpoint(model, str(path), name="dpt_tiny")
    rgb = np.random.default_rng(3).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(rgb).save(tmp_path / "in" / "a.png")
    code = main(["predict", str(tmp_path / "in"), "--checkpoint", str(path), "--out", str(tmp_path / "out"),
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    metres = np.load(tmp_path / "out" / "a.npy")
    assert metres.shape == (40, 56) and metres.dtype == np.float32
    assert 1.0 < float(np.median(metres)) < 65.0  # metres from the transform, not a disparity map
    [expected] = predict_images(model.eval(), [rgb], model.preprocess)
    np.testing.assert_allclose(metres, expected, rtol=1e-5)
    back = png_to_metres((tmp_path / "out" / "a.png").read_bytes())
    np.testing.assert_allclose(back, metres, atol=0.5e-3 + 1e-6)  # millimetres
    color = np.asarray(Image.open(tmp_path / "out" / "a.color.png"))
    assert color.ndim == 3 and color.shape[1] > color.shape[0]  # the picture and its bar in metres beside it
