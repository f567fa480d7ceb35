"""The ALBERT encoder: factorized embeddings, projection to the hidden size, groups of layers shared across depth."""

import torch
from torch import nn

from fairseq.models import FairseqEncoder

from .embeddings import AlbertEmbeddings, token_types_from_eos
from .heads import AlbertLMHead
from .layer import AlbertLayer


def group_of_application(i: int, num_layers: int, num_groups: int) -> int:
    """Which weight group the i-th layer application uses (HF/Google: ``int(i / (L / G))``)."""
    return int(i / (num_layers / num_groups))


class AlbertEncoder(FairseqEncoder):
    def __init__(self, cfg, dictionary):
        super().__init__(dictionary)
        self.cfg = cfg
        self.num_layers = cfg.encoder_layers
        self.padding_idx = dictionary.pad()
        self.eos_idx = dictionary.eos()
        self.embeddings = AlbertEmbeddings(
            len(dictionary), cfg.embedding_dim, self.padding_idx, cfg.max_positions, cfg.type_vocab_size,
            cfg.layer_norm_eps, cfg.dropout,
        )
        self.embed_projection = nn.Linear(cfg.embedding_dim, cfg.encoder_embed_dim)
        self.layer_groups = nn.ModuleList(
            nn.ModuleList(
                AlbertLayer(
                    cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim, cfg.encoder_attention_heads, cfg.activation_fn,
                    cfg.dropout, cfg.attention_dropout, cfg.layer_norm_eps,
                )
                for _ in range(cfg.inner_group_num)
            )
            for _ in range(cfg.num_hidden_groups)
        )
        self.pooler = nn.Linear(cfg.encoder_embed_dim, cfg.encoder_embed_dim)  # dense + tanh on [CLS], shared by heads
        self.lm_head = AlbertLMHead(
            cfg.encoder_embed_dim, cfg.embedding_dim, cfg.activation_fn, cfg.layer_norm_eps,
            weight=self.embeddings.word_embeddings.weight,
        )

    def forward(self, src_tokens, features_only=False, return_all_hiddens=False, masked_tokens=None, **unused):
        """Returns (B x T x V logits, or B x T x H features with ``features_only``) and ``{"inner_states": ...}``."""
        x, extra = self.extract_features(src_tokens, return_all_hiddens=return_all_hiddens, **unused)
        if not features_only:
            x = self.output_layer(x, masked_tokens=masked_tokens)
        return x, extra

    def extract_features(self, src_tokens, return_all_hiddens=False, token_types=None, **unused):
        if token_types is None:
            token_types = token_types_from_eos(src_tokens, self.eos_idx)
        keep_mask = src_tokens.ne(self.padding_idx)[:, None, None, :]
        x = self.embed_projection(self.embeddings(src_tokens, token_types))
        inner_states = [x.transpose(0, 1)] if return_all_hiddens else None  # fairseq convention: T x B x C
        for i in range(self.num_layers):
            for layer in self.layer_groups[group_of_application(i, self.num_layers, len(self.layer_groups))]:
                x = layer(x, keep_mask)
            if return_all_hiddens:
                inner_states.append(x.transpose(0, 1))
        return x, {"inner_states": inner_states}

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pooler(features[:, 0, :]))

    def output_layer(self, features, masked_tokens=None, **unused):
        return self.lm_head(features, masked_tokens)

    def max_positions(self):
        return self.cfg.max_positions
