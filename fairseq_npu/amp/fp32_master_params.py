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
