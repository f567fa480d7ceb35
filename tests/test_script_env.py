"""test/script_env.sh: the one interpreter choice and the one device-name check of the shell scripts."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _choose_python(repo, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    run = subprocess.run(["bash", "-c", f'source test/script_env.sh; choose_python "{repo}"; echo "$PYTHON"'],
                         cwd=REPO, capture_output=True, text=True, env=dict(base, **env), timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_interpreter_choice(tmp_path):
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("#!/bin/sh\n")
    venv_python.chmod(0o755)
    assert _choose_python(tmp_path) == str(venv_python)  # the repository's .venv, not activated
    assert _choose_python(tmp_path, PYTHON="/opt/py") == "/opt/py"  # $PYTHON wins
    on_path = subprocess.run(["bash", "-c", "command -v python3 || command -v python"], capture_output=True,
                             text=True).stdout.strip()
    assert _choose_python(tmp_path, VIRTUAL_ENV="/some/env") == on_path  # an activated env's python3
    assert _choose_python(tmp_path / "no-venv") == on_path


def test_every_script_runs_the_chosen_interpreter(tmp_path):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "ran: $*"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake))
    pre = subprocess.run(["bash", "glue_scripts/preprocess_GLUE_tasks.sh", "glue", "SST-2"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=30)
    assert (pre.returncode, pre.stdout) == (0, "ran: -m fairseq_npu.preprocess glue SST-2\n")
    smoke = subprocess.run(["bash", "test/npu_smoke.sh", "--device=cpu", "--updates", "2"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=30)
    assert (smoke.returncode, smoke.stdout) == (0, "ran: -m fairseq_npu.amp.smoke --updates 2\n")


@pytest.mark.parametrize("script", ["test/train_full_1p.sh", "test/npu_smoke.sh"])
def test_one_device_name_check(tmp_path, script):
    run = subprocess.run(["bash", script, f"--data_path={tmp_path}", "--device=tpu"], cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    name = os.path.basename(script)
    assert (run.returncode, run.stdout, run.stderr) == (2, "", f"{name}: error: --device=tpu: expected npu, cuda, "
                                                               "cpu or auto\n")
