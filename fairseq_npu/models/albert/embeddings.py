"""ALBERT's factorized input embeddings: word + position + token type in a small size E, then LayerNorm."""

import torch
from torch import nn


def token_types_from_eos(src_tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """Segment ids for ``[CLS] A [SEP] B [SEP]``: 0 up to and including the first ``[SEP]`` (fairseq ``</s>``), 1 after.

    fairseq's sentence_prediction passes no segment ids, so they are derived here; a cumulative sum keeps it a
    fixed-shape computation with no host synchronisation (static padded NPU batches stay static).
    """
    is_eos = src_tokens.eq(eos).long()
    seen_before = is_eos.cumsum(dim=1) - is_eos  # separators strictly before each position
    return seen_before.clamp(max=1)


class AlbertEmbeddings(nn.Module):
    def __init__(self, vocab_size, embedding_dim, padding_idx, max_positions, type_vocab_size, layer_norm_eps, dropout):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        # ALBERT numbers positions from 0 whatever the padding id (unlike fairseq's learned positions)
        self.position_embeddings = nn.Embedding(max_positions, embedding_dim)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, embedding_dim)
        self.layer_norm = nn.LayerNorm(embedding_dim, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.max_positions = max_positions

    def forward(self, src_tokens: torch.Tensor, token_types: torch.Tensor) -> torch.Tensor:
        seq_len = src_tokens.size(1)
        if seq_len > self.max_positions:
            raise ValueError(
                f"input of {seq_len} tokens is longer than the {self.max_positions} positions of the model "
                f"(--max-positions / --shorten-method truncate)"
            )
        positions = torch.arange(seq_len, device=src_tokens.device)  # right-padded batches: positions 0..T-1
        x = self.word_embeddings(src_tokens)
        x = x + self.token_type_embeddings(token_types) + self.position_embeddings(positions).unsqueeze(0)
        return self.dropout(self.layer_norm(x))
