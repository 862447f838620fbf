"""Models in MLflow against the REAL `mlflow server` fixture: the logged pyfunc, the Model Registry references in
`dpt predict` (models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH), `mlflow models serve`, and the model
a training run logs at its end."""

from __future__ import annotations

import base64
import json
import os
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.config import load_config
from tests.helpers.checkpoints import train_checkpoint
from tests.services import BIN, Server, free_port, http_ok
from training.config import TrainConfig

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def _tiny_model():
    from training.model import build_model

    torch.manual_seed(0)
    model = build_model("dpt_tiny")
    with torch.no_grad():
        model.head.predict.bias.fill_(1.0)  # outputs above the final ReLU: maps that are not flat
    return model


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two images of different sizes and aspect ratios (PNG and JPEG)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 255, (50, 30, 3), dtype=np.uint8)).save(root / "b.jpg")
    return root


@pytest.fixture(scope="module")
def logged(mlflow_server, tmp_path_factory):
    """A dpt_tiny checkpoint as `dpt train` writes it, logged by the end-of-run code (``tracking.log_final_model``)
    into a run of its own with a metric at the checkpoint's step and one before, registered under a fresh name."""
    from mlflow import MlflowClient

    from training import tracking

    checkpoint = train_checkpoint(str(tmp_path_factory.mktemp("run")), _tiny_model())
    name = f"dpt-tiny-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(mlflow_server)
    run_id = client.create_run(client.create_experiment(f"models-{name}")).info.run_id
    client.log_metric(run_id, "loss/loss", 0.7, step=1)
    client.log_metric(run_id, "loss/loss", 0.5, step=2)
    config = load_config(TrainConfig, QUICKSTART, [f"tracking.register_as={name}"])
    uri = tracking.log_final_model(config, mlflow_server, run_id, checkpoint, step=2)
    assert uri == f"models:/{name}/1"
    return {"name": name, "run_id": run_id, "checkpoint": checkpoint, "uri": uri}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh download cache for the references (``$DPT_CACHE``)."""
    monkeypatch.setenv("DPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _predict(images: Path, checkpoint: str, out: Path) -> dict[str, np.ndarray]:
    """`dpt predict --npy` of ``images`` with ``checkpoint``: ``{stem: disparity}``."""
    assert main(["predict", str(images), "--checkpoint", checkpoint, "--out", str(out), "--npy"]) == 0
    return {p.stem: np.load(p) for p in sorted(out.glob("*.npy"))}


@pytest.fixture(scope="module")
def expected(images, logged, tmp_path_factory) -> dict[str, np.ndarray]:
    """What `dpt predict --npy` writes with the checkpoint directory itself."""
    maps = _predict(images, logged["checkpoint"], tmp_path_factory.mktemp("expected"))
    assert sorted(maps) == ["a", "b"] and maps["a"].shape == (37, 53) and maps["a"].std() > 1e-4
    return maps


def _frame(images: Path):
    import pandas as pd

    return pd.DataFrame({"image": [(images / name).read_bytes() for name in ("a.png", "b.jpg")]})


def test_the_logged_model_loads_with_pyfunc_and_predicts_the_map_dpt_predict_writes(mlflow_tracking, logged, images,
                                                                                      expected):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.types import DataType

    from training.model import build_model, load_checkpoint

    model = mlflow.pyfunc.load_model(logged["uri"])
    inputs = model.metadata.get_input_schema()
    assert inputs.input_names() == ["image"] and inputs.input_types() == [DataType.binary]
    a, b = model.predict(_frame(images))
    assert a.dtype == np.float32 and a.shape == (37, 53) and b.shape == (50, 30)
    np.testing.assert_array_equal(a, expected["a"])
    np.testing.assert_array_equal(b, expected["b"])
    # The artifacts hold the checkpoint directory: this project's loader reads it unchanged.
    local = mlflow.artifacts.download_artifacts(f"{logged['uri']}/artifacts/checkpoint")
    assert sorted(os.listdir(local)) == ["meta.json", "model.safetensors"]
    load_checkpoint(build_model("dpt_tiny"), local)
    # Linked to its run, to the step it came from and to that step's metrics.
    client = MlflowClient(mlflow_tracking)
    version = client.get_model_version(logged["name"], "1")
    (output,) = client.get_run(logged["run_id"]).outputs.model_outputs
    assert version.source == f"models:/{output.model_id}" and output.step == 2
    linked = client.get_logged_model(output.model_id)
    assert linked.source_run_id == logged["run_id"]
    assert [(m.key, m.value, m.step) for m in linked.metrics] == [("loss/loss", 0.5, 2)]
    assert mlflow.models.Model.load(logged["uri"]).load_input_example() is not None


def test_a_registered_version_an_alias_and_a_run_path_resolve_in_dpt_predict(mlflow_tracking, logged, images,
                                                                           expected, cache, tmp_path):
    from mlflow import MlflowClient

    from training.model.checkpoint_ref import resolve_checkpoint

    MlflowClient(mlflow_tracking).set_registered_model_alias(logged["name"], "champion", "1")
    for i, ref in enumerate((f"models:/{logged['name']}/1", f"models:/{logged['name']}@champion",
                             f"runs:/{logged['run_id']}/model")):
        maps = _predict(images, ref, tmp_path / f"out{i}")
        assert sorted(maps) == ["a", "b"], ref
        for stem, disparity in maps.items():
            np.testing.assert_array_equal(disparity, expected[stem], err_msg=ref)
    # A version and the alias naming it are the same content: one download, kept, and found again.
    path = resolve_checkpoint(f"models:/{logged['name']}/1")
    assert resolve_checkpoint(f"models:/{logged['name']}@champion") == path
    assert sorted(os.listdir(path)) == ["meta.json", "model.safetensors"] and path.startswith(str(cache))
    assert resolve_checkpoint(logged["checkpoint"]) == logged["checkpoint"]  # a path is itself


@pytest.mark.parametrize("ref, says", [
    ("models:/no-such-model-dpt/1", "no registered model 'no-such-model-dpt'"),
    ("models:/{name}/9", "has no version 9 (its versions: 1)"),
    ("models:/{name}@nobody", "has no alias @nobody"),
    ("runs:/0123456789abcdef0123456789abcdef/model", "no run 0123456789abcdef0123456789abcdef"),
    ("runs:/{run}/no-such-path", "has no artifact 'no-such-path'"),
    ("models:/{name}", "not a model reference"),
])
def test_an_unknown_reference_is_one_line_naming_it(mlflow_tracking, logged, images, cache, tmp_path, capsys, ref,
                                                    says):
    ref = ref.format(name=logged["name"], run=logged["run_id"])
    assert main(["predict", str(images), "--checkpoint", ref, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dpt predict: error: {ref}: ") and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_server_is_one_line_naming_the_reference(images, cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert main(["predict", str(images), "--checkpoint", "models:/dpt/1", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dpt predict: error: models:/dpt/1: MLflow at http://127.0.0.1:") and err.count("\n") == 1
    assert "did not answer (connection refused)" in err, err


def test_a_fine_tuning_start_takes_a_reference_resolved_on_the_driver(mlflow_tracking, logged, cache):
    from training.tasks.init_from import check_init_from
    from training.train import absolute_local_paths

    ref = f"models:/{logged['name']}/1"
    config = load_config(TrainConfig, QUICKSTART, [f"task.init_from={ref}"])
    assert config.task.init_from == ref  # a reference, not a path made absolute
    check_init_from(ref)
    local = absolute_local_paths(config).task.init_from  # what the Ray workers get
    assert local.startswith(str(cache)) and os.path.isfile(os.path.join(local, "model.safetensors"))
    with pytest.raises(ValueError, match=r"^task\.init_from: models:/no-such-model-dpt/1: no registered model"):
        check_init_from("models:/no-such-model-dpt/1")


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_posted_image_with_the_map_dpt_predict_writes(mlflow_server, logged, images,
                                                                                    expected, tmp_path):
    port = free_port()
    # The venv's bin on PATH, as with `source .venv/bin/activate`: mlflow starts `uvicorn` by name.
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_server, PYTHONPATH=str(ROOT), MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_MODELS_WORKERS="1", PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", logged["uri"], "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    server = Server("mlflow models serve", cmd, env, tmp_path / "serve.log", cwd=tmp_path)
    try:
        server.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/ping"), timeout=180)
        body = {"dataframe_split": {"columns": ["image"], "data": [
            [base64.b64encode((images / name).read_bytes()).decode()] for name in ("a.png", "b.jpg")]}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            predictions = json.load(response)["predictions"]
    finally:
        server.stop()
    a, b = (np.asarray(p, dtype=np.float32) for p in predictions)
    np.testing.assert_array_equal(a, expected["a"])
    np.testing.assert_array_equal(b, expected["b"])


@pytest.mark.slow
def test_a_training_run_logs_its_final_model_linked_to_its_last_step_and_registers_it(ray_cluster, mlflow_tracking,
                                                                                     tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from tests.helpers.training_corpus import write_source
    from training.model import load_model
    from training.train import fit

    prefix = str(tmp_path / "corpus")
    write_source(prefix, "alpha", 4, per_shard=2)
    name = f"dpt-trained-{uuid.uuid4().hex[:8]}"
    config = load_config(TrainConfig, QUICKSTART, [
        f"data.shards.prefix={prefix}", "data.shards.sources=[alpha]", "data.loader.workers=0",
        "data.loader.batch_size=2", "data.geometric.size=32", "model.name=dpt_tiny",
        "model.overrides={timm_kwargs: {depth: 4, img_size: 32}}", "scaling.workers=1",
        f"storage.path={tmp_path / 'ckpt'}", "storage.name=logged", "schedule.steps=2", "schedule.log_every=1",
        f"tracking.experiment={name}", f"tracking.register_as={name}"])
    result = fit(config)
    assert result.model_uri == f"models:/{name}/1"
    client = MlflowClient(mlflow_tracking)
    version = client.get_model_version(name, "1")
    assert version.run_id == result.mlflow_run_id
    (output,) = client.get_run(result.mlflow_run_id).outputs.model_outputs
    assert version.source == f"models:/{output.model_id}" and output.step == 2
    linked = {m.key: m.step for m in client.get_logged_model(output.model_id).metrics}
    assert linked["loss/loss"] == 2
    # The model MLflow serves is the checkpoint the run ended with.
    rgb = np.random.default_rng(1).integers(0, 255, (40, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    import pandas as pd

    (served,) = mlflow.pyfunc.load_model(result.model_uri).predict(pd.DataFrame({"image": [(tmp_path / "x.png")
                                                                                           .read_bytes()]}))
    from training.model.inference import predict_images

    with result.checkpoint.as_directory() as directory:
        model = load_model(os.path.join(directory, "model.safetensors")).eval()
    np.testing.assert_array_equal(served, predict_images(model, [rgb], model.preprocess, batch_size=1)[0])
