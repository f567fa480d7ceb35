"""Every hook of fairseq_npu.hooks (fairseq_npu/hooks/): installed once, and doing its job on cpu and (through the stand-in) on npu."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf, open_dict

import fairseq_npu  # noqa: F401  (installs the hooks)
from fairseq import checkpoint_utils, options, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.distributed import utils as dist_utils
from fairseq.trainer import Trainer
from fairseq_npu import device, hooks, patching
from fairseq_npu.checkpoint_loading import TorchWithSafeLoad


def make_cfg(*extra):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, ["/nonexistent-data", "--task", "sentence_prediction", "--criterion", "sentence_prediction", "--arch",
                 "roberta_base", "--num-classes", "2",
                 "--user-dir", os.path.dirname(fairseq_npu.__file__), *extra]
    )
    return convert_namespace_to_omegaconf(args)

pytestmark = pytest.mark.usefixtures("fresh_device")  # tests/conftest.py


def test_every_listed_hook_is_installed():
    assert checkpoint_utils.torch.__class__ is dist_utils.torch.__class__ is TorchWithSafeLoad
    for hook in hooks.HOOKS:
        assert patching.is_hooked(hook.owner, hook.name) == hook.wanted(), hook.target


def test_install_is_idempotent():
    before = [getattr(h.owner, h.name) for h in hooks.HOOKS]
    assert hooks.install() == []  # installed when fairseq_npu was imported: nothing left to replace
    assert hooks.install() == []
    after = [getattr(h.owner, h.name) for h in hooks.HOOKS]
    assert before == after
    for hook in hooks.HOOKS:  # wrapped exactly once: one level down is stock code
        if hook.wanted():
            assert not hasattr(patching.original_of(getattr(hook.owner, hook.name)), "__fairseq_npu_original__")


def test_each_row_is_one_attribute():
    targets = [h.target for h in hooks.HOOKS]
    assert len(set(targets)) == len(targets)
    assert {"fairseq.distributed.utils.torch", "fairseq.data.language_pair_dataset.np",
            "fairseq.optim.fp16_optimizer._FP16OptimizerMixin._sync_fp32_params_to_fp16",
            "fairseq.optim.fairseq_optimizer.FairseqOptimizer.load_state_dict",
            "fairseq_npu.optim.fused_adamw.FairseqFusedAdamW.clip_grad_norm"} <= set(targets)


def test_describe_lists_every_hook():
    text = hooks.describe()
    assert len(text.splitlines()) == len(hooks.HOOKS)
    assert "fairseq.trainer.Trainer.__init__" in text


def test_docs_table_of_hooks_is_current():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "hooks.md").read_text()
    table = hooks.markdown_table()
    assert len(table.splitlines()) == len(hooks.HOOKS) + 2
    assert table in doc, "docs/hooks.md's table of hooks is stale: paste `python -m fairseq_npu.hooks --markdown`"


def test_json_lists_exactly_what_importing_the_plugin_changes():
    """A fresh interpreter imports fairseq's modules, snapshots their attributes and those of their classes, imports
    the plugin and diffs: the changed attributes are exactly `python -m fairseq_npu.hooks --json`."""
    modules = sorted(m for m in sys.modules if m == "fairseq" or m.startswith("fairseq."))
    script = Path(__file__).resolve().parent / "hooks_inventory.py"
    env = dict(os.environ, PYTHONPATH=str(script.parent.parent), OMP_NUM_THREADS="1")
    env.pop(device.ENV_VAR, None)
    done = subprocess.run([sys.executable, str(script), json.dumps(modules)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["new_modules"] == []  # every fairseq module the plugin imports was snapshotted before
    listed = set(got["listed"])
    assert listed == {h.target for h in hooks.HOOKS if h.wanted()}
    # the plugin's own class: fused_adamw computes its norm itself, so apex's overflow skip wraps it there too
    own = {"fairseq_npu.optim.fused_adamw.FairseqFusedAdamW.clip_grad_norm"}
    assert set(got["changed"]) == listed - own
    assert own <= listed


def test_parse_args_and_arch_accepts_none_in_the_argument_list_as_stock_does():
    """fairseq's own tests pass `--save-dir None`; the hook (and fairseq_npu.argv) must not call str methods on it."""
    args = ["--task", "dummy_lm", "--arch", "transformer_lm_gpt2_tiny", "--optimizer", "adam", "--lr", "0.0001",
            "--max-tokens", "500", "--save-dir", None, "--max-epoch", "1"]
    hooked = options.parse_args_and_arch(options.get_training_parser(), list(args))
    stock = patching.original_of(options.parse_args_and_arch)(options.get_training_parser(), list(args))
    assert vars(hooked) == vars(stock)
    with_flags = options.parse_args_and_arch(options.get_training_parser(), args + ["--use-npu-adam"])
    assert with_flags.optimizer == "fused_adamw" and with_flags.save_dir == stock.save_dir


