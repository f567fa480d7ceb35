"""benchmarks/fault_injection.py runs its cases and judges them; two quick cases here (the full table is a
benchmark: docs/failures.md)."""

from benchmarks import fault_injection


def test_two_cases_run_and_are_judged(tmp_path, capsys):
    page = tmp_path / "failures.md"
    code = fault_injection.main(["--cases", "flag-batch-size-0,tsv-train-empty", "--workdir", str(tmp_path / "w"),
                                 "--markdown", str(page)])
    rows = [line for line in page.read_text().splitlines() if line.startswith("| `")]
    assert code == 0, capsys.readouterr().out[-3000:]
    assert rows[0] == ("| `flag-batch-size-0` | train_full_1p.sh --batch-size=0 | 2 | train_full_1p.sh: error: "
                       "--batch-size=0: expected a whole number >= 1 | honest |")
    assert rows[1].startswith("| `tsv-train-empty` | empty train.tsv, preprocessed | 2 | error: ")
    assert rows[1].endswith(" | honest |") and len(rows) == 2


def test_verdicts():
    judge = fault_injection.judge
    assert judge("c", "w", 0, "", "", "").verdict == "exit-0-wrong"
    assert judge("c", "w", 1, "Traceback (most recent call last):\n  x\nValueError: y", "", "").verdict == "traceback"
    assert judge("c", "w", -11, "", "", "").verdict == "segfault"
    assert judge("c", "w", 2, "", "prog: error: bad flag\n", "").verdict == "honest"
    assert judge("c", "w", 0, "", "", "", right=lambda: None).verdict == "honest"
