"""Converted Hugging Face ALBERT / RoBERTa models give the same outputs in fairseq (max abs difference < 1e-4)."""

import pytest
import torch
import transformers

from fairseq_npu import albert_vocab
from fairseq_npu.convert import ConversionError
from fairseq_npu.convert.albert import build_reference_model as build_albert, convert_albert
from fairseq_npu.convert.roberta import build_reference_model as build_roberta, convert_roberta
from fairseq_npu.models.albert import SENTENCE_ORDER_HEAD

TOL = 1e-4
HEAD = "sentence_classification_head"
V = 50  # ALBERT SentencePiece vocabulary size of the small test models


def randomize(model, seed):
    """HF initialises biases to 0 and LayerNorms to 1, which would hide a misplaced bias; perturb everything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if "LayerNorm.weight" in name or "layer_norm.weight" in name else 0.1 * noise)
    return model.eval()


def albert_config(layers, groups, inner, **kw):
    return transformers.AlbertConfig(
        vocab_size=V, embedding_size=16, hidden_size=32, num_hidden_layers=layers, num_hidden_groups=groups,
        inner_group_num=inner, num_attention_heads=4, intermediate_size=48, max_position_embeddings=24, **kw
    )


def albert_batch():
    """SentencePiece ids, HF attention mask and token types: two pairs, one single sentence, right-padded."""
    rows = [
        [2, 10, 11, 12, 3, 20, 21, 3],  # [CLS] A [SEP] B [SEP]
        [2, 30, 31, 3, 0, 0, 0, 0],  # [CLS] A [SEP] <pad>...
        [2, 5, 49, 7, 3, 44, 3, 0],
    ]
    ids = torch.tensor(rows)
    types = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1], [0] * 8, [0, 0, 0, 0, 0, 1, 1, 0]])
    return ids, ids.ne(albert_vocab.SPM_PAD).long(), types


def fairseq_albert(hf_model, config, **kw):
    state, options, notes = convert_albert(hf_model.state_dict(), config.to_dict(), "hf", **kw)
    heads = {k.split(".")[1]: v.size(0) for k, v in state.items()
             if k.startswith("classification_heads.") and k.endswith("out_proj.weight")}
    model = build_albert(options, V, heads).eval()
    model.load_state_dict(state, strict=True)
    return model, notes


@pytest.mark.parametrize("layers,groups,inner", [(3, 1, 1), (4, 2, 2), (6, 3, 1), (4, 3, 2)])
def test_albert_sequence_classification_parity(layers, groups, inner):
    config = albert_config(layers, groups, inner, num_labels=3)
    hf = randomize(transformers.AlbertForSequenceClassification(config), seed=layers * 10 + groups)
    ours, _ = fairseq_albert(hf, config)
    ids, mask, types = albert_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got, _ = ours(albert_vocab.spm_to_fairseq_ids(ids), classification_head_name=HEAD)
    assert expected.std() > 0.1  # the comparison is not between near-zero outputs
    assert (got - expected).abs().max().item() < TOL


def test_albert_regression_head_parity():
    config = albert_config(2, 1, 1, num_labels=1)
    hf = randomize(transformers.AlbertForSequenceClassification(config), seed=5)
    ours, _ = fairseq_albert(hf, config, head_name="sts")
    ids, mask, types = albert_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got, _ = ours(albert_vocab.spm_to_fairseq_ids(ids), classification_head_name="sts")
    assert got.shape == (3, 1) and (got - expected).abs().max().item() < TOL


def _mlm_compare(hf_logits, our_logits, mask):
    """Our logits are over fairseq ids (+ <mask>); reorder them to SentencePiece ids, compare non-pad positions."""
    to_fairseq = torch.tensor([albert_vocab.fairseq_id(s) for s in range(V)])
    keep = mask.bool()
    assert torch.equal(our_logits[..., V], our_logits[..., albert_vocab.SPM_MASK])  # <mask> row == [MASK] row
    return (our_logits[..., to_fairseq][keep] - hf_logits[keep]).abs().max().item()


def test_albert_masked_lm_parity():
    config = albert_config(4, 2, 1)
    hf = randomize(transformers.AlbertForMaskedLM(config), seed=7)
    ours, notes = fairseq_albert(hf, config)
    assert any("encoder.pooler" in n for n in notes)  # AlbertForMaskedLM has no pooler: initialised fresh
    ids, mask, types = albert_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got, _ = ours(albert_vocab.spm_to_fairseq_ids(ids))
    assert _mlm_compare(expected, got, mask) < TOL


def test_albert_pretraining_mlm_and_sop_parity():
    config = albert_config(2, 2, 2)
    hf = randomize(transformers.AlbertForPreTraining(config), seed=8)
    ours, _ = fairseq_albert(hf, config)
    ids, mask, types = albert_batch()
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        fs_ids = albert_vocab.spm_to_fairseq_ids(ids)
        mlm, _ = ours(fs_ids)
        sop, _ = ours(fs_ids, classification_head_name=SENTENCE_ORDER_HEAD)
    assert _mlm_compare(out.prediction_logits, mlm, mask) < TOL
    assert (sop - out.sop_logits).abs().max().item() < TOL


def lonepatient_names(hf_state):
    """The same tensors under lonePatient/albert_pytorch's (Ascend ModelZoo's) names."""
    out = {}
    for k, v in hf_state.items():
        if k.endswith(("position_ids", "token_type_ids")) or k == "predictions.decoder.bias":
            continue
        n = k.replace("albert.encoder.albert_layer_groups.", "bert.encoder.transformer.group.")
        n = n.replace(".albert_layers.", ".inner_group.").replace("albert.", "bert.")
        for a, b in [(".attention.query.", ".attention.self.query."), (".attention.key.", ".attention.self.key."),
                     (".attention.value.", ".attention.self.value."), (".attention.dense.", ".attention.output.dense."),
                     (".attention.LayerNorm.", ".LayerNorm."), (".full_layer_layer_norm.", ".LayerNorm_1."),
                     (".ffn_output.", ".ffn.intermediate.output.dense."), (".ffn.weight", ".ffn.intermediate.dense.weight"),
                     (".ffn.bias", ".ffn.intermediate.dense.bias"), ("bert.pooler.", "bert.pooler.dense."),
                     ("predictions.dense.", "cls.predictions.transform.dense."),
                     ("predictions.LayerNorm.", "cls.predictions.transform.LayerNorm."),
                     ("predictions.decoder.", "cls.predictions.decoder."), ("sop_classifier.classifier.", "cls.seq_relationship.")]:
            n = n.replace(a, b)
        if n == "predictions.bias":
            n = "cls.predictions.bias"
        out[n] = v
    return out


def test_lonepatient_bert_names_convert_to_the_same_model():
    config = albert_config(4, 2, 2)
    hf = randomize(transformers.AlbertForPreTraining(config), seed=9)
    lp_state = lonepatient_names(hf.state_dict())
    assert any(k.startswith("bert.encoder.transformer.group.1.inner_group.1.") for k in lp_state)
    state, options, notes = convert_albert(lp_state, config.to_dict(), "lp")
    model = build_albert(options, V, {SENTENCE_ORDER_HEAD: 2}).eval()
    model.load_state_dict(state, strict=True)
    ids, mask, types = albert_batch()
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        sop, _ = model(albert_vocab.spm_to_fairseq_ids(ids), classification_head_name=SENTENCE_ORDER_HEAD)
        mlm, _ = model(albert_vocab.spm_to_fairseq_ids(ids))
    assert (sop - out.sop_logits).abs().max().item() < TOL
    assert _mlm_compare(out.prediction_logits, mlm, mask) < TOL


# ---------------------------------------------------------------------------------------------------------------
# RoBERTa -> fairseq's own roberta model


def roberta_config(**kw):
    return transformers.RobertaConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=26, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, **kw
    )


def roberta_batch():
    rows = [[0, 10, 11, 2, 2, 20, 21, 2], [0, 30, 31, 2, 1, 1, 1, 1], [0, 5, 59, 7, 8, 2, 1, 1]]
    ids = torch.tensor(rows)
    return ids, ids.ne(1).long()


def fairseq_roberta(hf_model, config):
    state, options, notes = convert_roberta(hf_model.state_dict(), config.to_dict(), "hf")
    heads = {}
    for k, v in state.items():
        if k.startswith("classification_heads.") and k.endswith("out_proj.weight"):
            name = k.split(".")[1]
            heads[name] = (v.size(0), state[f"classification_heads.{name}.dense.weight"].size(0))
    model = build_roberta(options, config.vocab_size, heads).eval()
    model.load_state_dict(state, strict=True)
    return model


@pytest.mark.parametrize("type_vocab_size", [1, 2])
def test_roberta_sequence_classification_parity(type_vocab_size):
    config = roberta_config(type_vocab_size=type_vocab_size, num_labels=3)
    hf = randomize(transformers.RobertaForSequenceClassification(config), seed=11 + type_vocab_size)
    ours = fairseq_roberta(hf, config)
    ids, mask = roberta_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got, _ = ours(ids, classification_head_name=HEAD)
    assert expected.std() > 0.1
    assert (got - expected).abs().max().item() < TOL


def test_roberta_masked_lm_parity():
    config = roberta_config(type_vocab_size=1)
    hf = randomize(transformers.RobertaForMaskedLM(config), seed=13)
    ours = fairseq_roberta(hf, config)
    ids, mask = roberta_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got, _ = ours(ids)
    keep = mask.bool()
    assert (got[keep] - expected[keep]).abs().max().item() < TOL


# ---------------------------------------------------------------------------------------------------------------
# bad checkpoints are refused, naming the tensor


@pytest.fixture(scope="module")
def albert_state():
    config = albert_config(2, 1, 1, num_labels=2)
    return transformers.AlbertForSequenceClassification(config).state_dict(), config.to_dict()


FFN = "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight"


def test_unexpected_tensor_is_named(albert_state):
    state, config = dict(albert_state[0]), albert_state[1]
    state["albert.encoder.extra_projection.weight"] = torch.zeros(2)
    with pytest.raises(ConversionError, match=r"^src: unexpected tensor 'albert.encoder.extra_projection.weight'"):
        convert_albert(state, config, "src")


def test_missing_tensor_is_named(albert_state):
    state, config = dict(albert_state[0]), albert_state[1]
    del state[FFN]
    with pytest.raises(ConversionError, match=rf"^src: missing tensor '{FFN}' \(fairseq encoder.layer_groups.0.0.fc1.weight\)$"):
        convert_albert(state, config, "src")


def test_wrongly_shaped_tensor_is_named(albert_state):
    state, config = dict(albert_state[0]), albert_state[1]
    state[FFN] = torch.zeros(47, 32)
    with pytest.raises(ConversionError, match=rf"^src: tensor '{FFN}' has shape \[47, 32\], expected \[48, 32\]"):
        convert_albert(state, config, "src")


def test_group_beyond_config_is_unexpected(albert_state):
    state, config = dict(albert_state[0]), albert_state[1]
    state[FFN.replace("groups.0", "groups.1")] = state[FFN]
    with pytest.raises(ConversionError, match=r"unexpected tensor 'albert.encoder.albert_layer_groups.1.albert_layers"):
        convert_albert(state, config, "src")


def test_missing_lonepatient_tensor_is_named_in_its_own_naming(albert_state):
    state = lonepatient_names(albert_state[0])
    del state["bert.encoder.transformer.group.0.inner_group.0.LayerNorm_1.bias"]
    with pytest.raises(ConversionError, match=r"missing tensor 'bert.encoder.transformer.group.0.inner_group.0.LayerNorm_1.bias'"):
        convert_albert(state, albert_state[1], "lp")


def test_roberta_missing_and_misshapen_tensors_are_named():
    config = roberta_config(num_labels=2)
    state = transformers.RobertaForSequenceClassification(config).state_dict()
    bad = dict(state)
    del bad["roberta.encoder.layer.1.output.LayerNorm.weight"]
    with pytest.raises(ConversionError, match=r"missing tensor 'roberta.encoder.layer.1.output.LayerNorm.weight'"):
        convert_roberta(bad, config.to_dict(), "src")
    bad = dict(state)
    bad["classifier.dense.weight"] = torch.zeros(32, 31)
    with pytest.raises(ConversionError, match=r"tensor 'classifier.dense.weight' has shape \[32, 31\], expected \[32, 32\]"):
        convert_roberta(bad, config.to_dict(), "src")
