"""The launch helpers (fairseq_npu/launch) import no fairseq, and the device is chosen by fairseq_npu.device alone."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH_MODULES = ["fairseq_npu.launch", "fairseq_npu.launch.__main__", "fairseq_npu.launch.recipes",
                  "fairseq_npu.launch.command", "fairseq_npu.launch.summary", "fairseq_npu.launch.training_log"]


def _python(code, tmp_path, *, poisoned=True, plugin="off"):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        ([str(tmp_path)] if poisoned else []) + [str(REPO)]), FAIRSEQ_NPU_PLUGIN=plugin)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def _poison(tmp_path):
    (tmp_path / "fairseq").mkdir()
    poison = "raise ImportError('poisoned fairseq: the launch layer imported it')\n"
    (tmp_path / "fairseq" / "__init__.py").write_text(poison)


def test_launch_helpers_import_with_a_fairseq_that_raises(tmp_path):
    _poison(tmp_path)
    code = ("import importlib, sys\n"
            f"for name in {LAUNCH_MODULES!r}: importlib.import_module(name)\n"
            "import fairseq_npu.glue_tasks, fairseq_npu.precision, fairseq_npu.argv\n"
            "print(sorted(m for m in ('fairseq', 'torch') if m in sys.modules))\n")
    run = _python(code, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"  # not even torch until a device is asked for
    # the same import without FAIRSEQ_NPU_PLUGIN=off is the plugin's: it needs fairseq, and says so
    run = _python("import fairseq_npu.launch.recipes", tmp_path, plugin="on")
    assert run.returncode != 0 and "poisoned fairseq" in run.stderr


def test_plan_and_summarize_run_with_a_fairseq_that_raises(tmp_path):
    _poison(tmp_path)
    data = tmp_path / "SST-2-bin" / "input0"
    data.mkdir(parents=True)
    (data / "dict.txt").write_text("a 1\n")
    out = tmp_path / "out"
    code = ("import sys\nfrom fairseq_npu.launch.__main__ import main\n"
            f"sys.exit(main(['plan', '--mode', 'eval', '--data', {str(data.parent)!r}, '--device', 'cpu', "
            f"'--output-dir', {str(out)!r}]))\n")
    run = _python(code, tmp_path)
    assert run.returncode == 0, run.stderr
    args = (out / "fairseq_args").read_text().split("\0")
    # evaluation is fairseq-npu-evaluate's command line: the one inference loop in fairseq_npu/cli
    assert args[:9] == [str(data.parent), "--path", str(out / "checkpoints" / "checkpoint_best.pt"), "--split",
                        "valid", "--glue-task", "SST-2", "--batch-size", "32"]
    assert "--json" in args and "--user-dir" not in args
    run = _python("import sys\nfrom fairseq_npu.launch.__main__ import main\nsys.exit(main(['device', '--device', "
                  "'cpu']))\n", tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == "cpu" and int(run.stdout.split()[1]) == len(os.sched_getaffinity(0))


def test_user_dir_gets_the_plugin_whatever_the_environment_says(tmp_path):
    code = ("import fairseq, sys\nimport fairseq_npu\n"
            "from fairseq.tasks import TASK_REGISTRY\nprint('sentence_prediction_npu' in TASK_REGISTRY)\n")
    run = _python(code, tmp_path, poisoned=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "True"


def test_the_scripts_choose_the_device_through_the_launch_helper():
    common = (REPO / "test" / "common.sh").read_text()
    assert "launch_helper device --device" in common
    assert "torch.npu.device_count" not in common and "torch.cuda.device_count" not in common
