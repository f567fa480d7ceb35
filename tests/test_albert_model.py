"""The albert model in fairseq: registration and archs, segment ids, padding, head handling on checkpoint load."""

import pytest
import torch
from fairseq.data import Dictionary

from fairseq_npu.models.albert.config import AlbertConfig
from fairseq_npu.models.albert.embeddings import token_types_from_eos
from fairseq_npu.models.albert.encoder import AlbertEncoder
from fairseq_npu.models.albert.model import AlbertModel


def dictionary(n=40):
    d = Dictionary()
    for i in range(4, n):
        d.add_symbol(f"w{i}")
    d.add_symbol("<mask>")
    return d


def tiny(**kw):
    cfg = AlbertConfig(encoder_layers=3, encoder_embed_dim=32, encoder_ffn_embed_dim=48, encoder_attention_heads=4,
                       embedding_dim=16, max_positions=16, **kw)
    return AlbertModel(cfg, AlbertEncoder(cfg, dictionary())).eval()


def test_token_types_are_zero_through_the_first_separator():
    tokens = torch.tensor([[0, 5, 6, 2, 7, 8, 2, 1], [0, 5, 2, 1, 1, 1, 1, 1], [0, 2, 9, 2, 9, 2, 1, 1]])
    assert token_types_from_eos(tokens, eos=2).tolist() == [
        [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1, 1],
    ]


@pytest.mark.parametrize("arch,sizes", [
    ("albert_base", (12, 768, 3072, 12)), ("albert_large", (24, 1024, 4096, 16)),
    ("albert_xlarge", (24, 2048, 8192, 16)), ("albert_xxlarge", (12, 4096, 16384, 64)),
])
def test_archs_set_albert_v2_sizes_and_flags_override_them(arch, sizes):
    from fairseq import options

    args = options.parse_args_and_arch(options.get_training_parser(), ["data", "--task", "sentence_prediction", "--num-classes", "2",
                                                "--arch", arch, "--num-hidden-groups", "1"])
    got = (args.encoder_layers, args.encoder_embed_dim, args.encoder_ffn_embed_dim, args.encoder_attention_heads)
    assert got == sizes and args.embedding_dim == 128 and args.activation_fn == "gelu_accurate"
    args = options.parse_args_and_arch(options.get_training_parser(), ["data", "--task", "sentence_prediction", "--num-classes", "2",
                                                "--arch", arch, "--encoder-layers", "2"])
    assert args.encoder_layers == 2 and args.layer_norm_eps == 1e-12


def test_layers_share_weights_across_depth():
    model = tiny(num_hidden_groups=1, inner_group_num=2)
    names = [n for n, _ in model.named_parameters() if n.startswith("encoder.layer_groups.")]
    assert {n.split(".")[2] for n in names} == {"0"} and {n.split(".")[3] for n in names} == {"0", "1"}


def test_padding_does_not_change_the_outputs():
    model = tiny(num_hidden_groups=3)
    model.register_classification_head("h", 3)
    alone = torch.tensor([[0, 5, 6, 2, 7, 2]])
    batch = torch.tensor([[0, 5, 6, 2, 7, 2, 1, 1, 1], [0, 9, 9, 9, 2, 8, 8, 8, 2]])
    with torch.no_grad():
        a, _ = model(alone, classification_head_name="h")
        b, _ = model(batch, classification_head_name="h")
        features, extra = model(batch, features_only=True, return_all_hiddens=True)
    assert (a[0] - b[0]).abs().max().item() < 1e-5
    assert features.shape == (2, 9, 32) and len(extra["inner_states"]) == 4  # embeddings + 3 applications


def test_masked_lm_output_is_tied_and_can_select_masked_positions():
    model = tiny()
    assert model.encoder.lm_head.weight is model.encoder.embeddings.word_embeddings.weight
    tokens = torch.tensor([[0, 5, 40, 2], [0, 40, 6, 2]])
    with torch.no_grad():
        full, _ = model(tokens)
        masked, _ = model(tokens, masked_tokens=tokens.eq(40))
    assert full.shape == (2, 4, 41) and torch.allclose(masked, full[tokens.eq(40)], atol=1e-6)


def test_too_long_input_is_refused_with_the_flag_to_change():
    with pytest.raises(ValueError, match=r"input of 17 tokens is longer than the 16 positions .*--max-positions"):
        tiny()(torch.full((1, 17), 5))


def test_checkpoint_heads_follow_roberta_semantics():
    source = tiny()
    source.register_classification_head("task", 3)
    source.register_classification_head("other", 2)
    state = source.state_dict()

    target = tiny()
    target.register_classification_head("task", 2)
    fresh = target.classification_heads["task"].out_proj.weight.clone()
    target.load_state_dict(state, strict=True, model_cfg=target.cfg)  # fairseq's load: upgrades, then strict
    assert set(target.classification_heads) == {"task"}  # "other" dropped: not in the model
    assert torch.equal(target.classification_heads["task"].out_proj.weight, fresh)  # 3 != 2 classes: kept fresh
    assert torch.equal(target.encoder.pooler.weight, source.encoder.pooler.weight)

    loader = tiny(load_checkpoint_heads=True)
    loader.load_state_dict(source.state_dict(), strict=True, model_cfg=loader.cfg)
    assert set(loader.classification_heads) == {"task", "other"}
    assert torch.equal(loader.classification_heads["other"].out_proj.bias, source.classification_heads["other"].out_proj.bias)


def test_every_size_in_the_config_is_a_registered_arch():
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    from fairseq_npu.models.albert.config import ARCHITECTURES

    registered = {a for a, model in ARCH_MODEL_NAME_REGISTRY.items() if model == "albert"}
    assert registered == {"albert", *ARCHITECTURES}  # fairseq registers a dataclass model's own name as an arch too


def test_matmul_attention_equals_the_fused_kernel_with_padding():
    from fairseq_npu.models.albert.layer import matmul_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 4, 7, 8, dtype=torch.float64) for _ in range(3))
    keep = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    keep[1, ..., 5:] = False
    keep[2, ..., 2:] = False
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    torch.testing.assert_close(matmul_attention(q, k, v, keep, torch.nn.Identity()), expected, rtol=1e-12,
                               atol=1e-12)


def test_cpu_bf16_attention_avoids_the_fused_kernel_and_fp32_keeps_it(monkeypatch):
    # cpu flash attention's bf16 backward is several times slower than two matmuls (docs/benchmarks.md)
    import fairseq_npu.models.albert.layer as layer

    fused = torch.nn.functional.scaled_dot_product_attention
    calls = []
    monkeypatch.setattr(layer.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or fused(*a, **k))
    model = tiny()
    tokens = torch.tensor([[0, 5, 6, 7, 2, 1, 1]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(tokens, features_only=True)[0]
    assert calls == []
    full = model(tokens, features_only=True)[0]
    assert len(calls) == 3  # once per layer application
    torch.testing.assert_close(half[:, :5].float(), full[:, :5], rtol=0.05, atol=0.05)
