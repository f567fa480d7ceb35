"""tests/conformance_check.py (make conformance): a failure of fairseq's own tests passes only when docs/hooks.md
lists it, and a stock report turns a listed failure that passes in stock into a regression."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import conformance_check  # noqa: E402


def _report(path, cases):
    """cases: (classname, name, outcome) with outcome passed / failure / error / skipped."""
    rows = []
    for classname, name, outcome in cases:
        inner = "" if outcome == "passed" else f'<{outcome} message="x"/>'
        rows.append(f'<testcase classname="{classname}" name="{name}">{inner}</testcase>')
    path.write_text(f'<testsuites><testsuite name="pytest">{"".join(rows)}</testsuite></testsuites>')
    return path


def test_node_ids_from_junit_names():
    assert conformance_check.node_id("tests.test_file_io.TestFileIO", "test_file_io_async") == \
        "tests/test_file_io.py::TestFileIO::test_file_io_async"
    assert conformance_check.node_id("tests.distributed.test_utils.TestAllGather", "test_x") == \
        "tests/distributed/test_utils.py::TestAllGather::test_x"
    assert conformance_check.node_id("", "tests.test_dataclass_utils") == "tests/test_dataclass_utils.py"


def test_the_documented_list_is_read():
    known = conformance_check.known_failures()
    assert "tests/test_file_io.py::TestFileIO::test_file_io_async" in known
    assert "tests/test_dataclass_utils.py" in known
    assert not any("valid_subset" in k for k in known)  # the two None-argument regressions are fixed, not listed


def test_only_known_failures_pass_the_check(tmp_path, capsys):
    known = [("tests.test_file_io.TestFileIO", "test_file_io_async", "failure"),
             ("", "tests.test_dataclass_utils", "error"), ("tests.test_train.TestX", "test_ok", "passed")]
    assert conformance_check.main([str(_report(tmp_path / "a.xml", known))]) == 0
    assert "OK: 2 failed, all known" in capsys.readouterr().out
    new = known + [("tests.test_valid_subset_checks.TestValidSubsetsErrors", "test_dummy_task", "failure")]
    assert conformance_check.main([str(_report(tmp_path / "b.xml", new))]) == 1
    err = capsys.readouterr().err
    assert "NOT A KNOWN FAILURE: tests/test_valid_subset_checks.py::TestValidSubsetsErrors::test_dummy_task" in err


def test_a_stock_report_makes_a_listed_failure_that_passes_in_stock_a_regression(tmp_path, capsys):
    plugin = _report(tmp_path / "plugin.xml", [("tests.test_file_io.TestFileIO", "test_file_io_async", "failure"),
                                               ("tests.test_train.TestX", "test_ok", "passed")])
    stock = _report(tmp_path / "stock.xml", [("tests.test_file_io.TestFileIO", "test_file_io_async", "passed"),
                                             ("tests.test_train.TestX", "test_ok", "failure")])
    assert conformance_check.main([str(plugin), "--stock", str(stock)]) == 1
    captured = capsys.readouterr()
    assert "REGRESSION (passes in stock, fails with the plugin): tests/test_file_io.py" in captured.err
    assert "1 of those pass with the plugin" in captured.out


def test_a_missing_report_is_one_line_and_exit_2(tmp_path, capsys):
    assert conformance_check.main([str(tmp_path / "none.xml")]) == 2
    assert capsys.readouterr().err.strip().endswith("no such JUnit report (did run.sh run?)")