def test_argv_helpers_skip_elements_that_are_not_strings():
    from fairseq_npu.argv import flag_value, has_flag

    args = ["--save-dir", None, None, "--lr=0.1", "--optimizer", "adam", 3]
    assert flag_value(args, "--save-dir") is None and flag_value(args, "--lr") == "0.1"
    assert flag_value(args, "--optimizer") == "adam" and flag_value(args, "--task") is None
    assert has_flag(args, "--lr") and has_flag(args, "--save-dir") and not has_flag(args, "--amp")


def test_device_type_flag_selects_and_exports(monkeypatch):
    parser = options.get_training_parser()
    args, _ = parser.parse_known_args(["--device-type", "cpu"])
    assert args.device_type == "cpu"
    assert os.environ[device.ENV_VAR] == "cpu"
    assert device.get().type == "cpu"
    with pytest.raises(SystemExit):
        parser.parse_known_args(["--device-type", "tpu"])


# ------------------------------------------------------------------------------------------------ Trainer


class _Movable:
    def __init__(self):
        self.moved_to = []

    def to(self, device=None, dtype=None):
        self.moved_to.append(device)
        return self

    def parameters(self):  # read by the cpu allocator's size rule
        return iter(())


def _fake_trainer_init(self, cfg, task, model, criterion):
    self.cfg, self._model, self._criterion = cfg, model, criterion
    self.device = torch.device("cpu")
    self.use_distributed_wrapper = False
    self.saw_cpu_flag = cfg.common.cpu


def test_trainer_moves_model_to_npu(npu_stand_in):
    init = patching.rewrap(Trainer.__init__, _fake_trainer_init)
    trainer, model, criterion = SimpleNamespace(), _Movable(), _Movable()
    cfg = make_cfg("--device-id", "5")
    init(trainer, cfg, None, model, criterion)
    assert trainer.device == torch.device("npu", 5)
    assert model.moved_to == [torch.device("npu", 5)] and criterion.moved_to == [torch.device("npu", 5)]
    assert ("set_device", (5,)) in npu_stand_in.CALLS


def test_trainer_leaves_moving_to_the_ddp_wrapper(npu_stand_in):
    def init_with_wrapper(self, *args):
        _fake_trainer_init(self, *args)
        self.use_distributed_wrapper = True

    init = patching.rewrap(Trainer.__init__, init_with_wrapper)
    trainer, model = SimpleNamespace(), _Movable()
    init(trainer, make_cfg(), None, model, _Movable())
    assert trainer.device.type == "npu" and model.moved_to == []


def test_trainer_cpu_flag_beats_npu(npu_stand_in):
    init = patching.rewrap(Trainer.__init__, _fake_trainer_init)
    trainer, model = SimpleNamespace(), _Movable()
    init(trainer, make_cfg("--cpu"), None, model, _Movable())
    assert trainer.device == torch.device("cpu") and model.moved_to == []
    assert device.get().type == "cpu"


