"""One update of fairseq's Trainer, from the batch to the new weights, with no host sync (``--update-mode device``).

``Trainer.train_step`` (hooked, fairseq_npu/hooks/trainer.py) hands the batch to ``DeviceUpdate.train_step`` when
the run asked for it. An update here is, in this order and all on the device:

1. the gradients are cleared (in place when graphs replay, so they keep their addresses);
2. the task's forward and backward (``task.train_step``: its own loss, logging and ``ignore_grad``) under the
   autocast of the one precision policy (``fairseq_npu.precision``), the loss multiplied by the device loss
   scale when float16 computes;
3. ``--fp16`` / ``--bf16`` (O2): the half gradients copied into the flat fp32 master gradient;
4. the gradients' norm taken (multi-tensor) and multiplied by 1 / (loss scale x sample size), a non-finite norm
   recorded in ``found_inf``; the gradients themselves are divided inside the optimizer kernel (its
   ``grad_scale``), or, with ``--clip-norm`` or another kernel, multiplied first and clipped;
5. the optimizer step: torch's fused AdamW kernel (its decoupled weight decay included, and the division by
   loss scale x sample size of step 4 when nothing is clipped), which skips the whole step on the device when
   ``found_inf`` is set;
6. O2: the new fp32 masters copied into the half weights;
7. the loss scale moved (back off / grow), the skip counters advanced (``update/loss_scale.py``).

The host never waits for the device during an update: the learning rate goes to the device as a tensor the
scheduler's value is written into, metrics are logged as device tensors, and the loss scale, the skip count and
the divergence check are read back every ``--log-interval`` updates, when fairseq logs, and before a checkpoint is
written. A skipped step still counts as an update for the schedule (as in torch's GradScaler loop); it shows in
the ``overflows`` count beside ``loss_scale``.

The optimizer step needs ``--optimizer fused_adamw`` running torch's fused kernel (cpu, cuda). Its other kernels
(torch_npu's NpuFusedAdamW, foreach, forloop) cannot skip a step on the device: the update reads ``found_inf``
once before their step, one host sync. Runs the update cannot hold (another optimizer, EMA, BMUF, several
processes, a model-parallel or TPU run) keep fairseq's own ``train_step``; the log says why, once.

``update/graphs.py`` captures ``DeviceUpdate.body`` per pad bucket and replays it.
"""

import contextlib
import logging
from typing import List, Optional

import torch
from fairseq.logging import metrics

from fairseq_npu import device
from fairseq_npu import precision as precision_policy
from fairseq_npu.errors import MAX_CONSECUTIVE_SKIPS, TrainingDiverged
from fairseq_npu.models.mask_every_layer_encoder import use_mask_every_layer
from fairseq_npu.models.native_gelu import use_native_gelu
from fairseq_npu.models.uniform_dropout import use_uniform_dropout
from fairseq_npu.optim.fused_adamw import FairseqFusedAdamW
from fairseq_npu.optim.multi_tensor_grads import clip_grad_norm_, dot_norm
from fairseq_npu.update.loss_scale import DeviceLossScale, LossScaleConfig

logger = logging.getLogger(__name__)



def unsupported_reason(trainer) -> Optional[str]:
    """Why this run must keep fairseq's own train_step, or None."""
    cfg = trainer.cfg
    optimizer = trainer.optimizer
    inner = _adamw_of(optimizer)
    checks = [
        (inner is None, f"--optimizer {cfg.optimizer._name if 'optimizer' in cfg else '?'} (needs fused_adamw)"),
        (trainer.data_parallel_world_size > 1, "more than one process (data parallel)"),
        (cfg.ema.store_ema, "--store-ema"),
        (cfg.optimization.use_bmuf, "--use-bmuf"),
        (trainer.tpu, "--tpu"),
        (cfg.common.model_parallel_size > 1, "--model-parallel-size > 1"),
        (cfg.common.memory_efficient_fp16 or cfg.common.memory_efficient_bf16, "--memory-efficient-fp16/bf16"),
    ]
    for failed, why in checks:
        if failed:
            return why
    return None


def _adamw_of(optimizer) -> Optional[FairseqFusedAdamW]:
    """The fused_adamw optimizer inside fairseq's wrappers (AMPOptimizer, FP16Optimizer), or None."""
    inner = getattr(optimizer, "fp32_optimizer", optimizer)
    return inner if isinstance(inner, FairseqFusedAdamW) else None


