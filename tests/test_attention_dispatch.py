"""RoBERTa self-attention and torch's fused attention, stock and with ``--sdpa-attention``.

Stock fairseq 0.12.3 already gets there: its MultiheadAttention calls ``F.multi_head_attention_forward`` (the
encoder layers pass ``key_padding_mask`` and ``need_weights=False``), which hands ``scaled_dot_product_attention``
the padding mask as an additive float mask. ``--sdpa-attention`` (sentence_prediction_npu) makes it one call with
a boolean mask, the form torch_npu fuses; these tests pin both dispatches, that padding is honoured, and that the
option changes neither the parameters (checkpoints load both ways) nor the outputs and gradients (1e-5, fp32)."""

from pathlib import Path

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import fairseq_npu  # noqa: F401  (the task and the hooks, as in a real run)
from benchmarks.op_counter import OpCounter
from fairseq_npu.models.sdpa_self_attention import SdpaSelfAttention
from glue_tiny_data import make_glue_dir

USER_DIR = str(Path(fairseq_npu.__file__).parent)
LAYERS = 2
TOL = 1e-5
CUDA_FUSED = {"_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_cudnn_attention"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_glue_dir(tmp_path_factory.mktemp("attn"), {"train": 16, "valid": 4}, min_len=3, max_len=20)


def build(data, *extra, dropout="0.1"):
    """A tiny RoBERTa from sentence_prediction_npu (seed 0) and a padded batch of 8 sentences."""
    argv = [str(data), "--user-dir", USER_DIR, "--cpu", "--task", "sentence_prediction_npu", "--criterion",
            "sentence_prediction", "--arch", "roberta", "--encoder-layers", str(LAYERS), "--encoder-embed-dim", "32",
            "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4", "--max-positions", "32",
            "--num-classes", "2", "--init-token", "0", "--batch-size", "8", "--dropout", dropout,
            "--attention-dropout", dropout, *extra]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(0)
    model = task.build_model(cfg.model)
    dataset = task.dataset("train")
    tokens = dataset.collater([dataset[i] for i in range(8)])["net_input"]["src_tokens"]
    assert tokens.eq(task.source_dictionary.pad()).any()  # the batch has padding to mask
    return model, tokens, task.source_dictionary.pad()


def classify(model, tokens):
    return model(tokens, features_only=True, classification_head_name="sentence_classification_head")[0]


@pytest.mark.parametrize("extra", [(), ("--sdpa-attention",)], ids=["stock", "sdpa"])
def test_cpu_inference_runs_one_fused_attention_per_layer(data, extra):
    model, tokens, _ = build(data, *extra)
    model.eval()
    with torch.no_grad(), OpCounter() as ops:
        classify(model, tokens)
    assert ops.names["_scaled_dot_product_flash_attention_for_cpu"] == LAYERS, dict(ops.names)
    assert not [name for name in ops.names if "softmax" in name]
    if extra:  # no per-layer bias concatenation or float-mask building left
        assert ops.names["cat"] == 0 and ops.names["masked_fill_"] == 0, dict(ops.names)


@pytest.mark.parametrize("extra", [(), ("--sdpa-attention",)], ids=["stock", "sdpa"])
def test_padding_is_masked(data, extra):
    """Each sentence scores the same alone (no padding) as inside the padded batch."""
    model, tokens, pad = build(data, *extra)
    model.eval()
    with torch.no_grad():
        batched = classify(model, tokens)
        for row in range(tokens.size(0)):
            alone = tokens[row][tokens[row].ne(pad)].unsqueeze(0)  # right-padded: the real tokens come first
            assert torch.allclose(classify(model, alone)[0], batched[row], atol=TOL), row


def test_sdpa_option_keeps_parameters_outputs_and_gradients(data, monkeypatch):
    stock, tokens, _ = build(data, dropout="0.0")
    ours, _, _ = build(data, "--sdpa-attention", dropout="0.0")
    assert sum(isinstance(m, SdpaSelfAttention) for m in ours.modules()) == LAYERS
    assert not any(isinstance(m, SdpaSelfAttention) for m in stock.modules())
    # checkpoints: the same names and shapes, loading strictly both ways
    assert {k: v.shape for k, v in stock.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    torch.manual_seed(1)
    for p in stock.parameters():  # large weights: attention far from uniform, so a wrong score shows; the load must carry them
        p.data.normal_(0, 0.5)
    ours.load_state_dict(stock.state_dict(), strict=True)

    masks = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, *args, **kwargs):
        masks.append(attn_mask)
        return sdpa(query, key, value, attn_mask, *args, **kwargs)

    outs, grads = [], []
    for model in (stock, ours):
        model.train()
        model.zero_grad()
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
        out = classify(model, tokens)
        monkeypatch.undo()
        out.pow(2).sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert (outs[0] - outs[1]).abs().max().item() <= TOL
    assert grads[0].keys() == grads[1].keys()
    diff = max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0])
    assert diff <= TOL, diff
    # stock: a float mask from F.multi_head_attention_forward; ours: boolean, True = attend, one per layer
    stock_masks, our_masks = masks[:LAYERS], masks[LAYERS:]
    assert len(our_masks) == LAYERS and all(m.dtype == torch.bool for m in our_masks)
    assert all(m is None or m.dtype != torch.bool for m in stock_masks)
    assert our_masks[0].shape == (tokens.size(0), 1, 1, tokens.size(1))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("extra", [(), ("--sdpa-attention",)], ids=["stock", "sdpa"])
def test_cuda_training_step_runs_fused_attention(data, extra):
    """With attention dropout, in training, under fp16 autocast: a fused kernel per layer on the GPU."""
    model, tokens, _ = build(data, *extra)
    model = model.cuda().train()
    with torch.autocast("cuda", dtype=torch.float16), OpCounter() as ops:
        classify(model, tokens.cuda()).float().sum().backward()
    assert sum(ops.names[name] for name in CUDA_FUSED) == LAYERS, dict(ops.names)
    assert not [name for name in ops.names if "softmax" in name and "backward" not in name]
