"""RoBERTa: Hugging Face ``RobertaFor*`` / ``RobertaModel`` -> fairseq's own ``roberta`` model.

Hugging Face kept fairseq's token ids and position layout (padding_idx 1, positions from 2), so rows copy as they
are. The one structural difference: Hugging Face adds ``token_type_embeddings[0]`` to every token (RoBERTa never
uses segments), which fairseq lacks; since both are added before the embedding LayerNorm, that row is folded
into the position embeddings, exactly.
"""

from typing import Dict

import torch

from .albert import DEFAULT_HEAD
from .errors import ConversionError, check_complete
from .renaming import Renamer

_HF_LAYER = "roberta.encoder.layer.{n}"
_FS_LAYER = "encoder.sentence_encoder.layers.{n}"


def hf_to_fairseq(head_name: str) -> Renamer:
    return Renamer([
        ("roberta.embeddings.position_ids", None),  # buffers
        ("roberta.embeddings.token_type_ids", None),
        ("roberta.pooler.dense.{w}", None),  # RobertaModel's pooler: fairseq roberta has none
        ("roberta.embeddings.word_embeddings.weight", "encoder.sentence_encoder.embed_tokens.weight"),
        ("roberta.embeddings.position_embeddings.weight", "encoder.sentence_encoder.embed_positions.weight"),
        ("roberta.embeddings.token_type_embeddings.weight", "folded.token_type_embeddings"),
        ("roberta.embeddings.LayerNorm.{w}", "encoder.sentence_encoder.layernorm_embedding.{w}"),
        (f"{_HF_LAYER}.attention.self.query.{{w}}", f"{_FS_LAYER}.self_attn.q_proj.{{w}}"),
        (f"{_HF_LAYER}.attention.self.key.{{w}}", f"{_FS_LAYER}.self_attn.k_proj.{{w}}"),
        (f"{_HF_LAYER}.attention.self.value.{{w}}", f"{_FS_LAYER}.self_attn.v_proj.{{w}}"),
        (f"{_HF_LAYER}.attention.output.dense.{{w}}", f"{_FS_LAYER}.self_attn.out_proj.{{w}}"),
        (f"{_HF_LAYER}.attention.output.LayerNorm.{{w}}", f"{_FS_LAYER}.self_attn_layer_norm.{{w}}"),
        (f"{_HF_LAYER}.intermediate.dense.{{w}}", f"{_FS_LAYER}.fc1.{{w}}"),
        (f"{_HF_LAYER}.output.dense.{{w}}", f"{_FS_LAYER}.fc2.{{w}}"),
        (f"{_HF_LAYER}.output.LayerNorm.{{w}}", f"{_FS_LAYER}.final_layer_norm.{{w}}"),
        ("lm_head.dense.{w}", "encoder.lm_head.dense.{w}"),
        ("lm_head.layer_norm.{w}", "encoder.lm_head.layer_norm.{w}"),
        ("lm_head.bias", "encoder.lm_head.bias"),
        ("lm_head.decoder.{w}", "tied.decoder.{w}"),
        ("classifier.{layer}.{w}", f"classification_heads.{head_name}.{{layer}}.{{w}}"),
        ("roberta.embeddings.word_embeddings.weight", "encoder.lm_head.weight"),
    ])


HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_accurate", "gelu_pytorch_tanh": "gelu_accurate", "relu": "relu"}
FAIRSEQ_LAYER_NORM_EPS = 1e-5  # fairseq's LayerNorm default; roberta cannot be configured otherwise


