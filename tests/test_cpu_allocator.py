"""fairseq_npu.cpu_allocator: on glibc, freed large blocks stay in the process (no munmap, no page faults when the
next update allocates them again); FAIRSEQ_NPU_CPU_MALLOC=system keeps glibc's behaviour. Each case runs in a
fresh interpreter, since the settings are process-wide."""

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's")

PROBE = r"""
import json, resource
import torch
from fairseq_npu import cpu_allocator

applied = cpu_allocator.keep_freed_memory()
block = 64 * 2**20 // 4  # a 64 MiB fp32 tensor, like a large gradient
small = []
def update():  # what each update does to the allocator: a large block and some small ones, all freed after
    g = torch.ones(block)
    small.append([torch.ones(100) for _ in range(10)])
    del g
    small.clear()

for _ in range(3):  # warm-up: the heap grows until a freed block fits the next request (glibc's alignment slack)
    update()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    update()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps(dict(applied=applied, faults_per_update=faults / 10, pages_per_block=block * 4 // resource.getpagesize())))
"""


def _probe(**env):
    full = dict(os.environ, OMP_NUM_THREADS="1", **env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_without_page_faults():
    got = _probe(FAIRSEQ_NPU_CPU_MALLOC="keep")
    assert got["applied"] is True
    # the pages stayed mapped: at most one more heap growth in ten updates, not a block's worth each time
    assert got["faults_per_update"] < 0.15 * got["pages_per_block"], got


def test_system_setting_keeps_glibc_behaviour():
    got = _probe(FAIRSEQ_NPU_CPU_MALLOC="system")
    assert got["applied"] is False
    # glibc munmaps the block on free, so every update faults all its pages in again
    assert got["faults_per_update"] > 0.9 * got["pages_per_block"], got


def test_unknown_setting_names_the_variable(monkeypatch):
    from fairseq_npu import cpu_allocator

    monkeypatch.setattr(cpu_allocator, "_applied", None)
    monkeypatch.setenv(cpu_allocator.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"\$FAIRSEQ_NPU_CPU_MALLOC='fast': use 'auto' \(the default\), 'keep' or "
                                         r"'system'"):
        cpu_allocator.keep_freed_memory()


@pytest.mark.parametrize("setting, rows, dim, applied", [
    ("auto", 50265, 256, True),  # RoBERTa's embedding: 51 MB, above glibc's 32 MiB mmap threshold
    ("auto", 30000, 128, False),  # ALBERT's factorized embedding: 15 MB, glibc already reuses it
    ("keep", 30000, 128, True),
    ("system", 50265, 256, False),
])
def test_auto_applies_where_a_gradient_exceeds_the_mmap_threshold(monkeypatch, setting, rows, dim, applied):
    import torch

    from fairseq_npu import cpu_allocator

    calls = []
    monkeypatch.setattr(cpu_allocator, "keep_freed_memory", lambda: calls.append(1) or setting != "system")
    monkeypatch.setenv(cpu_allocator.ENV_VAR, setting)
    model = torch.nn.Sequential(torch.nn.Embedding(rows, dim), torch.nn.Linear(dim, 2))
    assert cpu_allocator.apply_for(model) is applied
    assert len(calls) == (0 if setting == "auto" and not applied else 1)