def test_trainer_tunes_the_cpu_allocator_on_cpu_only(npu_stand_in, monkeypatch):
    from fairseq_npu import cpu_allocator

    tuned = []
    monkeypatch.setattr(cpu_allocator, "apply_for", lambda model: tuned.append(model))
    init = patching.rewrap(Trainer.__init__, _fake_trainer_init)
    init(SimpleNamespace(), make_cfg(), None, _Movable(), _Movable())  # npu
    assert tuned == []
    model = _Movable()
    init(SimpleNamespace(), make_cfg("--cpu"), None, model, _Movable())
    assert tuned == [model]


def test_trainer_honours_cpu_choice_on_a_cuda_machine(monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    init = patching.rewrap(Trainer.__init__, _fake_trainer_init)
    trainer = SimpleNamespace()
    init(trainer, make_cfg(), None, _Movable(), _Movable())
    assert trainer.saw_cpu_flag is True  # stock Trainer then picks cpu instead of cuda


def test_prepare_sample_moves_batches_to_npu(npu_stand_in, monkeypatch):
    moved = []
    monkeypatch.setattr(utils, "move_to_cuda", lambda sample, device=None: moved.append(device) or sample)
    prepare = patching.rewrap(Trainer._prepare_sample, lambda self, sample, is_dummy=False: (sample, is_dummy))
    npu_trainer = SimpleNamespace(device=torch.device("npu", 0))
    assert prepare(npu_trainer, {"id": torch.tensor([1])}) == ({"id": torch.tensor([1])}, False)
    assert moved == [torch.device("npu", 0)]
    prepare(SimpleNamespace(device=torch.device("cpu")), {"id": torch.tensor([1])})
    assert moved == [torch.device("npu", 0)]  # cpu (and cuda, done by stock) untouched


def test_npu_cache_emptied_after_first_update_only(npu_stand_in):
    updates = {"n": 0}

    def stock_train_step(self, samples, raise_oom=False):
        updates["n"] += 1
        return {"loss": 1.0}

    step = patching.rewrap(Trainer.train_step, stock_train_step)
    trainer = SimpleNamespace(device=torch.device("npu", 0), get_num_updates=lambda: updates["n"])
    assert step(trainer, []) == {"loss": 1.0}
    step(trainer, [])
    assert [c for c in npu_stand_in.CALLS if c[0] == "empty_cache"] == [("empty_cache", ())]


def test_seed_reaches_npu_generator(npu_stand_in):
    with utils.set_torch_seed(11):
        pass
    assert ("manual_seed", (11,)) in npu_stand_in.CALLS


def test_cpu_run_seeds_the_cpu_generator_only_and_draws_what_stock_draws(monkeypatch):
    """On a cpu run fairseq's per-update seed gives the numbers torch.manual_seed gives, restores the state on
    leaving the block, and queues nothing for accelerators the run never uses."""
    assert device.get().type == "cpu" and not torch.cuda.is_available()
    torch.manual_seed(123)
    expected = torch.rand(8)
    before = torch.get_rng_state()

    def accelerator_seed(seed):
        raise AssertionError("an accelerator generator was seeded on a cpu run")

    for module in (torch.cuda, torch.xpu, torch.mtia):
        monkeypatch.setattr(module, "manual_seed_all", accelerator_seed)
    with utils.set_torch_seed(123):
        assert torch.equal(torch.rand(8), expected)
    assert torch.equal(torch.get_rng_state(), before)
    utils.set_torch_seed(123)  # Trainer._set_seed: no block, the seed stays
    assert torch.equal(torch.rand(8), expected)
    with pytest.raises(AssertionError):
        utils.set_torch_seed(1.5)  # stock's type check


# ------------------------------------------------------------------------------------------------ distributed


def test_distributed_main_sets_npu_device(npu_stand_in, monkeypatch):
    monkeypatch.setattr(dist_utils, "distributed_init", lambda cfg: 0)
    seen = []
    cfg = make_cfg()
    dist_utils.distributed_main(3, lambda c, **kw: seen.append(c.distributed_training.device_id), cfg, {})
    assert seen == [3]
    assert ("set_device", (3,)) in npu_stand_in.CALLS


class _StopInit(Exception):
    pass


@pytest.mark.parametrize("use_npu,flags,expected", [
    (False, [], "gloo"), (True, [], "hccl"), (True, ["--cpu"], "gloo"),
    (False, ["--distributed-backend", "nccl"], "gloo"), (True, ["--distributed-backend", "nccl"], "hccl"),
    (False, ["--distributed-backend", "mpi"], "mpi"), (True, ["--distributed-backend", "gloo"], "gloo"),
])
def test_distributed_backend_follows_device(request, monkeypatch, use_npu, flags, expected):
    if use_npu:
        request.getfixturevalue("npu_stand_in")
    chosen = []

    def record(backend, **kwargs):
        chosen.append(backend)
        raise _StopInit

    if not flags:
        assert make_cfg().distributed_training.distributed_backend == "auto"  # the plugin's default
    monkeypatch.setattr(torch.distributed, "init_process_group", record)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    with pytest.raises(_StopInit):
        dist_utils.distributed_init(make_cfg(*flags))
    assert chosen == [expected]


def test_torchrun_env_gives_device_from_local_rank(monkeypatch):
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "4", "RANK": "3",
                       "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    dt = make_cfg().distributed_training  # world size left at its default: torchrun's WORLD_SIZE is used
    if not torch.cuda.is_available():  # what the hook is for: stock divides by torch.cuda.device_count()
        with pytest.raises(ZeroDivisionError):
            patching.original_of(dist_utils._infer_torch_distributed_launch_init)(make_cfg().distributed_training)
    dist_utils.infer_init_method(dt)
    assert (dt.distributed_init_method, dt.distributed_world_size, dt.distributed_rank, dt.device_id,
            dt.distributed_no_spawn) == ("env://", 4, 3, 1, True)


def test_npu_spawn_refuses_more_workers_than_devices(npu_stand_in):
    npu_stand_in.STATE["count"] = 2
    cfg = make_cfg("--distributed-world-size", "4")
    with pytest.raises(RuntimeError, match=r"--distributed-world-size 4 but only 2 NPU device\(s\) are visible"):
        dist_utils.call_main(cfg, lambda c: None)


# --------------------------------------------------------------------------------------------------------------
# Slurm: a fake `scontrol` on PATH and the variables srun sets


@pytest.fixture
def slurm_job(tmp_path, monkeypatch):
    """Sets up a Slurm job's environment; returns a function taking the per-task variables."""
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_STEP_NODELIST",
                "SLURM_NTASKS_PER_NODE", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_ID"):
        monkeypatch.delenv(key, raising=False)
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text("#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] || exit 3\necho node-a\necho node-b\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{scontrol.parent}:{os.environ['PATH']}")

    def set_vars(**variables):
        monkeypatch.setenv("SLURM_JOB_NODELIST", "node-[a-b]")
        for key, value in variables.items():
            monkeypatch.setenv(key, str(value))

    return set_vars


def _call_main_recorded(cfg, monkeypatch):
    """call_main with the spawn and distributed_main replaced by recorders: what would have been started."""
    started = {}

    def spawn(fn, args, nprocs, join):
        started.update(how="spawn", nprocs=nprocs, start_rank=args[2]["start_rank"])

    def distributed_main(device_id, main, cfg, kwargs):
        started.update(how="direct", device_id=device_id)

    monkeypatch.setattr(torch.multiprocessing, "spawn", spawn)
    monkeypatch.setattr(dist_utils, "distributed_main", distributed_main)
    dist_utils.call_main(cfg, lambda c: None)
    dt = cfg.distributed_training
    return dict(started, init=dt.distributed_init_method, world=dt.distributed_world_size, rank=dt.distributed_rank)


def test_slurm_one_task_per_node_spawns_this_nodes_npus(npu_stand_in, slurm_job, monkeypatch):
    slurm_job(SLURM_NNODES=2, SLURM_NODEID=1, SLURM_NTASKS_PER_NODE=1)
    # what the hook is for: stock sizes the job by torch.cuda.device_count(), 0 here, so the world is 2 x 0
    stock = make_cfg("--distributed-world-size", "16", "--distributed-port", "12345").distributed_training
    patching.original_of(dist_utils._infer_slurm_init)(stock, None)
    assert stock.distributed_world_size == 0
    cfg = make_cfg("--distributed-world-size", "16", "--distributed-port", "12345")
    assert _call_main_recorded(cfg, monkeypatch) == dict(
        how="spawn", nprocs=8, start_rank=8, init="tcp://node-a:12345", world=16, rank=None)


def test_slurm_one_task_per_task_runs_here_on_its_npu(npu_stand_in, slurm_job, monkeypatch):
    slurm_job(SLURM_NNODES=2, SLURM_NTASKS=16, SLURM_PROCID=11, SLURM_LOCALID=3)
    cfg = make_cfg("--distributed-world-size", "16", "--distributed-port", "12345")
    assert _call_main_recorded(cfg, monkeypatch) == dict(
        how="direct", device_id=3, init="tcp://node-a:12345", world=16, rank=11)


def test_slurm_single_node_cpu_job_without_port(slurm_job, monkeypatch):
    slurm_job(SLURM_NNODES=1, SLURM_NODEID=0, SLURM_NTASKS_PER_NODE="1(x1)", SLURM_JOB_ID=4242)
    cfg = make_cfg("--cpu", "--distributed-world-size", "2")
    got = _call_main_recorded(cfg, monkeypatch)
    port = int(got.pop("init").rsplit(":", 1)[1])
    assert got == dict(how="spawn", nprocs=2, start_rank=0, world=2, rank=None)
    # every task of the job derives the same port from the job id
    again = make_cfg("--cpu", "--distributed-world-size", "2")
    assert int(_call_main_recorded(again, monkeypatch)["init"].rsplit(":", 1)[1]) == port


@pytest.mark.parametrize("variables, flags, message", [
    (dict(SLURM_NNODES=2, SLURM_NODEID=0, SLURM_NTASKS_PER_NODE=1), ["--distributed-world-size", "16"],
     r"Slurm job on 2 nodes: pass --distributed-port"),
    (dict(SLURM_NNODES=2, SLURM_NODEID=0, SLURM_NTASKS_PER_NODE=1),
     ["--distributed-world-size", "32", "--distributed-port", "1234"],
     r"--distributed-world-size 32 on 2 node\(s\) needs 16 npu devices per node, 8 visible"),
    (dict(SLURM_NNODES=2, SLURM_NTASKS=16, SLURM_PROCID=0, SLURM_LOCALID=0),
     ["--distributed-world-size", "8", "--distributed-port", "1234"],
     r"--distributed-world-size 8 but the Slurm job runs 8 task\(s\) on each of 2 node\(s\)"),
    (dict(SLURM_NNODES=2, SLURM_NTASKS=15), ["--distributed-world-size", "16", "--distributed-port", "1234"],
     r"\$SLURM_NTASKS=15 is not a multiple of \$SLURM_NNODES=2"),
    (dict(SLURM_NNODES=1, SLURM_NTASKS_PER_NODE=1), ["--distributed-world-size", "8"],
     r"Slurm job without \$SLURM_NODEID"),
])
def test_slurm_inconsistent_jobs_are_refused(npu_stand_in, slurm_job, monkeypatch, variables, flags, message):
    slurm_job(**variables)
    with pytest.raises(RuntimeError, match=message):
        _call_main_recorded(make_cfg(*flags), monkeypatch)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_process_worker(cfg, out_dir):
    """Runs in each spawned worker: all_gather_list and a DDP-wrapped step, results to a json file per rank."""
    from fairseq.models.distributed_fairseq_model import DistributedFairseqModel

    rank = torch.distributed.get_rank()
    gathered = dist_utils.all_gather_list({"rank": rank, "word": "ab" * (rank + 1)})
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    wrapped = DistributedFairseqModel(cfg.distributed_training, model, dist_utils.get_data_parallel_group(),
                                      torch.device("cpu"))
    wrapped(torch.full((2, 3), float(rank + 1))).sum().backward()
    # what Trainer.load_checkpoint does on resume: rank 0 broadcasts the checkpoint state (cfg as DictConfig)
    state = {"cfg": OmegaConf.create({"common": {"seed": 5}}), "w": torch.ones(2)} if rank == 0 else None
    state = dist_utils.broadcast_object(state, src_rank=0, group=dist_utils.get_global_group())
    result = {"gathered": gathered, "backend": torch.distributed.get_backend(), "seed": state["cfg"].common.seed,
              "world": torch.distributed.get_world_size(), "grad": model.weight.grad.tolist()}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def test_two_cpu_processes_spawned_by_stock_call_main(tmp_path):
    cfg = make_cfg("--cpu", "--distributed-world-size", "2", "--distributed-port", str(_free_port()))
    with open_dict(cfg):
        cfg.distributed_training.ddp_backend = "pytorch_ddp"
    dist_utils.call_main(cfg, _two_process_worker, out_dir=str(tmp_path))
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in results:
        assert r["backend"] == "gloo" and r["world"] == 2 and r["seed"] == 5
        assert r["gathered"] == [{"rank": 0, "word": "ab"}, {"rank": 1, "word": "abab"}]
        # each rank saw inputs of 1s or 2s: DDP averages the per-rank gradients (2*1 and 2*2) -> 3
        assert r["grad"] == [[3.0, 3.0, 3.0]]


def test_token_blocks_in_eos_mode_under_numpy_2():
    """masked_lm --sample-break-mode eos builds its slices with np.compat.long, gone in numpy 2."""
    from fairseq.data import TokenBlockDataset

    sentences = [torch.tensor([5, 6, 2]), torch.tensor([7, 2]), torch.tensor([8, 9, 10, 2])]
    blocks = TokenBlockDataset(sentences, [3, 2, 4], block_size=8, pad=1, eos=2, break_mode="eos")
    assert [blocks[i].tolist() for i in range(len(blocks))] == [[5, 6, 2], [7, 2], [8, 9, 10, 2]]


def test_spawned_workers_are_hooked_before_fairseq_runs(tmp_path):
    """fairseq-train's main imports the plugin only after distributed init; the spawned worker must not wait."""
    from plugin_free_worker import record_worker_state

    cfg = make_cfg("--cpu", "--distributed-world-size", "2", "--distributed-port", str(_free_port()))
    assert cfg.distributed_training.distributed_backend == "auto"
    dist_utils.call_main(cfg, record_worker_state, out_dir=str(tmp_path))
    for rank in (0, 1):
        state = json.loads((tmp_path / f"plugin_free_rank{rank}.json").read_text())
        assert state == {"backend": "gloo", "configured": "gloo", "distributed_main_hooked": True}



# fairseq-train itself, with each batch's collation made slow inside torch: when training stops at --max-update the
# reading thread is in torch most of the time
_SLOW_COLLATE_TRAIN = """
import sys, torch
from fairseq.data import NestedDictionaryDataset
from fairseq_cli.train import cli_main

collater = NestedDictionaryDataset.collater
x = torch.randn(1500, 1500)


def slow_collater(self, samples):
    (x @ x).sum()
    return collater(self, samples)


NestedDictionaryDataset.collater = slow_collater
sys.argv = ["fairseq-train"] + sys.argv[1:]
cli_main()
"""


def test_fairseq_train_stopped_mid_epoch_exits_0_while_its_reading_thread_is_in_torch(tmp_path):
    """fairseq's batch-reading thread keeps reading after training stops at --max-update; when Python finalized
    while it was inside torch, fairseq-train aborted after "done training" (exit 134, "terminate called without an
    active exception": 6 runs of 6 without the hook). The hook ends the thread before finalization
    (fairseq_npu/hooks/data_thread.py)."""
    from glue_tiny_data import make_glue_dir, tiny_roberta_args

    data = make_glue_dir(tmp_path / "glue", {"train": 64, "valid": 8})
    args = tiny_roberta_args(data, "sentence_prediction_npu", extra=("--max-update", "2", "--log-interval", "1"))
    done = subprocess.run([sys.executable, "-c", _SLOW_COLLATE_TRAIN, *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "done training" in done.stderr and "terminate called" not in done.stderr
