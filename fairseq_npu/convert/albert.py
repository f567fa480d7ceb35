"""ALBERT: Hugging Face (``albert.`` names) and lonePatient/albert_pytorch (``bert.`` names, Ascend ModelZoo) -> fairseq.

Besides renaming, the word-embedding rows and the MLM bias are reordered from SentencePiece ids to fairseq ids
and given the extra ``<mask>`` row (fairseq_npu.albert_vocab), so a converted model reads fairseq-binarized data.
"""

import logging
from typing import Dict

import torch

from fairseq_npu import albert_vocab
from fairseq_npu.models.albert.config import ARCHITECTURES, AlbertConfig
from fairseq_npu.models.albert.model import SENTENCE_ORDER_HEAD

from .errors import ConversionError, check_complete
from .renaming import Renamer

logger = logging.getLogger(__name__)

DEFAULT_HEAD = "sentence_classification_head"  # the sentence_prediction criterion's default head name

_LP_LAYER = "bert.encoder.transformer.group.{g}.inner_group.{i}"
_HF_LAYER = "albert.encoder.albert_layer_groups.{g}.albert_layers.{i}"
_FS_LAYER = "encoder.layer_groups.{g}.{i}"

LONEPATIENT_TO_HF = Renamer([
    ("bert.embeddings.position_ids", None),
    ("bert.embeddings.{emb}.{w}", "albert.embeddings.{emb}.{w}"),
    ("bert.encoder.embedding_hidden_mapping_in.{w}", "albert.encoder.embedding_hidden_mapping_in.{w}"),
    (f"{_LP_LAYER}.attention.self.{{proj}}.{{w}}", f"{_HF_LAYER}.attention.{{proj}}.{{w}}"),
    (f"{_LP_LAYER}.attention.output.dense.{{w}}", f"{_HF_LAYER}.attention.dense.{{w}}"),
    (f"{_LP_LAYER}.LayerNorm.{{w}}", f"{_HF_LAYER}.attention.LayerNorm.{{w}}"),
    (f"{_LP_LAYER}.LayerNorm_1.{{w}}", f"{_HF_LAYER}.full_layer_layer_norm.{{w}}"),
    (f"{_LP_LAYER}.ffn.intermediate.dense.{{w}}", f"{_HF_LAYER}.ffn.{{w}}"),
    (f"{_LP_LAYER}.ffn.intermediate.output.dense.{{w}}", f"{_HF_LAYER}.ffn_output.{{w}}"),
    ("bert.pooler.dense.{w}", "albert.pooler.{w}"),
    ("cls.predictions.transform.dense.{w}", "predictions.dense.{w}"),
    ("cls.predictions.transform.LayerNorm.{w}", "predictions.LayerNorm.{w}"),
    ("cls.predictions.decoder.{w}", "predictions.decoder.{w}"),
    ("cls.predictions.bias", "predictions.bias"),
    ("cls.seq_relationship.{w}", "sop_classifier.classifier.{w}"),
    ("classifier.{w}", "classifier.{w}"),
])


def hf_to_fairseq(head_name: str) -> Renamer:
    return Renamer([
        ("albert.embeddings.position_ids", None),  # buffers
        ("albert.embeddings.token_type_ids", None),
        ("albert.embeddings.word_embeddings.weight", "encoder.embeddings.word_embeddings.weight"),
        ("albert.embeddings.position_embeddings.weight", "encoder.embeddings.position_embeddings.weight"),
        ("albert.embeddings.token_type_embeddings.weight", "encoder.embeddings.token_type_embeddings.weight"),
        ("albert.embeddings.LayerNorm.{w}", "encoder.embeddings.layer_norm.{w}"),
        ("albert.encoder.embedding_hidden_mapping_in.{w}", "encoder.embed_projection.{w}"),
        (f"{_HF_LAYER}.attention.query.{{w}}", f"{_FS_LAYER}.self_attn.q_proj.{{w}}"),
        (f"{_HF_LAYER}.attention.key.{{w}}", f"{_FS_LAYER}.self_attn.k_proj.{{w}}"),
        (f"{_HF_LAYER}.attention.value.{{w}}", f"{_FS_LAYER}.self_attn.v_proj.{{w}}"),
        (f"{_HF_LAYER}.attention.dense.{{w}}", f"{_FS_LAYER}.self_attn.out_proj.{{w}}"),
        (f"{_HF_LAYER}.attention.LayerNorm.{{w}}", f"{_FS_LAYER}.self_attn_layer_norm.{{w}}"),
        (f"{_HF_LAYER}.ffn.{{w}}", f"{_FS_LAYER}.fc1.{{w}}"),
        (f"{_HF_LAYER}.ffn_output.{{w}}", f"{_FS_LAYER}.fc2.{{w}}"),
        (f"{_HF_LAYER}.full_layer_layer_norm.{{w}}", f"{_FS_LAYER}.final_layer_norm.{{w}}"),
        ("albert.pooler.{w}", "encoder.pooler.{w}"),
        ("predictions.dense.{w}", "encoder.lm_head.dense.{w}"),
        ("predictions.LayerNorm.{w}", "encoder.lm_head.layer_norm.{w}"),
        ("predictions.bias", "encoder.lm_head.bias"),
        ("predictions.decoder.{w}", "tied.decoder.{w}"),  # checked against the embeddings, then dropped (tied)
        ("classifier.{w}", f"classification_heads.{head_name}.out_proj.{{w}}"),
        ("sop_classifier.classifier.{w}", f"classification_heads.{SENTENCE_ORDER_HEAD}.out_proj.{{w}}"),
        # the MLM output matrix is the word embedding matrix: name it by the embedding in messages
        ("albert.embeddings.word_embeddings.weight", "encoder.lm_head.weight"),
    ])


