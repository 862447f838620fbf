"""Weights in and out: this project's safetensors checkpoints, official DPT/MiDaS v3 files, transformers.

This project's checkpoint is a safetensors file whose metadata carries ``format=dpt-pipeline``, the variant
``name`` and the full ``config`` (JSON), so that :func:`load_model` rebuilds the model from the file alone.
``dpt train`` writes it as ``MODEL_FILE`` inside each Ray Train checkpoint directory; wherever a checkpoint is
asked for, that directory (as ``dpt train`` prints it) and the file itself are both accepted
(:func:`resolve_checkpoint`), and :func:`inspect_checkpoint` tells from the first bytes what a file is.
Foreign files are read with ``torch.load(weights_only=True)`` (official ``.pt``) or safetensors (transformers
``model.safetensors``), renamed through the tables in ``key_maps`` (depth or segmentation, told apart by the
file's head keys) and loaded strictly: unknown keys (not in any
table) and missing keys (the model has them, the file does not) raise ``ValueError`` listing them.

Fine-tuning to another task or label set (:func:`load_trunk`) loads only the trunk, the backbone and the decoder
(reassemble, fusion): the output side (``HEAD_PREFIXES``: the head, the auxiliary head, the metric output
transform) keeps the model's own fresh weights unless the file's fits it exactly. A depth decoder and a
segmentation one differ only in the fusion units' batch norms (``fusion_batch_norm``, ``FUSION_NORM``): batch norms
the file lacks start fresh, and the convolution biases they replace are dropped; any other difference raises.

One exception to "missing": the metric output transform of a metric variant (``metric_output.scale``,
``metric_output.shift``). Our checkpoints of a metric model carry its fitted values; a file without them (the
official ``dpt_hybrid_nyu-2ce69ec7.pt`` / ``dpt_hybrid_kitti-cb926ef4.pt``, which keep the constants in code, or a
relative checkpoint that fine-tuning starts from) leaves the model's own, the variant's constants.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import struct
from collections.abc import Mapping

import torch
from torch import nn

from pipeline import storage
from pipeline.checkpoint_layout import MODEL_FILE, latest_checkpoint
from training.model.config import DPTConfig
from training.model.key_maps import RULES, convert, head_of

FORMAT = "dpt-pipeline"
# The metric output transform's buffers (training.model.metric_output), optional in a file.
METRIC_OUTPUT_KEYS = ("metric_output.scale", "metric_output.shift")
# The output side of a DPT, which its task owns (load_trunk leaves it fresh when the file's does not fit).
HEAD_PREFIXES = ("head.", "aux_head.", "metric_output.")
# Where a depth decoder and a segmentation one differ (DPTConfig.fusion_batch_norm): the units' batch norms, and the
# convolution biases that batch norm makes redundant (ResidualConvUnit).
FUSION_NORM = re.compile(r"fusion\.\d+\.(?:skip_unit|residual_unit)\.(?:bn[12]\..+|conv[12]\.bias)")
# The safetensors format caps its JSON header at 100 MB; a larger length means "not safetensors".
_MAX_HEADER = 100_000_000


def save_checkpoint(model: nn.Module, path: str, name: str = "", extra: Mapping[str, str] | None = None) -> None:
    """Write ``model``'s weights and config to ``path`` (local or s3://) atomically as safetensors."""
    from safetensors.torch import save

    config: DPTConfig = model.config
    metadata = {"format": FORMAT, "name": name, "config": json.dumps(config.to_dict())}
    metadata.update(extra or {})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    storage.write_bytes(path, save(tensors, metadata=metadata))


