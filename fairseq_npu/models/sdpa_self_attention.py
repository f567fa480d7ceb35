"""RoBERTa's self-attention through ``F.scaled_dot_product_attention`` with a boolean padding mask
(``--sdpa-attention`` of sentence_prediction_npu; off by default, so stock runs stay stock).

fairseq 0.12.3's ``MultiheadAttention`` already calls ``F.multi_head_attention_forward`` for encoder self-attention,
which reaches ``scaled_dot_product_attention`` too, but with the padding mask turned into an additive float mask
(plus a bias concatenation and the mask merge, every layer and every step). The boolean form is what torch_npu runs
as its fused FlashAttentionScore kernel (a float mask falls back to the unfused path there); on CUDA and CPU both
forms reach the same kernels. ALBERT's layer (``models/albert/layer.py``) uses the same call.

The swap changes the class of the existing modules only: same parameters, same names, so checkpoints load
unchanged both ways. Every case other than plain self-attention without weights (incremental decoding, an
``attn_mask``, ``need_weights``, added key/value biases) goes to fairseq's own forward.
"""

import torch
import torch.nn.functional as F
from fairseq.modules.multihead_attention import MultiheadAttention


class SdpaSelfAttention(MultiheadAttention):
    """fairseq's MultiheadAttention whose plain self-attention is one ``scaled_dot_product_attention`` call."""

    def forward(self, query, key, value, key_padding_mask=None, incremental_state=None, need_weights=True,
                static_kv=False, attn_mask=None, before_softmax=False, need_head_weights=False):
        # Parallel to fairseq 0.12.3 modules/multihead_attention.py MultiheadAttention.forward's test for its
        # F.multi_head_attention_forward path (onnx_trace, xla, incremental_state, static_kv, jit scripting,
        # skip_embed_dim_check), plus the cases this one call does not model
        if (need_weights or need_head_weights or before_softmax or incremental_state is not None or static_kv
                or attn_mask is not None or not self.self_attention or self.bias_k is not None
                or self.add_zero_attn or self.skip_embed_dim_check or self.onnx_trace
                or query.device.type == "xla" or torch.jit.is_scripting()):
            return super().forward(query, key, value, key_padding_mask, incremental_state, need_weights, static_kv,
                                   attn_mask, before_softmax, need_head_weights)
        tgt_len, bsz, embed_dim = query.size()

        def heads(t):  # T x B x C -> B x heads x T x head_dim
            return t.view(tgt_len, bsz, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

        keep = None
        if key_padding_mask is not None:  # fairseq: True on padding; scaled_dot_product_attention: True = attend
            keep = key_padding_mask.logical_not().view(bsz, 1, 1, tgt_len)
        dropout = self.dropout_module.p if self.training or self.dropout_module.apply_during_inference else 0.0
        out = F.scaled_dot_product_attention(heads(self.q_proj(query)), heads(self.k_proj(query)),
                                             heads(self.v_proj(query)), attn_mask=keep, dropout_p=dropout)
        return self.out_proj(out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)), None


def use_sdpa_attention(model: torch.nn.Module) -> int:
    """Turns every plain fairseq self-attention module of ``model`` into ``SdpaSelfAttention``, in place; returns
    how many. Modules of other classes (ALBERT's, xformers-backed ones) are left alone."""
    swapped = 0
    for module in model.modules():
        if type(module) is MultiheadAttention and module.self_attention and not module.use_xformers:
            module.__class__ = SdpaSelfAttention
            swapped += 1
    return swapped