# weights a classification or MLM-only checkpoint may lack; they start from a fresh initialisation
OPTIONAL_PREFIXES = ("encoder.pooler.", "encoder.lm_head.")

HF_ACTIVATIONS = {"gelu_new": "gelu_accurate", "gelu_pytorch_tanh": "gelu_accurate", "gelu_fast": "gelu_accurate",
                  "gelu": "gelu", "relu": "relu"}


def is_lonepatient(state: Dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("bert.", "cls.")) for k in state)


def model_options(config: dict, source: str) -> dict:
    """fairseq ``albert`` options from a Hugging Face / lonePatient ALBERT config.json."""
    def need(key):
        if key not in config:
            raise ConversionError(f"{source}: config.json has no {key!r}")
        return config[key]

    if config.get("ln_type", "postln") != "postln":
        raise ConversionError(f"{source}: ln_type {config['ln_type']!r} is not ALBERT's post-LayerNorm; not supported")
    act = config.get("hidden_act", "gelu_new")
    if act not in HF_ACTIVATIONS:
        raise ConversionError(f"{source}: hidden_act {act!r} is not supported (known: {', '.join(HF_ACTIVATIONS)})")
    return dict(
        encoder_layers=need("num_hidden_layers"),
        encoder_embed_dim=need("hidden_size"),
        encoder_ffn_embed_dim=need("intermediate_size"),
        encoder_attention_heads=need("num_attention_heads"),
        embedding_dim=config.get("embedding_size", 128),
        num_hidden_groups=config.get("num_hidden_groups", 1),
        inner_group_num=config.get("inner_group_num", 1),
        type_vocab_size=config.get("type_vocab_size", 2),
        max_positions=config.get("max_position_embeddings", 512),
        activation_fn=HF_ACTIVATIONS[act],
        dropout=config.get("hidden_dropout_prob", 0.0),
        attention_dropout=config.get("attention_probs_dropout_prob", 0.0),
        pooler_dropout=config.get("classifier_dropout_prob", 0.1) if config.get("classifier_dropout_prob") is not None
        else 0.1,
        layer_norm_eps=config.get("layer_norm_eps", 1e-12),
    )


def arch_for(options: dict) -> str:
    for arch, sizes in ARCHITECTURES.items():
        if all(options[k] == v for k, v in sizes.items()):
            return arch
    return "albert"


def _dummy_dictionary(vocab_size: int):
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(albert_vocab.NUM_REMAPPED, vocab_size):
        d.add_symbol(f"piece{i}" if i != albert_vocab.SPM_MASK else "[MASK]")
    d.add_symbol(albert_vocab.FAIRSEQ_MASK_SYMBOL)
    return d


def build_reference_model(options: dict, vocab_size: int, heads: Dict[str, int]):
    """A freshly initialised fairseq ALBERT of the given shape (the layout to check against; fills optional parts)."""
    from fairseq_npu.models.albert.encoder import AlbertEncoder
    from fairseq_npu.models.albert.model import AlbertModel

    cfg = AlbertConfig(**options)
    model = AlbertModel(cfg, AlbertEncoder(cfg, _dummy_dictionary(vocab_size)))
    for name, n in heads.items():
        model.register_classification_head(name, n)
    return model


