"""Stock fairseq 0.12.3 RoBERTa self-attention already runs through torch's fused attention: its MultiheadAttention
calls ``F.multi_head_attention_forward`` (encoder layers pass ``key_padding_mask`` and ``need_weights=False``),
which hands the padding mask to ``F.scaled_dot_product_attention``. So the plugin adds no attention path of its own:
these tests pin that dispatch (one fused attention kernel per layer, no softmax of its own) and that padding is
honoured, so that a fairseq or torch upgrade that loses it shows up here."""

from pathlib import Path

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import fairseq_npu  # noqa: F401  (the task and the hooks, as in a real run)
from benchmarks.op_counter import OpCounter
from glue_tiny_data import make_glue_dir

USER_DIR = str(Path(fairseq_npu.__file__).parent)
LAYERS = 2
CUDA_FUSED = {"_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_cudnn_attention"}


@pytest.fixture(scope="module")
def model_and_batch(tmp_path_factory):
    data = make_glue_dir(tmp_path_factory.mktemp("attn"), {"train": 16, "valid": 4}, min_len=3, max_len=20)
    argv = [str(data), "--user-dir", USER_DIR, "--cpu", "--task", "sentence_prediction", "--criterion",
            "sentence_prediction", "--arch", "roberta", "--encoder-layers", str(LAYERS), "--encoder-embed-dim", "32",
            "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4", "--max-positions", "32",
            "--num-classes", "2", "--init-token", "0", "--batch-size", "8", "--attention-dropout", "0.1"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(0)
    model = task.build_model(cfg.model)
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(8)])
    tokens = batch["net_input"]["src_tokens"]
    assert tokens.eq(task.source_dictionary.pad()).any()  # the batch has padding to mask
    return model, tokens, task.source_dictionary.pad()


def classify(model, tokens):
    return model(tokens, features_only=True, classification_head_name="sentence_classification_head")[0]


def test_cpu_inference_runs_one_fused_attention_per_layer(model_and_batch):
    model, tokens, _ = model_and_batch
    model.eval()
    with torch.no_grad(), OpCounter() as ops:
        classify(model, tokens)
    assert ops.names["_scaled_dot_product_flash_attention_for_cpu"] == LAYERS, dict(ops.names)
    assert not [name for name in ops.names if "softmax" in name]


def test_padding_is_masked(model_and_batch):
    """Each sentence scores the same alone (no padding) as inside the padded batch, to 1e-5 in fp32."""
    model, tokens, pad = model_and_batch
    model.eval()
    with torch.no_grad():
        batched = classify(model, tokens)
        for row in range(tokens.size(0)):
            alone = tokens[row][tokens[row].ne(pad)].unsqueeze(0)  # right-padded: the real tokens come first
            assert torch.allclose(classify(model, alone)[0], batched[row], atol=1e-5), row


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_step_runs_fused_attention(model_and_batch):
    """With attention dropout, in training, under fp16 autocast: a fused kernel per layer on the GPU."""
    model, tokens, _ = model_and_batch
    model = model.cuda().train()
    try:
        with torch.autocast("cuda", dtype=torch.float16), OpCounter() as ops:
            classify(model, tokens.cuda()).float().sum().backward()
        assert sum(ops.names[name] for name in CUDA_FUSED) == LAYERS, dict(ops.names)
        assert not [name for name in ops.names if "softmax" in name and "backward" not in name]
    finally:
        model.cpu()
