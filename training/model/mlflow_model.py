"""A trained DPT as an MLflow model (a pyfunc): ``mlflow.pyfunc.load_model(uri).predict(images)`` and
``mlflow models serve``.

Input (the signature's): a pandas DataFrame with one binary column ``image``, one encoded image file per row (PNG,
JPEG, ...: what ``dpt predict`` reads). Through ``mlflow models serve`` the JSON body carries the file's bytes
base64-encoded, which MLflow decodes because the column is binary::

    POST /invocations  {"dataframe_split": {"columns": ["image"], "data": [["<base64 of the file>"]]},
                        "params": {"size": 384}}

Param ``size`` (optional): the longer side fed to the model, as ``dpt predict --size``; default the variant's.
Output: one map per row, at that image's own size, the task's output (``Task.infer``, the one inference path of
``dpt predict``): float32 disparity ``[H, W]`` for depth (what ``dpt predict --npy`` writes), uint8 class ids
``[H, W]`` for segmentation, float32 depth in metres ``[H, W]`` for metric depth. In Python a list of numpy arrays
(rows may differ in size); served, ``{"predictions": [[[...], ...], ...]}``.

The model's one artifact ``checkpoint`` is the checkpoint directory as ``dpt train`` writes it (``model.safetensors``
and ``meta.json``, ``pipeline.checkpoint_layout``; not the optimiser state), so that this project's loaders read the
downloaded model unchanged (``training.model.checkpoint_ref`` hands ``models:/...`` to them as that directory).
The code is this project's (``training.model``), imported from the environment that loads the model (the model
holds only ``mlflow_code.py``, which builds :class:`DPTModel`: MLflow's models from code, no pickle): serve with
``--env-manager local`` in an environment where ``dpt`` is installed.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile

import mlflow.pyfunc
import numpy as np
import pandas as pd

from pipeline import storage
from pipeline.checkpoint_layout import META_FILE, MODEL_FILE

IMAGE_COLUMN = "image"
CHECKPOINT_ARTIFACT = "checkpoint"  # artifacts/<this>/ in the MLflow model: a checkpoint directory
MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run id>/model
CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlflow_code.py")  # builds DPTModel on load
# What the model imports; recorded in its requirements (serving with --env-manager local does not install them).
REQUIREMENTS = ("dpt-pipeline", "mlflow", "torch", "timm", "safetensors", "numpy", "pandas", "pillow")


def decode_image(data: bytes) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB of an encoded image file; ``ValueError`` when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(bytes(data))) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError("not an image (cannot identify image file)") from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"unreadable image ({exc})") from None


class DPTModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: loads the ``checkpoint`` artifact, predicts the task's map for each image (module docstring)."""

    def load_context(self, context) -> None:
        import torch

        from training.model import load_model
        from training.tasks import task_for_model

        device = "cuda" if torch.cuda.is_available() else "cpu"  # dpt predict's --device auto
        self.model = load_model(context.artifacts[CHECKPOINT_ARTIFACT]).eval().to(device)
        self.task = task_for_model(self.model.config)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[np.ndarray]:
        """``model_input``: DataFrame with column ``image`` (bytes); ``params``: ``{"size": int}``, optional.
        Returns a list of ``[H, W]`` arrays, one per row (see the module docstring)."""
        import dataclasses

        import torch

        from training.model.inference import prepare

        size = (params or {}).get("size")
        preprocess = self.model.preprocess if not size else dataclasses.replace(self.model.preprocess, size=int(size))
        out = []
        for row, data in enumerate(model_input[IMAGE_COLUMN]):
            try:
                rgb = decode_image(data)
            except ValueError as exc:
                raise ValueError(f"row {row} of column {IMAGE_COLUMN!r}: {exc}") from None
            # One image a forward pass, as dpt predict's default --batch-size 1: the same numbers.
            batch = torch.stack([prepare(rgb, preprocess)])
            with torch.no_grad():
                out.append(self.task.infer(self.model, batch, [rgb.shape[:2]])[0])
        return out


def example_image() -> bytes:
    """A small PNG (48 x 64 colour gradient): the model's input example."""
    from PIL import Image

    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def signature(output_dtype: np.dtype, size: int):
    """Input: the binary column ``image``; output: ``[H, W]`` maps of ``output_dtype``; param ``size``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(inputs=Schema([ColSpec(DataType.binary, IMAGE_COLUMN)]),
                          outputs=Schema([TensorSpec(np.dtype(output_dtype), (-1, -1, -1))]),
                          params=ParamSchema([ParamSpec("size", DataType.long, int(size))]))


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def copy_checkpoint(checkpoint: str, directory: str, options: storage.S3Options | None = None) -> str:
    """``model.safetensors`` and ``meta.json`` (when there) of the checkpoint directory ``checkpoint`` (local or
    s3://, with ``options``) into ``directory/checkpoint``; returns that folder."""
    target = os.path.join(directory, CHECKPOINT_ARTIFACT)
    os.makedirs(target)
    for name in (MODEL_FILE, META_FILE):
        url = storage.join(checkpoint, name)
        if name == META_FILE and not storage.exists(url, options):
            continue
        with storage.open_read(url, options) as src, open(os.path.join(target, name), "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    return target


def _example_output(checkpoint_dir: str) -> tuple[np.ndarray, int, str]:
    """(the model's output for :func:`example_image`, the variant's input size, the task's name): what the
    signature says, found by running the checkpoint once as the pyfunc will."""
    import torch

    from training.model import load_model
    from training.model.inference import prepare
    from training.tasks import task_for_model

    model = load_model(os.path.join(checkpoint_dir, MODEL_FILE)).eval()
    task = task_for_model(model.config)
    rgb = decode_image(example_image())
    output = task.infer(model, torch.stack([prepare(rgb, model.preprocess)]), [rgb.shape[:2]])[0]
    return output, model.preprocess.size, task.name


def log_model(checkpoint: str, run_id: str, step: int, register_as: str | None = None,
              options: storage.S3Options | None = None):
    """Log the checkpoint directory ``checkpoint`` (as ``dpt train`` prints it; local or s3://) as the MLflow 3
    logged model ``model`` of run ``run_id``, produced at ``step`` (MLflow links the run's metrics of that step to
    it), with its signature and input example; ``register_as``: also a new version of that registered model;
    ``options``: for an s3:// checkpoint. Uses MLflow's current tracking URI. Returns MLflow's ``ModelInfo``."""
    from mlflow import MlflowClient
    from mlflow.models import Model

    if not sys.stderr.isatty():  # MLflow's artifact bars, redrawn with \r, are lines of clutter in a log or pipe
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="dpt-mlflow-model-") as directory:
        local = copy_checkpoint(checkpoint, directory, options)
        output, size, task = _example_output(local)
        client = MlflowClient()
        run = client.get_run(run_id)
        # Created here, in the run's experiment: Model.log would put it in the default experiment when no run is
        # active (MLflow 3.17), where MLflow's runs:/<run id>/model does not find it.
        logged = client.create_logged_model(run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                            params=dict(run.data.params))
        return Model.log(
            artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, flavor_name="pyfunc.ModelFromCode",
            model_id=logged.model_id, run_id=run_id, step=step, python_model=CODE,
            artifacts={CHECKPOINT_ARTIFACT: local},
            signature=signature(output.dtype, size), input_example=pd.DataFrame({IMAGE_COLUMN: [example_image()]}),
            pip_requirements=_requirements(), metadata={"task": task, "checkpoint": checkpoint, "step": step},
            registered_model_name=register_as, await_registration_for=60)  # flavor_name: as mlflow.pyfunc.log_model
