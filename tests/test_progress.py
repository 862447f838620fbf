"""Progress on the console (pipeline.progress): a live bar on a terminal, whole lines when redirected, and
result lines never glued onto a bar."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from pipeline.progress import LineProgress, progress

ROOT = Path(__file__).resolve().parents[1]

# What evaluation/job.py does: a bar, and a result printed on stdout while it is open.
SCRIPT = r"""
import sys
from pipeline.progress import printing_beside, progress

with progress(total=4, desc="evaluating", unit="img") as bar:
    bar.update(2)
    bar.set_postfix_str("tum done")
    with printing_beside(bar):
        print("TUM RGB-D      δ>1.25 (%)    52.0672")
    bar.update(2)
    with printing_beside(bar):
        print("KITTI          δ>1.25 (%)    38.0765")
print("MLflow run abc: 2 of 2 benchmarks scored")
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


def test_redirected_output_has_every_result_on_its_own_line():
    # stdout and stderr into one file, as `dpt eval ... > log 2>&1` does
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=60).stdout
    assert "\r" not in out
    assert out.splitlines() == [
        "TUM RGB-D      δ>1.25 (%)    52.0672",
        "KITTI          δ>1.25 (%)    38.0765",
        out.splitlines()[2],
        "MLflow run abc: 2 of 2 benchmarks scored",
    ]
    assert re.fullmatch(r"evaluating: 100% 4/4 img in \d+\.\d s, \S+ img/s, tum done", out.splitlines()[2])


def _terminal() -> tuple[int, int]:
    """A pseudo-terminal 80 columns wide (a new one has 0 columns, where tqdm draws nothing)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    return leader, follower


def test_on_a_terminal_a_bar_that_is_wiped_before_each_result():
    leader, follower = _terminal()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=_env(), stdin=follower, stdout=follower,
                            stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the script is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode()
    assert "img/s" in screen and "|" in screen  # tqdm's bar
    for result in ("TUM RGB-D", "KITTI"):
        before = screen[screen.index(result) - 1]
        assert before in "\r\n", repr(screen)  # the result starts a line: the bar was wiped first


def test_line_progress_writes_whole_lines_and_a_last_one():
    log = io.StringIO()
    with LineProgress(total=10, desc="ingest diml", unit="sample", initial=4, file=log, every=0) as bar:
        bar.update(3)
        bar.set_postfix(MB="1.5")
        bar.update(3)
    lines = log.getvalue().splitlines()
    assert log.getvalue().endswith("\n") and "\r" not in log.getvalue()
    assert [line.split(" in ")[0] for line in lines] == [
        "ingest diml: 70% 7/10 sample", "ingest diml: 100% 10/10 sample", "ingest diml: 100% 10/10 sample"]
    assert lines[-1].endswith(", MB=1.5")


def test_line_progress_is_quiet_between_its_intervals_and_when_disabled():
    log = io.StringIO()
    items = list(LineProgress(range(5), desc="verify", unit="shard", file=log, every=3600))
    assert items == [0, 1, 2, 3, 4]
    assert log.getvalue().splitlines()[0].startswith("verify: 5 shard in ")  # only the last line
    quiet = io.StringIO()
    for _ in progress(range(3), desc="verify", unit="shard", disable=True, file=quiet):
        pass
    assert quiet.getvalue() == ""


def test_a_bar_only_on_a_terminal():
    assert isinstance(progress(total=3, file=io.StringIO()), LineProgress)
    leader, follower = _terminal()
    with os.fdopen(follower, "w") as terminal:
        from tqdm import tqdm

        bar = progress(total=3, desc="x", file=terminal)
        assert isinstance(bar, tqdm) and bar.total == 3
        bar.close()
    os.close(leader)