def convert_albert(state: Dict[str, torch.Tensor], config: dict, source: str, head_name: str = DEFAULT_HEAD):
    """Returns (fairseq state dict, model options, notes)."""
    notes = []
    options = model_options(config, source)
    lonepatient = is_lonepatient(state)
    bare = False
    if lonepatient:
        if options["embedding_dim"] == options["encoder_embed_dim"]:
            raise ConversionError(
                f"{source}: embedding_size == hidden_size: the bert.-named implementation skips "
                "embedding_hidden_mapping_in then, which this model always applies; not supported"
            )
        state = LONEPATIENT_TO_HF.forward(state, source)
        notes.append("lonePatient/albert_pytorch (bert.) names mapped to Hugging Face names")
    else:
        # a bare AlbertModel saves its tensors without the "albert." prefix
        bare = not any(k.startswith("albert.") for k in state)
        state = {("albert." + k if bare and k.split(".")[0] in ("embeddings", "encoder", "pooler") else k): v
                 for k, v in state.items()}
    renamer = hf_to_fairseq(head_name)
    converted = renamer.forward(state, source)

    def source_name(fairseq_name):
        hf = renamer.source_name(fairseq_name)
        if lonepatient:
            return LONEPATIENT_TO_HF.source_name(hf)
        return hf[len("albert."):] if bare and hf.startswith("albert.") else hf

    vocab_size = config.get("vocab_size")
    words = converted.get("encoder.embeddings.word_embeddings.weight")
    if words is None:
        raise ConversionError(f"{source}: missing tensor 'albert.embeddings.word_embeddings.weight'")
    if vocab_size is not None and words.size(0) != vocab_size:
        raise ConversionError(
            f"{source}: tensor {source_name('encoder.embeddings.word_embeddings.weight')!r} has {words.size(0)} rows, "
            f"config.json vocab_size is {vocab_size}"
        )
    vocab_size = words.size(0)

    # the MLM decoder is tied to the word embeddings and to predictions.bias; refuse a checkpoint where it is not
    decoder_w = converted.pop("tied.decoder.weight", None)
    if decoder_w is not None and not torch.equal(decoder_w, words):
        raise ConversionError(f"{source}: tensor {source_name('tied.decoder.weight')!r} differs from the word "
                              "embeddings; untied MLM decoders are not supported")
    decoder_b = converted.pop("tied.decoder.bias", None)
    if decoder_b is not None:
        bias = converted.setdefault("encoder.lm_head.bias", decoder_b)
        if not torch.equal(decoder_b, bias):
            raise ConversionError(f"{source}: tensor {source_name('tied.decoder.bias')!r} differs from predictions.bias")

    # SentencePiece row order -> fairseq row order, plus the <mask> row
    converted["encoder.embeddings.word_embeddings.weight"] = albert_vocab.spm_rows_to_fairseq(words)
    converted["encoder.lm_head.weight"] = converted["encoder.embeddings.word_embeddings.weight"]
    if "encoder.lm_head.bias" in converted:
        if converted["encoder.lm_head.bias"].size(0) != vocab_size:
            raise ConversionError(f"{source}: tensor {source_name('encoder.lm_head.bias')!r} has shape "
                                  f"{list(converted['encoder.lm_head.bias'].shape)}, expected [{vocab_size}]")
        converted["encoder.lm_head.bias"] = albert_vocab.spm_rows_to_fairseq(converted["encoder.lm_head.bias"])

    heads = {}
    for k, v in converted.items():
        if k.startswith("classification_heads.") and k.endswith(".out_proj.weight"):
            heads[k.split(".")[1]] = v.size(0)
    reference = build_reference_model(options, vocab_size, heads).state_dict()
    fresh = []
    for k, v in reference.items():
        if k not in converted and k.startswith(OPTIONAL_PREFIXES):
            converted[k] = v.clone()
            fresh.append(k)
    if fresh:
        parts = sorted({k.split(".")[1] for k in fresh})
        notes.append(f"not in the source, freshly initialised: {', '.join('encoder.' + p for p in parts)}")
    check_complete(converted, reference, source, source_name)
    if heads:
        notes.append("classification heads: " + ", ".join(f"{h} ({n} outputs)" for h, n in heads.items()))
    return converted, options, notes
