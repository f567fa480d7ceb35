"""ALBERT's task heads: masked-LM (tied to the word embeddings) and sentence classification / regression / SOP."""

import torch
import torch.nn.functional as F
from torch import nn

from .layer import activation


class AlbertLMHead(nn.Module):
    """dense H->E, activation, LayerNorm(E), then the (tied) word embeddings E->V plus a bias."""

    def __init__(self, embed_dim, embedding_dim, activation_fn, layer_norm_eps, weight):
        super().__init__()
        self.dense = nn.Linear(embed_dim, embedding_dim)
        self.activation_fn = activation(activation_fn)
        self.layer_norm = nn.LayerNorm(embedding_dim, eps=layer_norm_eps)
        self.weight = weight
        self.bias = nn.Parameter(torch.zeros(weight.size(0)))

    def forward(self, features, masked_tokens=None):
        if masked_tokens is not None:  # project only the masked positions, as fairseq's roberta does
            features = features[masked_tokens, :]
        x = self.layer_norm(self.activation_fn(self.dense(features)))
        return F.linear(x, self.weight, self.bias)


class AlbertClassificationHead(nn.Module):
    """dropout + linear on the pooled [CLS] vector (the pooler itself belongs to the encoder, as in ALBERT).

    Used for GLUE classification, STS-B regression (one output) and sentence-order prediction (two outputs).
    """

    def __init__(self, embed_dim, num_classes, pooler_dropout):
        super().__init__()
        self.dropout = nn.Dropout(pooler_dropout)
        self.out_proj = nn.Linear(embed_dim, num_classes)

    def forward(self, pooled, **kwargs):
        return self.out_proj(self.dropout(pooled))
