"""The README stays a front door: short, with every flag of every verb in its command table, and no
measurement dated by "round" anywhere in the documentation (a date and a version say when)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peftsent.__main__ import VERBS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 350
#: phrases that date a measurement by a work session instead of a version and a date
UNDATED = ("this round", "last round", "rounds ago")


def _help_text(module: str) -> str:
    """``python -m MODULE --help`` of this checkout (PYTHONPATH = the repository root), wide enough not to wrap."""
    module = module.removesuffix(".__main__")
    env = {**os.environ, "COLUMNS": "250",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, f"python -m {module} --help failed:\n{result.stderr}"
    return result.stdout


def help_flags(text: str) -> set[str]:
    """The long options an argparse help lists in its options section (``--help`` itself left out).

    Only the lines that introduce an option count (indented two spaces, starting with '-'), so an
    epilog's example of another tool's flags (torchrun's --nproc_per_node) is not taken for one.
    """
    flags, in_options = set(), False
    for line in text.splitlines():
        if re.match(r"^(options|optional arguments):\s*$", line):
            in_options = True
        elif in_options and not line.strip():
            break
        elif in_options and re.match(r"^  -", line):
            invocation = re.split(r"\s{2,}", line.strip())[0]
            flags.update(re.findall(r"--[A-Za-z][\w-]*", invocation))
    return flags - {"--help"}


def command_rows(readme: str) -> dict[str, str]:
    """verb -> the row of the README's '## Commands' table whose first cell is `peftsent VERB ...`."""
    match = re.search(r"^## Commands\s*$(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    assert match, "README.md has no '## Commands' section"
    rows = {}
    for line in match.group(1).splitlines():
        row = re.match(r"^\|\s*`peftsent (\w+)", line)
        if row:
            rows[row.group(1)] = line
    return rows


def test_help_flags_reads_options_only():
    text = ("usage: x [-h] [--out OUT]\n\noptions:\n  -h, --help  show\n  --out OUT   where, e.g. --not-a-flag\n"
            "  --set key=value [key=value ...]\n                        overrides\n\nexamples:\n"
            "  torchrun --nproc_per_node 2\n")
    assert help_flags(text) == {"--out", "--set"}


@pytest.mark.parametrize("verb", list(VERBS))
def test_command_table_lists_every_flag(verb):
    rows = command_rows(README.read_text(encoding="utf-8"))
    assert verb in rows, f"README '## Commands' table has no row starting with `peftsent {verb}`"
    flags = help_flags(_help_text(VERBS[verb][0]))
    missing = sorted(flag for flag in flags if not re.search(re.escape(flag) + r"(?![\w-])", rows[verb]))
    assert not missing, f"README '## Commands' row of {verb} lacks {', '.join(missing)} (see peftsent {verb} --help)"


def test_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, (f"README.md has {lines} lines (at most {MAX_README_LINES}): move measurements "
                                       f"and long tables to docs/")


def test_ci_installs_as_the_readme_says():
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                if line.strip().startswith("pip install")]
    assert commands, ".ci/run installs nothing with pip"
    readme = README.read_text(encoding="utf-8")
    assert not [c for c in commands if c not in readme], "README.md lost a command that .ci/run runs verbatim"


def _documentation() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "recipes").rglob("*.yaml"))]


def test_measurements_are_dated_not_by_round():
    found = []
    for path in _documentation():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if path.suffix == ".yaml":
                line = line.partition("#")[2]  # recipe comments only
            found += [f"{path.relative_to(ROOT)}:{number}: {phrase!r}" for phrase in UNDATED
                      if phrase in line.lower()]
    assert not found, "say the version and date instead of:\n" + "\n".join(found)
