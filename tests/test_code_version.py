"""pipeline.code_version: a submitted job (Ray's copy of the working directory, no .git) names its code."""

from __future__ import annotations

import shutil

from pipeline import code_version as cv
from tests.helpers.cli import dpt


def _copy_sources(dest):
    for name in (*cv.SOURCE_DIRS, *cv.SOURCE_FILES):
        src = cv.ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)


def test_source_hash_is_the_same_on_a_copy_without_git(tmp_path, monkeypatch):
    monkeypatch.delenv(cv.ENV_VAR, raising=False)
    _copy_sources(tmp_path)
    assert cv.source_sha256(tmp_path) == cv.source_sha256()
    assert cv.git_commit(tmp_path) is None
    assert cv.code_version(tmp_path) == f"sources-sha256:{cv.source_sha256()[:16]}"
    monkeypatch.setenv(cv.ENV_VAR, "abc123")  # a commit passed along at submission wins over the hash
    assert cv.code_version(tmp_path) == "abc123"


def test_source_hash_changes_with_any_source_byte(tmp_path):
    _copy_sources(tmp_path)
    before = cv.source_sha256(tmp_path)
    (tmp_path / "configs" / "quickstart.yaml").write_text((tmp_path / "configs" / "quickstart.yaml").read_text() + "\n")
    assert cv.source_sha256(tmp_path) != before
    (tmp_path / "pipeline" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "pipeline" / "__pycache__" / "x.py").write_text("ignored")
    changed = cv.source_sha256(tmp_path)
    assert cv.source_sha256(tmp_path) == changed


def test_dpt_version_prints_both():
    out = dpt("version", timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"sources-sha256 {cv.source_sha256()}" in out.stdout
    assert out.stdout.startswith("commit ")
