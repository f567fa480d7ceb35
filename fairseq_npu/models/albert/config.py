"""Command-line options of the ``albert`` model and its architectures (ALBERT v2 sizes)."""

from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.utils import get_available_activation_fns

ActivationChoice = ChoiceEnum(get_available_activation_fns())


@dataclass
class AlbertConfig(FairseqDataclass):
    # names mirror fairseq roberta's flags where the concept is the same
    encoder_layers: int = field(
        default=12, metadata={"help": "number of layer applications (ALBERT num_hidden_layers)"}
    )
    encoder_embed_dim: int = field(default=768, metadata={"help": "hidden size H"})
    encoder_ffn_embed_dim: int = field(default=3072, metadata={"help": "feed-forward inner size (intermediate_size)"})
    encoder_attention_heads: int = field(default=12, metadata={"help": "number of attention heads"})
    embedding_dim: int = field(
        default=128, metadata={"help": "factorized embedding size E, projected to H (ALBERT embedding_size)"}
    )
    num_hidden_groups: int = field(
        default=1, metadata={"help": "number of groups of layers with their own weights (cross-layer sharing)"}
    )
    inner_group_num: int = field(default=1, metadata={"help": "number of distinct layers inside each group"})
    type_vocab_size: int = field(default=2, metadata={"help": "number of token-type (segment) embeddings"})
    max_positions: int = field(default=512, metadata={"help": "number of learned positions (ids 0..N-1)"})
    activation_fn: ActivationChoice = field(
        default="gelu_accurate",
        metadata={"help": "activation of the feed-forward and MLM head; gelu_accurate is ALBERT's gelu_new (tanh)"},
    )
    dropout: float = field(default=0.0, metadata={"help": "hidden dropout (ALBERT v2: 0)"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention probabilities"})
    pooler_dropout: float = field(
        default=0.1, metadata={"help": "dropout before each classification head (ALBERT classifier_dropout_prob)"}
    )
    layer_norm_eps: float = field(default=1e-12, metadata={"help": "LayerNorm epsilon"})
    init_std: float = field(default=0.02, metadata={"help": "std of the normal initialisation of new weights"})
    load_checkpoint_heads: bool = field(
        default=False, metadata={"help": "(re-)register and load classification heads found in the checkpoint"}
    )


# ALBERT v2 sizes (google-research/albert config/*.json, HF albert/albert-*-v2 config.json)
ARCHITECTURES = {
    "albert_base": dict(encoder_layers=12, encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_attention_heads=12),
    "albert_large": dict(encoder_layers=24, encoder_embed_dim=1024, encoder_ffn_embed_dim=4096, encoder_attention_heads=16),
    "albert_xlarge": dict(encoder_layers=24, encoder_embed_dim=2048, encoder_ffn_embed_dim=8192, encoder_attention_heads=16),
    "albert_xxlarge": dict(
        encoder_layers=12, encoder_embed_dim=4096, encoder_ffn_embed_dim=16384, encoder_attention_heads=64
    ),
}
