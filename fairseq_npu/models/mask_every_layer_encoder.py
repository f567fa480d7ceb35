"""RoBERTa's sentence encoder (fairseq's ``TransformerEncoder``) without asking the device whether a batch has
padding, for the device update (``--update-mode device|graph``).

Stock ``forward_scriptable`` computes ``has_pads = encoder_padding_mask.any()`` on the device and branches on it in
every layer (``encoder_padding_mask if has_pads else None``): one host sync per layer, and an error inside a CUDA
graph capture. Here every layer gets the mask. A batch with padding runs exactly as in stock; a batch without any
gets an all-False mask instead of None, which masks nothing. Same parameters and names, so checkpoints load
unchanged; the swap changes the class of the existing module only (``use_mask_every_layer``).
"""

import torch
from fairseq.models.transformer.transformer_encoder import TransformerEncoderBase


class MaskEveryLayerEncoder(TransformerEncoderBase):
    # Copied from fairseq 0.12.3 (ve-fairseq) TransformerEncoderBase.forward_scriptable; the change: no has_pads.
    def forward_scriptable(self, src_tokens, src_lengths=None, return_all_hiddens: bool = False,
                           token_embeddings=None):
        encoder_padding_mask = src_tokens.eq(self.padding_idx)
        x, encoder_embedding = self.forward_embedding(src_tokens, token_embeddings)
        x = x * (1 - encoder_padding_mask.unsqueeze(-1).type_as(x))  # stock: times has_pads
        x = x.transpose(0, 1)  # B x T x C -> T x B x C
        encoder_states, fc_results = [], []
        if return_all_hiddens:
            encoder_states.append(x)
        for layer in self.layers:
            out = layer(x, encoder_padding_mask=encoder_padding_mask)  # stock: None when has_pads is False
            x, fc_result = out if isinstance(out, tuple) and len(out) == 2 else (out, None)
            if return_all_hiddens:
                encoder_states.append(x)
                fc_results.append(fc_result)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        src_lengths = src_tokens.ne(self.padding_idx).sum(dim=1, dtype=torch.int32).reshape(-1, 1).contiguous()
        return {
            "encoder_out": [x], "encoder_padding_mask": [encoder_padding_mask],
            "encoder_embedding": [encoder_embedding], "encoder_states": encoder_states,
            "fc_results": fc_results, "src_tokens": [], "src_lengths": [src_lengths],
        }


def use_mask_every_layer(model: torch.nn.Module) -> int:
    """Turns every fairseq TransformerEncoder of ``model`` into ``MaskEveryLayerEncoder`` in place; returns how
    many. Subclasses with a forward of their own are left alone."""
    swapped = 0
    for module in model.modules():
        base = type(module)
        if (isinstance(module, TransformerEncoderBase) and not isinstance(module, MaskEveryLayerEncoder)
                and base.forward_scriptable is TransformerEncoderBase.forward_scriptable):
            module.__class__ = type(f"MaskEveryLayer{base.__name__}", (MaskEveryLayerEncoder, base), {})
            swapped += 1
    return swapped
