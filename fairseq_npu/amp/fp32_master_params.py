"""The flat fp32 master copy of ``--fp16`` (O2) training, on any device.

Stock ``FP16Optimizer.build_fp32_params`` keys the flat copy by ``torch.cuda.current_device()``, which fails
without cuda. The rest of the optimizer looks the copy up by ``param.device.index`` (None on cpu, the device
index on npu), so the copy is built the same way under that key.
"""

import torch


def build_flat_fp32_params(params):
    """{device index: one fp32 Parameter holding every param, with a zeroed .grad of the same size}."""
    index = params[0].device.index
    if any(p.device.index != index or p.device.type != params[0].device.type for p in params):
        raise RuntimeError("fairseq_npu: --fp16 with flattened grads needs all parameters on one device "
                           "(use --fp16-no-flatten-grads)")
    total = sum(p.numel() for p in params)
    flat = torch.empty(total, dtype=torch.float32, device=params[0].device)
    offset = 0
    for p in params:
        flat[offset:offset + p.numel()].copy_(p.data.view(-1))
        offset += p.numel()
    flat = torch.nn.Parameter(flat)
    flat.grad = torch.zeros_like(flat.data)
    return {index: flat}


# ---------------------------------------------------------------------------------------------------------------
# syncs between the fp16 model and the flat master copy, as multi-tensor copies (with --optimizer fused_adamw)
#
# Stock FP16Optimizer copies gradient by gradient into the flat fp32 .grad before the norm, and parameter by
# parameter back after the step, through .data, slices and views: about 12 operators per parameter, 2,400 per
# update for roberta_base, each one host work and the copies each a kernel launch on a device. Here each
# direction is one torch._foreach_copy_ between the parameters and cached views of the flat buffers.


def _shaped_views(flat: torch.Tensor, params, cache: dict, name: str):
    """Views of the 1-D ``flat`` shaped like ``params``, in order; rebuilt when the buffer or the shapes change
    (the cached views keep the buffer alive, so an unchanged data_ptr is the same buffer)."""
    key = (flat.data_ptr(), flat.numel(), tuple(tuple(p.shape) for p in params))
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        pieces = torch.split(flat.detach(), [p.numel() for p in params])
        hit = cache[name] = (key, [v.view(p.shape) for v, p in zip(pieces, params)])
    return hit[1]


def _by_device(params):
    out = {}
    for p in params:
        out.setdefault(p.device.index, []).append(p)
    return out


def sync_grads_to_fp32(optimizer) -> None:
    """``_sync_fp16_grads_to_fp32`` for flat master params: copies each fp16 gradient (zeros where there is none,
    as stock) into its slice of the flat fp32 gradient."""
    if not optimizer._needs_sync:
        return
    cache = optimizer.__dict__.setdefault("_fairseq_npu_views", {})
    trainable = _by_device(p for p in optimizer.fp16_params if p.requires_grad)
    with torch.no_grad():
        for index, flat in optimizer.fp32_params.items():
            params = trainable.get(index, [])
            views = _shaped_views(flat.grad, params, cache, f"grad{index}")
            pairs = [(v, p.grad) for v, p in zip(views, params) if p.grad is not None]
            missing = [v for v, p in zip(views, params) if p.grad is None]
            if pairs:
                torch._foreach_copy_([v for v, _ in pairs], [g for _, g in pairs])
            if missing:
                torch._foreach_zero_(missing)
    optimizer._needs_sync = False


def sync_params_to_fp16(optimizer) -> None:
    """``_sync_fp32_params_to_fp16`` for flat master params: every fp16 parameter from its slice of the copy."""
    cache = optimizer.__dict__.setdefault("_fairseq_npu_views", {})
    every = _by_device(optimizer.fp16_params)
    with torch.no_grad():
        for index, flat in optimizer.fp32_params.items():
            params = every.get(index, [])
            if params:
                torch._foreach_copy_(params, _shaped_views(flat, params, cache, f"param{index}"))
