"""The configuration reference (docs/configuration.md) is generated from the config dataclasses and must match.

After changing a config dataclass, regenerate its tables with
``DPT_UPDATE_README=1 pytest tests/test_config_reference.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pipeline.config import reference_table
from pipeline.pipeline_config import PipelineConfig
from training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "docs" / "configuration.md"
TABLES = {"train": TrainConfig, "pipeline": PipelineConfig}


def section(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- config-reference:{name} -->\n)(.*?)(\n<!-- /config-reference -->)", re.S)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_readme_reference_matches_the_dataclasses(name):
    text = README.read_text()
    match = section(name).search(text)
    assert match, f"docs/configuration.md lacks the <!-- config-reference:{name} --> section"
    expected = reference_table(TABLES[name])
    if os.environ.get("DPT_UPDATE_README") == "1":
        README.write_text(section(name).sub(lambda m: m.group(1) + expected + m.group(3), text))
        return
    assert match.group(2) == expected, (
        f"docs/configuration.md's {name} configuration reference is out of date; run "
        "DPT_UPDATE_README=1 pytest tests/test_config_reference.py")


def test_every_shipped_config_loads():
    from pipeline.config import load_config

    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cls = PipelineConfig if path.name.startswith("pipeline_") else TrainConfig
        if "ade20k" in path.name or path.name.startswith("seg"):
            continue  # segmentation configs are checked by their own tests
        load_config(cls, path)
