"""The `dpt` console script, run as a user would."""

from __future__ import annotations

import pytest

from tests.helpers.cli import dpt

COMMANDS = ["ingest", "train", "eval", "predict", "export", "compare", "pipeline", "shards", "tracking"]


def test_help_lists_every_stage():
    out = dpt("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert f"    {name}" in out.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_each_subcommand_has_help(name):
    out = dpt(name, "--help")
    assert out.returncode == 0 and f"usage: dpt {name}" in out.stdout


def test_demo_verify_ls_round_trip(storage_root):
    import os

    out = dpt("shards", "demo", "--out", storage_root, "--samples", "10", "--per-shard", "4", env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    directory = f"{storage_root.rstrip('/')}/demo/train"
    assert f"wrote 10 samples in 3 shards to {directory}" in out.stdout
    out = dpt("shards", "verify", directory, "--decode", env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout and "10 samples" in out.stdout
    out = dpt("shards", "ls", storage_root, env=dict(os.environ))
    assert out.returncode == 0 and directory in out.stdout


def test_verify_reports_a_corrupt_shard(tmp_path):
    assert dpt("shards", "demo", "--out", str(tmp_path), "--samples", "6", "--per-shard", "3").returncode == 0
    shard = tmp_path / "demo" / "train" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    out = dpt("shards", "verify", str(tmp_path / "demo" / "train"))
    assert out.returncode == 1
    assert f"FAILED shard {shard}: sha256" in out.stderr and "3 samples in shards that verify, 1 bad" in out.stdout


def test_clear_error_without_traceback(tmp_path):
    out = dpt("shards", "verify", str(tmp_path / "nowhere"))
    assert out.returncode == 1
    assert "dpt shards: error:" in out.stderr and "nowhere/manifest.parquet" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("name", ["ingest", "train", "eval", "predict", "export", "pipeline"])
def test_stage_without_required_options_shows_usage(name):
    out = dpt(name)
    assert out.returncode == 2 and f"usage: dpt {name}" in out.stderr and "required" in out.stderr


def test_reading_manifests_exits_cleanly_every_time(tmp_path):
    """pyarrow's threaded parquet reader once aborted the interpreter at exit in about 1 run in 3."""
    assert dpt("shards", "demo", "--out", str(tmp_path), "--samples", "2").returncode == 0
    codes = [dpt("shards", "ls", str(tmp_path)).returncode for _ in range(8)]
    assert codes == [0] * 8


def test_ingest_list_sources_names_ours_and_other_packages_sources(tmp_path):
    """`dpt ingest --help` points at --list-sources: it lists every source with a line, entry points included
    (a real installed distribution on PYTHONPATH), and needs no SOURCE, --root or --out."""
    import os
    import textwrap

    from ingest.sources import ENTRY_POINT_GROUP

    site = tmp_path / "site"
    (site / "dpt_listed_source").mkdir(parents=True)
    (site / "dpt_listed_source" / "__init__.py").write_text(textwrap.dedent('''
        from ingest.conversion import TargetKind
        from ingest.sources.base import SourceAdapter

        class ListedAdapter(SourceAdapter):
            """Listed: a source from another package.

            More text that the listing leaves out."""
            name = "listed"
            kind = TargetKind.INVERSE_DEPTH
    '''))
    dist = site / "dpt_listed_source-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dpt-listed-source\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nlisted = dpt_listed_source:ListedAdapter\n"
                                           "gone = dpt_listed_source.nowhere:Adapter\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    assert "--list-sources" in dpt("ingest", "--help").stdout
    out = dpt("ingest", "--list-sources", env=env)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert {"redweb", "diml", "tartanair", "folder", "ade20k", "listed", "gone"} <= set(lines)
    assert lines["redweb"] == ("redweb       ReDWeb V1: Imgs/*.jpg + RDs/*.png; target 255 - RD (inverse depth), "
                               "255 invalid.")
    assert lines["listed"] == "listed       Listed: a source from another package. (entry point dpt_listed_source)"
    assert lines["gone"].startswith("gone         BROKEN: entry point gone = dpt_listed_source.nowhere:Adapter")
    assert "cannot be loaded: ModuleNotFoundError" in lines["gone"]
    # every other use still needs SOURCE, --root and --out
    out = dpt("ingest", "redweb")
    assert out.returncode == 2 and "the following arguments are required: --root, --out" in out.stderr
