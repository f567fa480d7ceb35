"""Data-parallel evaluation of a checkpoint with throughput, for test/train_eval_8p.sh.

    python -m fairseq_npu.launch.evaluate DATA --user-dir fairseq_npu --task sentence_prediction \
        --path checkpoint_best.pt --valid-subset valid --batch-size 32 [--device-type npu] [--fp16]

fairseq-validate's flow (same parser, checkpoint loading, sharded batches, ``task.valid_step`` and the criterion's
``reduce_metrics``, so the metrics are the ones fairseq-train logs at validation), plus what it lacks: the model on
the plugin's device (npu included), half precision on any device, and timing. Under torchrun every rank evaluates
its shard; rank 0 prints one ``| eval | {json}`` line per subset with the metrics, the sample count and samples/s
(all ranks' samples after each rank's first batch, over the slowest rank's time, device synchronised).
"""

import json
import logging
import os
import sys
import time

import torch

logging.basicConfig(
    format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
    datefmt="%Y-%m-%d %H:%M:%S",
    level=os.environ.get("LOGLEVEL", "INFO").upper(),
    stream=sys.stdout,
    force=True,  # importing fairseq_npu (hence fairseq) may already have configured logging
)
logger = logging.getLogger("fairseq_npu.launch.evaluate")
record_logger = logging.getLogger("eval")


def _evaluate_subset(cfg, task, model, criterion, subset, backend, autocast, world, rank):
    from fairseq import utils

    task.load_dataset(subset, combine=False, epoch=1)
    dataset = task.dataset(subset)
    itr = task.get_batch_iterator(
        dataset=dataset, max_tokens=cfg.dataset.max_tokens, max_sentences=cfg.dataset.batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=cfg.dataset.skip_invalid_size_inputs_valid_test,
        required_batch_size_multiple=cfg.dataset.required_batch_size_multiple, seed=cfg.common.seed,
        num_shards=world, shard_id=rank, num_workers=cfg.dataset.num_workers,
        data_buffer_size=cfg.dataset.data_buffer_size,
    ).next_epoch_itr(shuffle=False)
    log_outputs, timed_samples, all_samples = [], 0, 0
    start = time.perf_counter()
    first_done = None
    for sample in itr:
        if not sample:  # the padding batch of a shorter shard
            continue
        if backend.type != "cpu":
            sample = utils.move_to_cuda(sample, device=backend.device())
        with torch.no_grad(), autocast():
            _loss, _size, log_output = task.valid_step(sample, model, criterion)
        log_outputs.append(log_output)
        all_samples += sample["nsentences"]
        if first_done is None:
            backend.synchronize()
            first_done = time.perf_counter()
        else:
            timed_samples += sample["nsentences"]
    backend.synchronize()
    end = time.perf_counter()
    if timed_samples == 0:  # a single batch: time it whole
        timed_samples, first_done = all_samples, start
    return log_outputs, timed_samples, end - (first_done or end), all_samples


def main(cfg, override_args=None):
    from fairseq import checkpoint_utils, utils
    from fairseq.distributed import utils as distributed_utils
    from fairseq.logging import metrics

    utils.import_user_module(cfg.common)
    from fairseq_npu import device, precision

    backend = device.set_backend(force_cpu=True) if cfg.common.cpu else device.get()
    distributed = cfg.distributed_training.distributed_world_size > 1
    world = distributed_utils.get_data_parallel_world_size() if distributed else 1
    rank = distributed_utils.get_data_parallel_rank() if distributed else 0

    overrides = vars(override_args) if override_args is not None else {}
    overrides.update(eval(getattr(override_args, "model_overrides", "{}") or "{}"))
    logger.info(f"loading model from {cfg.common_eval.path}")
    models, saved_cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [cfg.common_eval.path], arg_overrides=overrides, suffix=cfg.checkpoint.checkpoint_suffix
    )
    # the weights and autocast dtypes training used (--amp: bf16 on cpu, not fp16), from this run's flags
    policy = precision.policy(cfg.common, backend)
    model = models[0].eval().to(dtype=policy.weights_dtype()).to(backend.device())
    autocast = policy.autocast
    criterion = task.build_criterion(saved_cfg.criterion).eval()

    for subset in cfg.dataset.valid_subset.split(","):
        logs, samples, seconds, total = _evaluate_subset(cfg, task, model, criterion, subset, backend, autocast,
                                                         world, rank)
        if distributed:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, (logs, samples, seconds, total),
                                                group=distributed_utils.get_data_parallel_group())
        else:
            gathered = [(logs, samples, seconds, total)]
        all_logs = [log for g in gathered for log in g[0]]
        with metrics.aggregate(new_root=True) as agg:
            task.reduce_metrics(all_logs, criterion)
            values = agg.get_smoothed_values()
        slowest = max(g[2] for g in gathered)
        record = {"subset": subset, "world_size": world, "samples": sum(g[3] for g in gathered),
                  "samples_per_second": round(sum(g[1] for g in gathered) / slowest, 3) if slowest > 0 else None,
                  "seconds": round(slowest, 6)}
        record.update({k: (round(float(v), 6) if isinstance(v, (int, float)) or torch.is_tensor(v) else v)
                       for k, v in values.items() if k not in ("pred", "targ", "wps")})  # wps: timed above, not here
        if rank == 0:
            record_logger.info(json.dumps(record))


def cli_main(argv=None):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils

    parser = options.get_validation_parser()
    args = options.parse_args_and_arch(parser, input_args=argv)
    override_parser = options.get_validation_parser()
    override_args = options.parse_args_and_arch(override_parser, input_args=argv, suppress_defaults=True)
    distributed_utils.call_main(convert_namespace_to_omegaconf(args), main, override_args=override_args)


if __name__ == "__main__":
    cli_main()
