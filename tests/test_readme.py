"""README's Python code blocks run as written, each in a fresh namespace.

A block preceded by the line `<!-- doctest: skip (reason) -->` is not run (it needs
something CI does not have, e.g. a process group under torchrun); the skipped blocks are
counted and the count is pinned, so a new skip is a visible decision."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"<!--\s*doctest:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->")
EXPECTED_SKIPS = 1  # the DDP snippet (the same code runs under torchrun in tests/distributed)


def python_blocks():
    lines = README.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            end = next(k for k in range(start, len(lines)) if lines[k].strip() == "```")
            before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            skip = SKIP.search(before)
            blocks.append((start + 1, "\n".join(lines[start:end]), skip.group("reason") if skip else None))
            i = end
        i += 1
    return blocks


BLOCKS = python_blocks()


def test_blocks_found_and_skips_counted():
    assert len(BLOCKS) >= 6
    skipped = [(line, reason) for line, _, reason in BLOCKS if reason is not None]
    assert len(skipped) == EXPECTED_SKIPS, skipped


@pytest.mark.parametrize("line,code", [(line, code) for line, code, reason in BLOCKS if reason is None],
                         ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_block_runs(line, code, capsys):
    namespace = {"__name__": f"readme_line_{line}"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102