class _BackwardThroughScale:
    """What ``task.train_step`` gets as its optimizer: it autocasts as the run's precision says and runs the
    backward pass of the scaled loss. The task keeps its own forward, loss and logging."""

    def __init__(self, update: "DeviceUpdate"):
        self._update = update

    def autocast(self):
        """Read by fairseq_npu.amp.autocast_for: the run's autocast (without its weight cache while capturing:
        cached casts would outlive the graph)."""
        return self._update.precision.autocast(cache_enabled=not self._update.is_capturing)

    def backward(self, loss):
        self._update.loss_scale.scaled(loss).backward()


class DeviceUpdate:
    def __init__(self, trainer):
        self.trainer = trainer
        cfg = trainer.cfg
        optimizer = trainer.optimizer  # builds it (fairseq builds lazily)
        self.optimizer = optimizer
        self.adamw = _adamw_of(optimizer)
        self.o2 = cfg.common.fp16 or cfg.common.bf16
        self.precision = precision_policy.policy(cfg.common)
        self.device = trainer.device
        self.device_type = device.get().type  # the selected device (the stand-in's npu keeps tensors on the host)
        self.fused = self.adamw.impl == "fused"
        self.clip_norm = float(cfg.optimization.clip_norm)
        self.log_interval = max(1, int(cfg.common.log_interval))
        self.zero_in_place = False  # graphs need gradients that keep their addresses
        self.grad_divisor = None  # this step's (loss scale x sample size) for the fused kernel to divide by
        self.is_capturing = False
        self.on_read_out = None  # called after each log-step read-out (the graph report)
        self.loss_scale = self._build_loss_scale(cfg)
        self.lr = {}  # param group index -> device tensor holding the scheduler's learning rate
        self._adapter = _BackwardThroughScale(self)
        # RoBERTa's encoder asks the device whether a batch has padding, once per layer: not in this update
        use_mask_every_layer(trainer.model)
        use_native_gelu(trainer.model, self.device_type)  # the same numbers without fairseq's float32 copies
        use_uniform_dropout(trainer.model, self.device_type)  # cpu: masks from 16 random bits, not doubles
        half = str(self.precision.autocast_dtype or self.precision.weights)
        logger.info(f"update: one device update per step ({half}, loss scaling "
                    f"{'on' if self.loss_scale.config.enabled else 'off'}, optimizer kernel {self.adamw.impl}"
                    f"{'' if self.fused else ', one host read of found_inf per step'}); "
                    f"loss scale and skips read every {self.log_interval} updates")

    # ---------------------------------------------------------------------------------------------------------
    # construction

    def _build_loss_scale(self, cfg) -> DeviceLossScale:
        common = cfg.common
        float16 = common.fp16 or (common.amp and self.precision.autocast_dtype == "float16")
        from fairseq_npu.amp.grad_scaler import scale_window  # fairseq's window flags, read one way

        config = LossScaleConfig(
            enabled=bool(float16), init_scale=float(common.fp16_init_scale), window=scale_window(cfg),
            threshold=common.threshold_loss_scale, min_scale=float(common.min_loss_scale),
        )
        scaler = getattr(self.optimizer, "scaler", None)
        if common.amp and isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled():
            # the AMP optimizer's GradScaler keeps the truth: its state_dict is what checkpoints save
            scaler._lazy_init_scale_growth_tracker(self.device)
            return DeviceLossScale(config, self.device, scaler._scale, scaler._growth_tracker)
        scale = DeviceLossScale(config, self.device)
        host = getattr(scaler, "loss_scale", None)  # --fp16 (O2): fairseq's DynamicLossScaler, maybe resumed
        if config.enabled and host is not None:
            scale.scale.fill_(float(host))
            scale.growth_tracker.fill_(int(getattr(scaler, "fairseq_npu_growth_tracker", 0)))
        overflows = getattr(self.optimizer, "overflows", getattr(scaler, "fairseq_npu_overflows", 0))
        scale.overflows.fill_(float(overflows or 0))
        return scale

    # ---------------------------------------------------------------------------------------------------------
    # the update

    def params(self) -> List[torch.Tensor]:
        """The tensors the optimizer updates (the flat fp32 masters under O2)."""
        return list(self.adamw.params)

    def model_params(self) -> List[torch.Tensor]:
        return [p for p in self.trainer.model.parameters() if p.requires_grad] + \
            [p for p in self.trainer.criterion.parameters() if p.requires_grad]

    def zero_grad(self) -> None:
        if self.zero_in_place:
            grads = [p.grad for p in self.model_params() + self.params() if p.grad is not None]
            if grads:
                torch._foreach_zero_(grads)
            if self.o2:
                self.optimizer._needs_sync = False
        else:
            self.optimizer.zero_grad()

    def forward_backward(self, samples, dummies) -> tuple:
        """The task's forward and backward for each (sub)batch; returns (logging outputs, sample size)."""
        trainer = self.trainer
        logging_outputs, sample_size = [], 0
        for sample, is_dummy in zip(samples, dummies):
            with torch.autograd.profiler.record_function("forward-backward"):
                loss, sample_size_i, logging_output = trainer.task.train_step(
                    sample=sample, model=trainer.model, criterion=trainer.criterion, optimizer=self._adapter,
                    update_num=trainer.get_num_updates(), ignore_grad=is_dummy,
                )
            del loss
            logging_outputs.append(logging_output)
            sample_size += 0 if is_dummy else sample_size_i
        return logging_outputs, sample_size

    def step(self, sample_size) -> torch.Tensor:
        """Everything after the backward pass (steps 3-7 of the module docstring); returns the gradient norm."""
        if self.o2:
            self.optimizer._needs_sync = True
            self.optimizer._sync_fp16_grads_to_fp32()
        params = self.params()
        grads = [p.grad for p in params if p.grad is not None]
        divisor = float(sample_size or 1.0)  # (sample_size or 1): as stock, a zero gradient stays zero
        scaled = self.loss_scale.config.enabled
        with torch.no_grad():
            # 1 / (loss scale x sample size): what the gradients are scaled by
            factor = self.loss_scale.gradient_factor(1.0 / divisor) if scaled else 1.0 / divisor
            if grads and self.clip_norm <= 0 and self._kernel_divides(grads):
                # nothing clipped: the norm is logged and checked for non-finite values only; taken of the raw
                # gradients (times the factor), which the fused kernel divides as it reads them: no pass of its own
                # (on the cpu from BLAS dots, half the time of torch's norm; accelerators keep their fused norm)
                norm = dot_norm(grads) if grads[0].device.type == "cpu" else clip_grad_norm_(params, 0.0)
                grad_norm = norm * factor
                self.grad_divisor = self.loss_scale.scale * divisor if scaled else torch.full(
                    (), divisor, dtype=torch.float32, device=grads[0].device)
            elif grads and self.o2:
                # the norm of the raw gradients times the factor, as fairseq's FP16Optimizer computes it (for a
                # power-of-two factor bit for bit the norm of the scaled gradients)
                grad_norm = clip_grad_norm_(params, 0.0) * factor
                if self.clip_norm > 0:
                    torch._foreach_mul_(grads, factor * self._o2_clip_coefficient(grad_norm))
                else:
                    torch._foreach_mul_(grads, factor)
            else:
                # stock's order with fp32 weights: scale, then take the norm and clip
                if grads:
                    torch._foreach_mul_(grads, factor)
                grad_norm = clip_grad_norm_(params, self.clip_norm)
            self.loss_scale.check(grad_norm)
            self._optimizer_step()
        if self.o2:
            self.optimizer._sync_fp32_params_to_fp16()
        self.loss_scale.after_step()
        return grad_norm

    def _o2_clip_coefficient(self, grad_norm: torch.Tensor) -> torch.Tensor:
        """fairseq's FP16Optimizer clipping: max / norm above the max with loss scaling (--fp16), else
        min(1, max / (norm + 1e-6)); a device tensor (stock compares on the host)."""
        if self.loss_scale.config.enabled:
            return torch.where(grad_norm > self.clip_norm, self.clip_norm / grad_norm, torch.ones_like(grad_norm))
        return (self.clip_norm / (grad_norm + 1e-6)).clamp_(max=1)

    def _kernel_divides(self, grads) -> bool:
        """Whether torch's fused kernel can take the gradients' 1 / (loss scale x sample size) as its grad_scale:
        dense, contiguous float32 gradients on one device."""
        return self.fused and all(g.dtype == torch.float32 and g.device == grads[0].device and not g.is_sparse
                                  and g.is_contiguous() for g in grads)

    def _lr_tensor(self, index: int, group) -> torch.Tensor:
        value = group["lr"]
        held = self.lr.get(index)
        if held is None:
            held = self.lr[index] = torch.zeros((), dtype=torch.float32, device=self.device)
        if not torch.is_tensor(value) and not self.is_capturing:
            held.fill_(float(value))  # the scheduler's value (a host float): a kernel argument, not a sync
        return held

    @contextlib.contextmanager
    def capturing(self):
        """While a graph records ``body``: the optimizer may be captured, the learning rate is read from its
        tensor (filled before each replay, ``before_replay``), autocast caches nothing."""
        groups = self.adamw.optimizer.param_groups
        for index, group in enumerate(groups):
            self._lr_tensor(index, group)
        capturable = [group.get("capturable", False) for group in groups]
        self.is_capturing = True
        for group in groups:
            group["capturable"] = True
        try:
            yield
        finally:
            self.is_capturing = False
            for group, value in zip(groups, capturable):
                group["capturable"] = value

    def before_replay(self) -> None:
        """What ``body`` does on the host each update, which a replay skips: the scheduler's learning rate into
        its device tensor, the step count fairseq's eps placement reads."""
        for index, group in enumerate(self.adamw.optimizer.param_groups):
            self._lr_tensor(index, group)
            if any(p.grad is not None for p in group["params"]):
                self.adamw.advance_step(group)

    def _optimizer_step(self) -> None:
        adamw = self.adamw
        if not self.fused:
            # kernels that cannot skip on the device: one host read, then fused_adamw's own step
            if not bool(self.loss_scale.found_inf.item()):
                adamw.step()
            return
        torch_optimizer = adamw.optimizer
        floats = []
        for index, group in enumerate(torch_optimizer.param_groups):
            floats.append(group["lr"])
            if not any(p.grad is not None for p in group["params"]):
                continue
            adamw.advance_step(group)  # fairseq's eps placement, as the kernel's eps for this step
            if self.is_capturing:
                # a graph reads the learning rate from its device tensor, written before each replay
                group["lr"] = self._lr_tensor(index, group)
                # and replays the eps it was captured with: --adam-eps itself (torch's placement, after the bias
                # correction), which fairseq's eps / sqrt(1 - beta2 ** step) approaches; the capture step's value
                # would stay 3.5x (beta2 0.98) to 16x (0.999) too large for the rest of the run
                group["eps"] = group["fairseq_eps"]
        torch_optimizer.found_inf = self.loss_scale.found_inf
        torch_optimizer.grad_scale, self.grad_divisor = self.grad_divisor, None
        try:
            torch_optimizer.step()
        finally:
            torch_optimizer.found_inf = torch_optimizer.grad_scale = None
            for group, value in zip(torch_optimizer.param_groups, floats):
                group["lr"] = value  # fairseq's scheduler keeps reading and writing a float

    # ---------------------------------------------------------------------------------------------------------
    # what fairseq sees of an update

    def log(self, logging_outputs, sample_size, grad_norm) -> dict:
        """Stock's per-update metrics, logged as device tensors (read when fairseq prints them)."""
        trainer = self.trainer
        finite = 1.0 - self.loss_scale.found_inf
        metrics.log_speed("ups", 1.0, priority=100, round=2)
        # stock averages the finite norms only. A tensor weight would make fairseq's meter compare it with 0 on the
        # host, so the finite norms and their count are summed in hidden meters (fairseq's own SumMeter, which
        # checkpoints save) and divided when fairseq prints
        metrics.log_scalar_sum(_GNORM_SUM, torch.nan_to_num(grad_norm, nan=0.0, posinf=0.0) * finite)
        metrics.log_scalar_sum(_GNORM_COUNT, finite)
        metrics.log_derived("gnorm", _finite_norm_average, priority=400)
        if self.clip_norm > 0:
            metrics.log_scalar("clip", (grad_norm > self.clip_norm).float() * 100.0, priority=500, round=1)
        if self.loss_scale.config.enabled:
            metrics.log_scalar("loss_scale", self.loss_scale.scale, priority=700, round=4, weight=0)
        metrics.log_scalar("overflows", self.loss_scale.overflows, priority=710, round=0, weight=0)
        trainer.task.reduce_metrics(logging_outputs, trainer.get_criterion())
        return {"sample_size": sample_size, "loss_scale": self.loss_scale.scale, "gnorm": grad_norm}

    def train_step(self, samples, run_body=None, prepare=True) -> dict:
        """fairseq's ``Trainer.train_step`` for this run. ``run_body(samples, dummies)`` replaces the forward,
        backward and step (update/graphs.py replays a graph there, from the batch as loaded: ``prepare``
        False leaves it on the host)."""
        trainer = self.trainer
        trainer._set_seed()
        trainer.model.train()
        trainer.criterion.train()
        metrics.log_start_time("train_wall", priority=800, round=0)
        prepared = [trainer._prepare_sample(s) for s in samples] if prepare else [(s, False) for s in samples]
        batches = [s for s, _ in prepared]
        dummies = [d for _, d in prepared]
        body = run_body or self.body
        logging_outputs, sample_size, grad_norm = body(batches, dummies)
        trainer.set_num_updates(trainer.get_num_updates() + 1)
        if trainer.cuda and trainer.cuda_env is not None:
            gb_used = torch.cuda.max_memory_allocated() / 1024 ** 3
            torch.cuda.reset_peak_memory_stats()
            metrics.log_scalar("gb_free", trainer.cuda_env.total_memory_in_GB - gb_used, priority=1500, round=1,
                               weight=0)
        result = self.log(logging_outputs, sample_size, grad_norm)
        if trainer.get_num_updates() % self.log_interval == 0:
            self.read_out()
            if self.on_read_out is not None:
                self.on_read_out()
        return result

    def body(self, batches, dummies):
        """One eager update: zero, forward and backward, step. Returns (logging outputs, sample size, norm)."""
        self.zero_grad()
        logging_outputs, sample_size = self.forward_backward(batches, dummies)
        grad_norm = self.step(sample_size)
        return logging_outputs, sample_size, grad_norm

    # ---------------------------------------------------------------------------------------------------------
    # the host's view, every --log-interval updates and before a checkpoint

    def read_out(self) -> None:
        """Copy the device counters to the objects fairseq and checkpoints read, and stop a diverged run."""
        reading = self.loss_scale.read()
        scaler = getattr(self.optimizer, "scaler", None)
        if reading.scale is not None and hasattr(scaler, "loss_scale") and self.loss_scale.config.enabled:
            scaler.loss_scale = reading.scale  # fairseq's DynamicLossScaler (O2): what its checkpoint saves
        if hasattr(self.optimizer, "overflows"):
            self.optimizer.overflows = reading.overflows  # DeviceAMPOptimizer saves it with the scaler
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            scaler.fairseq_npu_overflows = reading.overflows  # saved with the scaler's counters (O2)
            scaler.fairseq_npu_growth_tracker = int(self.loss_scale.growth_tracker.item())
        config = self.loss_scale.config
        if reading.consecutive >= MAX_CONSECUTIVE_SKIPS:
            raise TrainingDiverged(
                f"training diverged: the last {reading.consecutive} updates had non-finite gradients and were "
                f"skipped (update {self.trainer.get_num_updates()}, {reading.overflows} skipped in all"
                + (f", loss scale {reading.scale:g}" if config.enabled else "") + "); lower --lr or use fp32")
        if config.enabled and reading.scale < config.min_scale:
            raise TrainingDiverged(
                f"training diverged: the loss scale fell to {reading.scale:g}, below --min-loss-scale "
                f"{config.min_scale:g} (update {self.trainer.get_num_updates()}); lower --lr or use fp32")


_GNORM_SUM, _GNORM_COUNT = "_update_gnorm_sum", "_update_gnorm_count"  # hidden meters ("_" is not printed)


def _finite_norm_average(meters) -> float:
    count = float(meters[_GNORM_COUNT].sum)
    return round(float(meters[_GNORM_SUM].sum) / count, 3) if count > 0 else 0.0
