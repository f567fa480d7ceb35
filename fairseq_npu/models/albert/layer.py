"""One ALBERT (post-LayerNorm BERT) layer: self-attention and feed-forward, each followed by add & LayerNorm."""

import torch
import torch.nn.functional as F
from torch import nn

from fairseq import utils


def activation(name: str):
    if name == "gelu_accurate":  # the tanh gelu ALBERT uses ("gelu_new"); torch has a fused kernel for it
        return lambda x: F.gelu(x, approximate="tanh")
    return utils.get_activation_fn(name)


class AlbertSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, attention_dropout):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"--encoder-embed-dim {embed_dim} is not a multiple of --encoder-attention-heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.attention_dropout = attention_dropout
        self.probs_dropout = nn.Dropout(attention_dropout)  # on the matmul path (the fused kernel drops by itself)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
        """``x``: B x T x H; ``keep_mask``: bool B x 1 x 1 x T, False on padding keys."""
        bsz, seq_len, embed_dim = x.shape

        def heads(t):
            return t.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        dropout_p = self.attention_dropout if self.training else 0.0
        if q.device.type == "cpu" and q.dtype != torch.float32:
            out = matmul_attention(q, k, v, keep_mask, self.probs_dropout)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep_mask, dropout_p=dropout_p)
        return self.out_proj(out.transpose(1, 2).reshape(bsz, seq_len, embed_dim))


def matmul_attention(q, k, v, keep_mask, probs_dropout: nn.Module) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v as two matmuls, the softmax in float32 at least. On the cpu in bfloat16 torch's fused
    attention (flash_attention_for_cpu) runs its backward 3-6x slower than this (4 heads of 64, 16-64 tokens, batch
    32); in float32 the two are level, so float32 keeps the fused kernel (docs/benchmarks.md, the update profile)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.size(-1) ** -0.5)
    scores = scores.masked_fill(~keep_mask, float("-inf"))
    probs = F.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(v.dtype)
    return torch.matmul(probs_dropout(probs), v)


class AlbertLayer(nn.Module):
    def __init__(self, embed_dim, ffn_embed_dim, num_heads, activation_fn, dropout, attention_dropout, layer_norm_eps):
        super().__init__()
        self.self_attn = AlbertSelfAttention(embed_dim, num_heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.fc1 = nn.Linear(embed_dim, ffn_embed_dim)
        self.fc2 = nn.Linear(ffn_embed_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.activation_fn = activation(activation_fn)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, keep_mask)))
        return self.final_layer_norm(x + self.dropout(self.fc2(self.activation_fn(self.fc1(x)))))
