"""``make conformance``: fairseq's own tests run with the plugin may fail only where docs/hooks.md says they do.

    python tests/conformance_check.py OUT/fairseq_tests.xml [--stock STOCK_OUT/fairseq_tests.xml]

reads the JUnit report of ``bash ../shared/fairseq_tests/run.sh --with-plugin [--fast] OUT`` and the list of known
failures in docs/hooks.md (section "Known failures of fairseq's own tests", one ``- `tests/...` `` item each), prints
a summary and exits 1 if a test failed that is not listed. ``--stock`` also compares with a run without the plugin:
then a test that failed with the plugin and passed in stock is a regression even if listed.
"""

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "hooks.md"
SECTION = "## Known failures of fairseq's own tests"


def node_id(classname: str, name: str) -> str:
    """JUnit (classname, name) -> pytest's node id: tests.distributed.test_utils.TestX -> tests/distributed/
    test_utils.py::TestX::name; a collection error (no classname) names its file."""
    if not classname:
        return name.replace(".", "/") + ".py"
    parts = classname.split(".")
    cut = next((i for i, p in enumerate(parts) if p.startswith("test_")), len(parts) - 1) + 1
    return "::".join(["/".join(parts[:cut]) + ".py", *parts[cut:], name])


def outcomes(xml_path: Path) -> dict:
    """{node id: 'passed' | 'failed' | 'skipped'} (errors count as failed)."""
    result = {}
    for case in ET.parse(xml_path).iter("testcase"):
        tags = {child.tag for child in case}
        state = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
        key = node_id(case.get("classname", ""), case.get("name", ""))
        if result.get(key) != "failed":  # subtests may report one test several times
            result[key] = state
    return result


def known_failures(doc: Path = DOC) -> set:
    text = doc.read_text()
    if SECTION not in text:
        raise SystemExit(f"{doc}: no section {SECTION!r}")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `(tests/[^`]+)`", section, flags=re.M))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="fairseq_tests.xml of the run with the plugin")
    parser.add_argument("--stock", type=Path, help="fairseq_tests.xml of a run without the plugin")
    args = parser.parse_args(argv)
    for path in (args.report, args.stock):
        if path is not None and not path.is_file():
            print(f"conformance: {path}: no such JUnit report (did run.sh run?)", file=sys.stderr)
            return 2
    got = outcomes(args.report)
    counts = {s: sum(1 for v in got.values() if v == s) for s in ("passed", "failed", "skipped")}
    print("conformance: fairseq's own tests with the plugin: "
          + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if counts["passed"] == 0:
        print("conformance: nothing passed; the run did not work", file=sys.stderr)
        return 2
    known = known_failures()
    failed = {k for k, v in got.items() if v == "failed"}
    unknown = sorted(failed - known)
    for name in sorted(failed & known):
        print(f"  known failure: {name}")
    for name in sorted(k for k in known if got.get(k) == "passed"):
        print(f"  listed as known, passed this time: {name}")
    regressions = []
    if args.stock is not None:
        stock = outcomes(args.stock)
        regressions = sorted(k for k in failed if stock.get(k) == "passed")
        fixed = sorted(k for k, v in stock.items() if v == "failed" and got.get(k) == "passed")
        print(f"conformance: stock failed {sum(1 for v in stock.values() if v == 'failed')}; "
              f"{len(fixed)} of those pass with the plugin")
        for name in regressions:
            print(f"  REGRESSION (passes in stock, fails with the plugin): {name}", file=sys.stderr)
    for name in unknown:
        print(f"  NOT A KNOWN FAILURE: {name} (a regression, or a flake: compare with a stock run, "
              "bash ../shared/fairseq_tests/run.sh OUT)", file=sys.stderr)
    ok = not unknown and not regressions
    print(f"conformance: {'OK' if ok else 'FAILED'}: {len(failed)} failed, all known" if ok
          else f"conformance: FAILED: {len(unknown)} unknown failure(s), {len(regressions)} regression(s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
