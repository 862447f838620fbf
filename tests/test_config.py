"""pipeline.config: typed dataclasses from YAML, strict checking, command-line overrides."""

from __future__ import annotations

import dataclasses
import re
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
class Phase:
    steps: int
    sources: list[str]


@dataclasses.dataclass
class Run:
    name: str
    backbone: Literal["vitb16_384", "vitl16_384", "vitb_rn50_384"] = "vitl16_384"
    bf16: bool = True
    optim: Optim = dataclasses.field(default_factory=Optim)
    data: Data = dataclasses.field(default_factory=Data)
    phases: list[Phase] = dataclasses.field(default_factory=list)

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
    ("optim.lr=fast", "^override optim.lr=fast: expected a number, got 'fast'$"),
    ("noequals", "must look like key.sub=value"),
])
def test_bad_override_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Run, None, ["name=a", override])


@pytest.mark.parametrize("override, message", [
    ("optim.lr=abc", "override optim.lr=abc: expected a number, got 'abc'"),
    ("data.sources=[nyu, 3]", r"override data.sources=\[nyu, 3\]: data.sources\[1\]: expected a string, got int 3"),
    ("data.weights.nyu=heavy", "override data.weights.nyu=heavy: expected a number, got 'heavy'"),
    ("optim.betas=[0.9]", r"override optim.betas=\[0.9\]: expected 2 items, got 1"),
    ("optim={lrr: 1}", r"override optim={lrr: 1}: unknown key optim.lrr \(known: backbone_lr, betas, lr\)"),
    ("optim=3", "override optim=3: expected a mapping for Optim, got 3"),
    ("phases=[{steps: x, sources: [a]}]", r"override phases=.*: phases\[0\].steps: expected an integer, got 'x'"),
    ("phases=[{steps: 1}]", r"override phases=.*: phases\[0\].sources: required key is missing"),
    ("phases.steps=3", r"override phases.steps=3: phases is a list; set it whole \(phases=\[...\]\)"),
    ("optim.lrr=1", r"override optim.lrr=1: unknown key optim.lrr \(known under optim: backbone_lr, betas, lr\)"),
    # a section's own check where the file and the override meet names both
    ("data.size=100", "{file} with override data.size=100: data.size must be a multiple of 32, got 100"),
])
def test_a_bad_override_is_blamed_on_the_command_line_not_the_file(tmp_path, override, message):
    path = write(tmp_path, "name: a\noptim: {lr: 1e-3}\ndata: {sources: [redweb], weights: {redweb: 1.0}}\n")
    with pytest.raises(ConfigError, match=f"^{message}$".replace("{file}", re.escape(str(path)))):
        load_config(Run, path, [override])


def test_the_file_is_blamed_for_its_own_errors_whatever_the_overrides(tmp_path):
    path = write(tmp_path, "name: a\noptim: {lr: abc}\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: optim.lr: expected a number, got 'abc'$"):
        load_config(Run, path, ["optim.backbone_lr=1e-6", "data.size=64"])
    # an override that replaces the bad value makes the file load; one that replaces a whole section after a
    # narrower one is the one blamed for what is inside it
    assert load_config(Run, path, ["optim.lr=1e-5"]).optim.lr == 1e-5
    with pytest.raises(ConfigError, match=r"^override optim=\{lr: x\}: optim.lr: expected a number"):
        load_config(Run, path, ["optim.lr=1e-5", "optim={lr: x}"])
    with pytest.raises(ConfigError, match="^override optim.lr=y: expected a number"):
        load_config(Run, path, ["optim={lr: 1e-5}", "optim.lr=y"])


def test_dpt_train_blames_a_bad_override_on_the_command_line(tmp_path):
    """The user journey: the real `dpt train` with the quickstart config and a mistyped value."""
    from tests.helpers.cli import dpt

    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    out = dpt("train", "--config", str(config), "optim.lr_decoder=abc", cwd=tmp_path, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip() == "dpt train: error: override optim.lr_decoder=abc: expected a number, got 'abc'"
    assert list(tmp_path.iterdir()) == []  # no runs/, no mlflow.db


def test_unsafe_yaml_is_refused(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml: cannot read config"):
        load_config(Run, tmp_path / "nothere.yaml")
