"""README.md stays short and true: the two commands first, at most 150 lines, a layout naming every part of the plugin,
and links only to docs that exist."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_two_commands_first_and_short():
    lines = README.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move details to docs/"
    first_block = README.split("```")[1]
    assert [ln.split("#")[0].strip() for ln in first_block.splitlines() if ln.strip().startswith("make ")] == [
        "make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_layout_names_every_module_and_package_of_the_plugin():
    layout = README.split("## Layout", 1)[1].split("```")[1]
    parts = sorted(p.name for p in (REPO / "fairseq_npu").iterdir()
                   if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())))
    named = [p if p.endswith(".py") else p + "/" for p in parts if p != "__init__.py"]
    missing = [p for p in named if f"fairseq_npu/{p}" not in layout and f"/{p}" not in layout]
    assert not missing, f"README.md's layout does not name {missing}"


def test_links_point_at_existing_docs():
    for link in re.findall(r"\((docs/[^)#]+)", README):
        assert (REPO / link).is_file(), link
