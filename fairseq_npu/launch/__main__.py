"""Command line of the launch helpers, called by test/common.sh.

``device``: print the device type and how many of it this node has (``npu 8``), as fairseq_npu.device chooses it.
``plan``: write OUTPUT_DIR/plan.json and OUTPUT_DIR/fairseq_args (the fairseq command line, NUL-separated), and a
summary.json with status ``running`` in place of an earlier run's.
``summarize``: read the plan and the run's log, write OUTPUT_DIR/summary.json, print the final lines; exit 1 when the
run failed or was interrupted. It never ends in a traceback: what it cannot read is the summary's ``reason``.
``--files-prefix eval_``: evaluation's own eval_plan.json, eval_fairseq_args and eval_summary.json, so that
evaluating into a training run's folder keeps that run's files.
``seeds``: check a ``--seeds`` list; summarize the runs of a multi-seed launch (fairseq_npu/launch/seeds.py).
"""

import argparse
import json
import os
import sys
import traceback

from fairseq_npu import precision

from . import command, recipes, seeds, summary, training_log

PLAN, ARGS = "plan.json", "fairseq_args"


def _plan(opts, extra):
    req = command.LaunchRequest(
        mode=opts.mode, data=os.path.abspath(opts.data), model=opts.model, task=opts.task, device=opts.device,
        world_size=opts.world_size, output_dir=os.path.abspath(opts.output_dir), batch_size=opts.batch_size,
        lr=opts.lr, max_epoch=opts.max_epoch, max_update=opts.max_update, max_tokens=opts.max_tokens,
        num_classes=opts.num_classes, restore_file=opts.restore_file and os.path.abspath(opts.restore_file),
        use_apex=opts.use_apex, opt_level=opts.opt_level, precision=opts.precision, preset=opts.preset,
        extra=tuple(extra),
    )
    args, plan = command.build(req)
    plan.update(nnodes=opts.nnodes, nproc_per_node=opts.world_size // opts.nnodes)
    os.makedirs(req.output_dir, exist_ok=True)
    with open(os.path.join(req.output_dir, opts.files_prefix + PLAN), "w", encoding="utf-8") as f:
        json.dump(plan, f, indent=2, sort_keys=True)
    with open(os.path.join(req.output_dir, opts.files_prefix + ARGS), "w", encoding="utf-8") as f:
        f.write("\0".join(args) + "\0")
    summary.write(req.output_dir, summary.running(plan), opts.files_prefix + summary.SUMMARY)
    if opts.mode != "eval":
        print(
            f"{plan['model']} {plan['task']} {opts.mode}: {plan['world_size']} x {plan['device_type']}, global batch "
            f"{plan['global_batch_size']}, lr {plan['lr']}, {plan['total_num_update']} scheduled updates "
            f"({plan['warmup_updates']} warm-up, {plan['schedule_epochs']} epochs"
            f"{', published schedule' if plan['published_schedule'] else ', scaled from the published schedule'})"
        )


def _device(opts):
    from fairseq_npu import device  # torch (and torch_npu), not fairseq

    try:
        backend = device.select(opts.device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device={opts.device}: {err}") from None
    count = len(os.sched_getaffinity(0)) if backend.type == "cpu" else backend.device_count()
    print(f"{backend.type} {count}")


def _summarize(opts) -> int:
    name = opts.files_prefix + summary.SUMMARY
    try:
        path = os.path.join(opts.output_dir, opts.files_prefix + PLAN)
        with open(path, encoding="utf-8") as f:
            try:
                plan = json.load(f)
            except ValueError as err:
                raise ValueError(f"{path}: not JSON ({err})") from None
        with open(os.path.join(opts.output_dir, opts.files_prefix + ARGS), encoding="utf-8") as f:
            command = [a for a in f.read().split("\0") if a]
        log = training_log.parse_file(opts.log)
        result = summary.build(plan, log, e2e_seconds=opts.e2e_seconds, exit_code=opts.exit_code,
                               log_path=os.path.abspath(opts.log), command=command, warmup_updates=opts.fps_warmup,
                               signal_name=opts.signal)
    except (OSError, ValueError) as err:  # a plan or log that cannot be read: the run's record says so
        result = _unsummarized(opts, f"could not read the run's files: {err}")
    except Exception as err:  # noqa: BLE001  a bug of this module must not cost the run its summary.json
        traceback.print_exc()
        result = _unsummarized(opts, f"summary step failed ({type(err).__name__}: {err}); a fairseq_npu bug, "
                                     "please report it with the log")
    path = summary.write(opts.output_dir, result, name)
    print(f"summary: {path}")
    print("\n".join(summary.final_lines(result)))
    if result["status"] != "ok":
        verb = "was interrupted" if result["status"] == "interrupted" else "failed"
        print(f"{opts.prog}: error: the run {verb}: {result['reason']}", file=sys.stderr)
        return 1
    return 0


def _unsummarized(opts, reason: str) -> dict:
    status = "interrupted" if opts.signal else "failed"
    return {"mode": opts.mode, "status": status, "reason": reason, "exit_code": opts.exit_code,
            "log": os.path.abspath(opts.log), "e2e_seconds": round(opts.e2e_seconds, 3)}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(prog="fairseq_npu.launch", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("device", help="device type and count on this node (the choice training makes)")
    dev.add_argument("--device", default="auto", help="auto, npu, cuda or cpu")
    plan = sub.add_parser("plan", help="fairseq command line and plan.json for a launch request")
    plan.add_argument("--mode", choices=recipes.MODES, required=True)
    plan.add_argument("--data", required=True)
    plan.add_argument("--model", default="roberta")
    plan.add_argument("--task", default="SST-2")
    plan.add_argument("--device", default="cpu")
    plan.add_argument("--world-size", type=int, default=1)
    plan.add_argument("--nnodes", type=int, default=1)
    plan.add_argument("--output-dir", required=True)
    plan.add_argument("--batch-size", type=int)
    plan.add_argument("--lr", type=float)
    plan.add_argument("--max-epoch", type=int)
    plan.add_argument("--max-update", type=int)
    plan.add_argument("--max-tokens", type=int)
    plan.add_argument("--num-classes", type=int)
    plan.add_argument("--restore-file")
    plan.add_argument("--use-apex", action="store_true")
    plan.add_argument("--opt-level", default=precision.DEFAULT_OPT_LEVEL, choices=precision.OPT_LEVELS)
    plan.add_argument("--precision", default="auto", choices=recipes.PRECISIONS)
    plan.add_argument("--preset", default=recipes.PRESETS[0], choices=recipes.PRESETS)
    summ = sub.add_parser("summarize", help="summary.json and the final lines from a run's log")
    summ.add_argument("--output-dir", required=True)
    summ.add_argument("--log", required=True)
    summ.add_argument("--e2e-seconds", type=float, required=True)
    summ.add_argument("--exit-code", type=int, default=0)
    summ.add_argument("--fps-warmup", type=int, default=None, help="updates excluded from FPS (default: see docs)")
    summ.add_argument("--signal", default=None, help="the launch script was stopped by this signal (SIGTERM...)")
    summ.add_argument("--mode", choices=recipes.MODES, required=True)
    summ.add_argument("--prog", default="fairseq_npu.launch", help="the script named in the error line")
    for p in (plan, summ):
        p.add_argument("--files-prefix", default="", help="prefix of the files written (eval_ for evaluation)")
    seeds.add_parser(sub)
    opts = parser.parse_args(argv)
    try:
        return {"device": _device, "plan": lambda o: _plan(o, extra), "summarize": _summarize,
                "seeds": seeds.cli}[opts.command](opts) or 0
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
