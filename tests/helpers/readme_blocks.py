"""The shell blocks of a Markdown manual, as a newcomer would type them.

Every fenced ```` ```bash ```` block is a command the reader is meant to run on one machine, in order, in one
terminal (so ``source`` and ``export`` carry over). A block that cannot run there says why in a comment just
above it, ``<!-- not run: REASON -->`` (it needs a real cluster, it is the test suite itself, ...). A block
that starts a server in the foreground, as ``mlflow ui`` does, is marked ``<!-- serves: URL -->``: the runner
starts it in the background, waits for the URL to answer, and stops it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

_FENCE = re.compile(r"(?:<!--\s*(?P<mark>not run|serves):\s*(?P<arg>.*?)\s*-->\s*\n)?```bash\n(?P<body>.*?)```", re.S)


@dataclasses.dataclass(frozen=True)
class Block:
    source: str  # file name, for messages
    line: int  # 1-based line of the opening fence
    body: str
    skip_reason: str | None = None
    serves: str | None = None  # URL a foreground server block answers on

    @property
    def title(self) -> str:
        first = next((ln for ln in self.body.splitlines() if ln.strip()), "")
        return f"{self.source}:{self.line}: {first.strip()[:100]}"


def read_blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start("body")) if match else 0
        mark, arg = match.group("mark"), match.group("arg")
        blocks.append(Block(path.name, line, match.group("body"),
                            skip_reason=arg if mark == "not run" else None,
                            serves=arg if mark == "serves" else None))
    return blocks
