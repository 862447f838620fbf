"""pipeline.config: typed dataclasses from YAML, strict checking, command-line overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from pipeline.config import ConfigError, from_dict, load_config, to_dict


@dataclasses.dataclass
class Optim:
    lr: float = 1e-4
    backbone_lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)


@dataclasses.dataclass
class Data:
    sources: list[str] = dataclasses.field(default_factory=lambda: ["redweb"])
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    size: int = 384
    val_root: str | None = None


@dataclasses.dataclass
class Run:
    name: str
    backbone: Literal["vitb16_384", "vitl16_384", "vitb_rn50_384"] = "vitl16_384"
    bf16: bool = True
    optim: Optim = dataclasses.field(default_factory=Optim)
    data: Data = dataclasses.field(default_factory=Data)

    def __post_init__(self):
        if self.data.size % 32:
            raise ValueError(f"data.size must be a multiple of 32, got {self.data.size}")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_load_nested_yaml(tmp_path):
    path = write(tmp_path, """
name: mix6
backbone: vitb16_384
optim: {lr: 3.0e-4, betas: [0.8, 0.99]}
data:
  sources: [redweb, hrwsi]
  weights: {redweb: 2, hrwsi: 1}
  val_root: s3://bucket/val
""")
    cfg = load_config(Run, path)
    assert cfg == Run("mix6", "vitb16_384", True, Optim(3e-4, 1e-5, (0.8, 0.99)),
                      Data(["redweb", "hrwsi"], {"redweb": 2.0, "hrwsi": 1.0}, 384, "s3://bucket/val"))
    assert isinstance(cfg.data.weights["redweb"], float)
    assert load_config(Run, None, ["name=x"]).optim == Optim()
    assert from_dict(Run, to_dict(cfg)) == cfg


def test_overrides(tmp_path):
    path = write(tmp_path, "name: a\n")
    cfg = load_config(Run, path, ["optim.lr=1e-3", "data.sources=[nyu, kitti]", "bf16=false",
                                  "data.weights.nyu=0.5", "name=b", "data.val_root=null"])
    assert cfg.optim.lr == 1e-3 and cfg.data.sources == ["nyu", "kitti"] and cfg.bf16 is False
    assert cfg.data.weights == {"nyu": 0.5} and cfg.name == "b" and cfg.data.val_root is None


@pytest.mark.parametrize("text, message", [
    ("name: a\noptim: {lrr: 1}\n", r"run.yaml: unknown key optim.lrr \(known: backbone_lr, betas, lr\)"),
    ("name: a\nextra: 1\n", "unknown key extra"),
    ("name: a\ndata: {size: big}\n", "run.yaml: data.size: expected an integer, got 'big'"),
    ("name: a\ndata: {size: 3.5}\n", "data.size: expected an integer"),
    ("name: a\nbf16: 'yes'\n", "bf16: expected true/false"),
    ("name: a\ndata: {sources: redweb}\n", "data.sources: expected a list"),
    ("name: a\ndata: {sources: [redweb, 3]}\n", r"data.sources\[1\]: expected a string"),
    ("name: a\noptim: {betas: [0.9]}\n", "optim.betas: expected 2 items"),
    ("name: a\nbackbone: resnet\n", "backbone: 'resnet' is not one of"),
    ("backbone: vitb16_384\n", "run.yaml: name: required key is missing"),
    ("name: a\ndata: {size: 100}\n", "data.size must be a multiple of 32"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("name: [unclosed\n", "not valid YAML"),
    ("name: a\noptim: 3\n", "optim: expected a mapping for Optim"),
])
def test_bad_config_names_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Run, write(tmp_path, text))


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", r"unknown key optim.lrr \(known under optim: backbone_lr, betas, lr\)"),
    ("nope=1", "unknown key nope"),
    ("bf16.x=1", "bf16 is not a section"),
    ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
    ("noequals", "must look like key.sub=value"),
])
def test_bad_override_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Run, None, ["name=a", override])


def test_unsafe_yaml_is_refused(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml: cannot read config"):
        load_config(Run, tmp_path / "nothere.yaml")