def read_safetensors_metadata(data: bytes, path: str = "<bytes>") -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (8-byte little-endian header length, then JSON)."""
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + length])
    except ValueError as exc:
        raise ValueError(f"{path}: not a safetensors file ({exc})") from None
    return header.get("__metadata__") or {}


def resolve_checkpoint(path: str) -> str:
    """The model file a checkpoint argument names (local or s3://): a file is itself; a checkpoint directory of
    ``dpt train`` (as it prints it) is its ``MODEL_FILE``; a training run's directory (``storage.path/name``) is
    its latest checkpoint's. Raises ``FileNotFoundError`` naming ``path``."""
    if storage.is_s3(path):
        if storage.exists(path):
            return path
        inside = storage.join(path, MODEL_FILE)
        if storage.exists(inside):
            return inside
    elif os.path.isfile(path):
        return path
    elif not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    elif os.path.isfile(os.path.join(path, MODEL_FILE)):
        return os.path.join(path, MODEL_FILE)
    latest = latest_checkpoint(path)
    if latest is not None:
        return storage.join(latest, MODEL_FILE)
    if storage.is_s3(path):
        raise FileNotFoundError(f"{path}: no such object, nor a checkpoint directory holding {MODEL_FILE}, nor a "
                                "training run's directory of checkpoint_* directories")
    raise FileNotFoundError(f"{path}: a directory without {MODEL_FILE} (neither a checkpoint directory of dpt train "
                            "nor a training run's directory of checkpoint_* directories)")


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`inspect_checkpoint` read: the model ``file``, its ``kind`` (``safetensors`` or ``torch``) and,
    for safetensors, the ``metadata`` of its header. ``own`` is true for this project's checkpoints."""

    file: str
    kind: str
    metadata: Mapping[str, str]

    @property
    def own(self) -> bool:
        return self.metadata.get("format") == FORMAT and "config" in self.metadata


def inspect_checkpoint(path: str) -> CheckpointInfo:
    """Resolve ``path`` (:func:`resolve_checkpoint`) and read only the start of the file: the safetensors
    header, or the magic bytes of a torch file (zip or pickle). Cheap on s3://, where it stops reading early.
    Raises ``FileNotFoundError`` or ``ValueError``, naming the file."""
    file = resolve_checkpoint(path)
    with storage.open_read(file) as stream:
        head = stream.read(9)  # safetensors: u64 little-endian header length, then the JSON header's "{"
        (length,) = struct.unpack("<Q", head[:8]) if len(head) == 9 else (0,)
        if head[8:9] == b"{" and 2 <= length <= _MAX_HEADER:
            header = head + stream.read(length - 1)
            return CheckpointInfo(file, "safetensors", read_safetensors_metadata(header, file))
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save's zip, or a legacy pickle
        return CheckpointInfo(file, "torch", {})
    raise ValueError(f"{file}: neither a safetensors file nor a torch file")


def check_checkpoint(path: str, variant: str | None = None) -> str:
    """What loading ``path`` would refuse, found without loading it: the ``variant`` name (``None``: the file must
    be one of this project's checkpoints, which carry their config), the file or checkpoint directory, its kind
    from its first bytes. Returns the model file. The ``ValueError`` names the option that ``dpt eval``,
    ``dpt predict`` and ``dpt export`` share for what is wrong (``--model``, ``--checkpoint``)."""
    from training.model.registry import get_config

    if variant is not None:
        try:
            get_config(variant)
        except ValueError as exc:
            raise ValueError(f"--model: {exc}") from None
    try:
        info = inspect_checkpoint(path)
    except (OSError, ValueError, RuntimeError) as exc:  # not there, not a checkpoint, storage unreachable
        raise ValueError(f"--checkpoint {exc}") from None
    if variant is None and not info.own:
        raise ValueError(f"--checkpoint {info.file}: not a {FORMAT} checkpoint (no model config in it); for official "
                         "DPT/MiDaS or transformers weights name the variant to build with --model")
    return info.file


def checkpoint_config(path: str, variant: str | None = None) -> DPTConfig:
    """The ``DPTConfig`` of the model that ``path`` loads into: the ``variant``'s, else the one this project's
    checkpoint carries (its header only). For paths that :func:`check_checkpoint` accepted."""
    from training.model.registry import get_config

    if variant is not None:
        return get_config(variant)
    return DPTConfig.from_dict(json.loads(inspect_checkpoint(path).metadata["config"]))


def checkpoint_head(path: str, variant: str | None = None) -> str:
    """The head kind (``DPTConfig.head``: ``depth``, ``segmentation``) of :func:`checkpoint_config`."""
    return checkpoint_config(path, variant).head


def _read_state(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state_dict, metadata)`` of a safetensors or torch pickle file (weights only); ``path`` may be a
    checkpoint directory (:func:`resolve_checkpoint`)."""
    path = resolve_checkpoint(path)
    data = storage.read_bytes(path)
    if path.endswith(".safetensors") or data[8:10] == b'{"':
        from safetensors.torch import load

        return load(data), read_safetensors_metadata(data, path)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler's errors are many types; name the file
        raise ValueError(f"{path}: cannot read as a safetensors or weights-only torch file: {exc}") from exc
    # Training checkpoints of the official code wrap the weights: {"model": ..., "optimizer": ...}.
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state, {}


def detect_format(state: Mapping[str, torch.Tensor]) -> str:
    """``official`` (DPT/MiDaS v3), ``transformers`` or ``native`` from the key names."""
    keys = list(state)
    if any(k.startswith(("pretrained.", "scratch.")) for k in keys):
        return "official"
    if any(k.startswith(("dpt.", "neck.")) for k in keys):
        return "transformers"
    return "native"


def to_native(state: Mapping[str, torch.Tensor], source: str = "<state dict>") -> dict[str, torch.Tensor]:
    """Rename a foreign state dict to this model's names; unknown keys raise listing them."""
    fmt = detect_format(state)
    if fmt == "native":
        return dict(state)
    converted, unknown = convert(dict(state), RULES[fmt, head_of(state)])
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} unknown key(s) in a {fmt} DPT state dict: {sorted(unknown)}")
    return converted


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "<state dict>") -> nn.Module:
    """Load a native, official or transformers state dict into ``model`` strictly (see module doc)."""
    native = to_native(state, source)
    expected = model.state_dict()
    for key in METRIC_OUTPUT_KEYS:  # not in the file: keep the model's transform (see module doc)
        if key in expected and key not in native:
            native[key] = expected[key]
    missing = sorted(set(expected) - set(native))
    unexpected = sorted(set(native) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source}: state dict does not fit {type(model).__name__}: "
                         f"missing keys {missing}; unexpected keys {unexpected}")
    wrong = [f"{k}: file {tuple(native[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if native[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{source}: shape mismatch for {len(wrong)} key(s): {wrong}")
    model.load_state_dict(native, strict=True)
    return model