def model_options(config: dict, source: str) -> dict:
    def need(key):
        if key not in config:
            raise ConversionError(f"{source}: config.json has no {key!r}")
        return config[key]

    act = config.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ConversionError(f"{source}: hidden_act {act!r} is not supported (known: {', '.join(HF_ACTIVATIONS)})")
    eps = config.get("layer_norm_eps", FAIRSEQ_LAYER_NORM_EPS)
    if abs(eps - FAIRSEQ_LAYER_NORM_EPS) > 1e-12:
        raise ConversionError(f"{source}: layer_norm_eps {eps} differs from fairseq roberta's fixed 1e-05")
    pad = config.get("pad_token_id", 1)
    if pad != 1:
        raise ConversionError(f"{source}: pad_token_id {pad}: fairseq roberta needs 1 (positions start at pad+1)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"{source}: position_embedding_type {config['position_embedding_type']!r} not supported")
    return dict(
        encoder_layers=need("num_hidden_layers"),
        encoder_embed_dim=need("hidden_size"),
        encoder_ffn_embed_dim=need("intermediate_size"),
        encoder_attention_heads=need("num_attention_heads"),
        max_positions=need("max_position_embeddings") - pad - 1,
        activation_fn=HF_ACTIVATIONS[act],
        dropout=config.get("hidden_dropout_prob", 0.1),
        attention_dropout=config.get("attention_probs_dropout_prob", 0.1),
        pooler_dropout=config.get("classifier_dropout") if config.get("classifier_dropout") is not None else 0.0,
    )


def arch_for(options: dict) -> str:
    large = dict(encoder_layers=24, encoder_embed_dim=1024, encoder_ffn_embed_dim=4096, encoder_attention_heads=16)
    return "roberta_large" if all(options[k] == v for k, v in large.items()) else "roberta_base"


def build_reference_model(options: dict, vocab_size: int, heads: Dict[str, tuple]):
    import argparse

    from fairseq.data import Dictionary
    from fairseq.models.roberta import RobertaEncoder, RobertaModel
    from fairseq.models.roberta.model import base_architecture

    args = argparse.Namespace(**options)
    base_architecture(args)
    d = Dictionary()
    for i in range(4, vocab_size):
        d.add_symbol(f"sym{i}")
    model = RobertaModel(args, RobertaEncoder(args, d))
    for name, (n, inner) in heads.items():
        model.register_classification_head(name, n, inner)
    return model


def convert_roberta(state: Dict[str, torch.Tensor], config: dict, source: str, head_name: str = DEFAULT_HEAD):
    """Returns (fairseq roberta state dict, model options, notes)."""
    notes = []
    options = model_options(config, source)
    bare = not any(k.startswith("roberta.") for k in state)  # a bare RobertaModel has no "roberta." prefix
    state = {("roberta." + k if bare and k.split(".")[0] in ("embeddings", "encoder", "pooler") else k): v
             for k, v in state.items()}
    renamer = hf_to_fairseq(head_name)
    converted = renamer.forward(state, source)

    def source_name(fairseq_name):
        name = renamer.source_name(fairseq_name)
        return name[len("roberta."):] if bare and name.startswith("roberta.") else name

    words = converted.get("encoder.sentence_encoder.embed_tokens.weight")
    if words is None:
        raise ConversionError(f"{source}: missing tensor 'roberta.embeddings.word_embeddings.weight'")
    types = converted.pop("folded.token_type_embeddings", None)
    positions = converted.get("encoder.sentence_encoder.embed_positions.weight")
    if types is not None and positions is not None:
        if types.size(-1) != positions.size(-1):
            raise ConversionError(f"{source}: tensor 'roberta.embeddings.token_type_embeddings.weight' has shape "
                                  f"{list(types.shape)}, expected [*, {positions.size(-1)}]")
        converted["encoder.sentence_encoder.embed_positions.weight"] = positions + types[0]
        notes.append("token_type_embeddings[0] folded into the position embeddings")
    decoder_w = converted.pop("tied.decoder.weight", None)
    if decoder_w is not None and not torch.equal(decoder_w, words):
        raise ConversionError(f"{source}: tensor 'lm_head.decoder.weight' differs from the word embeddings; "
                              "untied decoders are not supported")
    decoder_b = converted.pop("tied.decoder.bias", None)
    if decoder_b is not None:
        bias = converted.setdefault("encoder.lm_head.bias", decoder_b)
        if not torch.equal(decoder_b, bias):
            raise ConversionError(f"{source}: tensor 'lm_head.decoder.bias' differs from lm_head.bias")
    converted["encoder.lm_head.weight"] = words

    heads = {}
    for k, v in converted.items():
        if k.startswith("classification_heads.") and k.endswith(".out_proj.weight"):
            name = k.split(".")[1]
            dense = converted.get(f"classification_heads.{name}.dense.weight")
            heads[name] = (v.size(0), dense.size(0) if dense is not None else options["encoder_embed_dim"])
    reference = build_reference_model(options, words.size(0), heads).state_dict()
    for k in reference:
        if k.endswith(".version"):  # fairseq's state-dict format marker, not a weight
            converted[k] = reference[k].clone()
    fresh = [k for k in reference if k not in converted and k.startswith("encoder.lm_head.")]
    for k in fresh:
        converted[k] = reference[k].clone()
    if fresh:
        notes.append("not in the source, freshly initialised: encoder.lm_head")
    check_complete(converted, reference, source, source_name)
    if heads:
        notes.append("classification heads: " + ", ".join(f"{h} ({n} outputs)" for h, (n, _) in heads.items()))
    return converted, options, notes
