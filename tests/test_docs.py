"""Every ```python block of the docs runs, so the tutorials cannot rot.

Blocks of one page run in order in one namespace, with ``FCAM_DOCS_FAST=1`` (pages read it to
shrink epochs) and the current directory set to a temporary folder. A block whose info string
says ``not run`` (e.g. ```` ```python title="not run: needs CUB" ````) is skipped; so are
``bash``/``text`` blocks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                   re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of the runnable python blocks of a markdown page, in order."""
    blocks = []
    for match in FENCE.finditer(text):
        info = match.group("info").strip()
        language = info.split()[0].lower() if info else ""
        if language not in ("python", "py") or "not run" in info.lower():
            continue
        indent = len(match.group("indent"))
        body = "\n".join(line[indent:] for line in match.group("body").splitlines())
        blocks.append((text.count("\n", 0, match.start()) + 1, body))
    return blocks


PAGES = sorted(p for p in DOCS.glob("*.md") if python_blocks(p.read_text(encoding="utf-8")))


def test_extractor_skips_marked_blocks() -> None:
    page = '```python\na = 1\n```\n\n```python title="not run: needs CUB"\nb = 1\n```\n```bash\nls\n```\n'
    assert python_blocks(page) == [(1, "a = 1")]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCAM_DOCS_FAST", "1")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for line, code in python_blocks(page.read_text(encoding="utf-8")):
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{page.name}, code block at line {line} failed: {error!r}") from error