def load_checkpoint(model: nn.Module, path: str) -> nn.Module:
    """Load ``path`` (a file or a checkpoint directory, local or s3://) into ``model``: this project's safetensors
    checkpoints, official DPT / MiDaS v3 ``.pt`` files and transformers ``DPTForDepthEstimation`` weights.
    Returns ``model``."""
    state, _ = _read_state(path)
    return load_state(model, state, path)


def load_trunk(model: nn.Module, path: str) -> list[str]:
    """Load the backbone and decoder of ``path`` (any format :func:`load_checkpoint` reads) into ``model`` for
    fine-tuning to another task or label set; the output side (``HEAD_PREFIXES``) is loaded too only when the
    file's has exactly the model's keys and shapes. Returns the model's keys left as they were (fresh), sorted.

    A trunk key one side has and the other lacks, or a shape that differs, raises ``ValueError`` listing them,
    except the fusion's normalisation (``FUSION_NORM``, see the module docstring)."""
    state, _ = _read_state(path)
    native = to_native(state, path)
    expected = model.state_dict()
    trunk = {k: v for k, v in native.items() if not k.startswith(HEAD_PREFIXES)}
    missing = sorted(k for k in expected if not k.startswith(HEAD_PREFIXES) and k not in trunk
                     and not FUSION_NORM.fullmatch(k))
    unexpected = sorted(k for k in trunk if k not in expected and not FUSION_NORM.fullmatch(k))
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
             for k, v in trunk.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: its backbone and decoder do not fit {type(model).__name__}: missing keys "
                         f"{missing}; unexpected keys {unexpected}; shape mismatches {wrong}")
    loaded = {k: v for k, v in trunk.items() if k in expected}
    head = {k: v for k, v in native.items() if k.startswith(HEAD_PREFIXES)}
    model_head = {k: v for k, v in expected.items() if k.startswith(HEAD_PREFIXES)}
    if head.keys() == model_head.keys() and all(v.shape == model_head[k].shape for k, v in head.items()):
        loaded.update(head)  # the same head and label set: nothing to swap
    model.load_state_dict({**expected, **loaded}, strict=True)
    return sorted(set(expected) - set(loaded))


def load_model(path: str, **overrides) -> nn.Module:
    """Rebuild a model from one of this project's checkpoints (its metadata) and load its weights."""
    from training.model.dpt import DPT

    state, metadata = _read_state(path)
    if not CheckpointInfo(path, "safetensors", metadata).own:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint (no model config in its safetensors metadata); "
                         "build the model with build_model(name) and use load_checkpoint(model, path)")
    config = DPTConfig.from_dict({**json.loads(metadata["config"]), **overrides})
    return load_state(DPT(config), state, path)
