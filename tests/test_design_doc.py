"""docs/design.md names only files and definitions that exist, is linked from the README, and sends the reader
of the update stage to docs/update.md, whose paths exist too."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"
# a path-like word (a glob such as benchmarks/bench_*.py too): has a slash or a file ending
PATH = re.compile(r"(?<![\w./*-])((?:[\w.*-]+/)+[\w.*-]*|[\w*-]+\.(?:py|sh|md))(?![\w/-])")
# relative names in the diagram and tables resolve against the repository, the package or test/
BASES = (REPO, REPO / "fairseq_npu", REPO / "test")


def _exists(path):
    return any(any(base.glob(path)) if "*" in path else (base / path).exists() for base in BASES)


def test_every_path_design_md_names_exists():
    named = {m.group(1).rstrip(".") for m in PATH.finditer(DESIGN.read_text())}
    assert {"fairseq_npu/launch/command.py", "launch/recipes.py", "benchmarks/bench_*.py"} <= named  # all forms seen
    assert sorted(p for p in named if not _exists(p)) == []


def test_every_path_update_md_names_exists():
    named = {m.group(1).rstrip(".") for m in PATH.finditer((REPO / "docs" / "update.md").read_text())}
    assert {"fairseq_npu/update/device_update.py", "fairseq_npu/update/graphs.py"} <= named
    assert sorted(p for p in named if not _exists(p)) == []


def test_every_constant_and_function_design_md_names_is_defined():
    text = DESIGN.read_text()
    names = set(re.findall(r"`([A-Z][A-Z0-9_]{2,})`", text)) | set(re.findall(r"`(_?[a-z_]+)\(\)`", text)) \
        | set(re.findall(r"`(_[A-Z]+)`", text))
    assert {"ROBERTA_RECIPES", "launch_default", "_TABLE"} <= names
    sources = "\n".join(p.read_text() for d in ("fairseq_npu", "benchmarks") for p in (REPO / d).rglob("*.py"))
    undefined = sorted(n for n in names if not re.search(rf"^\s*(?:def {n}\(|{n}(?:: [^=]+)? =)", sources, re.M))
    assert undefined == []


def test_the_update_stage_points_at_its_own_page():
    text = DESIGN.read_text()
    assert "| update | `fairseq_npu/update/mode.py`" in text and "docs/update.md |" in text


def test_readme_links_the_design_page():
    assert "[docs/design.md](docs/design.md)" in (REPO / "README.md").read_text()
