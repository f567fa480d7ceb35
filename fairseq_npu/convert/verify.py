"""Check a conversion: the Hugging Face source and the converted fairseq model on the same random padded batch.

    python -m fairseq_npu.convert.verify SRC_DIR DEST_DIR [--batch 4] [--length 64] [--seed 0]

Loads SRC_DIR with transformers (AlbertModel / RobertaModel: the shared encoder, heads aside), DEST_DIR/model.pt with
fairseq (weights_only), feeds both the same text ids (SentencePiece ids to ALBERT, mapped to fairseq ids for ours)
with pairs and right padding, and prints the largest difference of the last hidden states at non-padding positions.
Exit status 1 when it exceeds --tolerance.
"""

import argparse
import sys

import torch

from fairseq_npu import albert_vocab


def random_batch(batch, length, vocab, cls, sep, pad, generator):
    """Rows ``cls A sep B sep`` (every other row single-sentence), right-padded to different lengths."""
    ids = torch.full((batch, length), pad, dtype=torch.long)
    for r in range(batch):
        n = max(4, length - 7 * r)
        body = torch.randint(5, vocab, (n,), generator=generator)
        body[0] = cls
        body[-1] = sep
        if r % 2 == 0:
            body[n // 2] = sep
        ids[r, :n] = body
    return ids


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fairseq_npu.convert.verify", description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args(argv)

    import transformers
    from fairseq import checkpoint_utils

    import fairseq_npu  # noqa: F401  (registers the albert model)
    from fairseq_npu.models.albert.embeddings import token_types_from_eos

    from .albert import build_reference_model as build_albert
    from .roberta import build_reference_model as build_roberta

    config = transformers.AutoConfig.from_pretrained(args.src)
    state = checkpoint_utils.load_checkpoint_to_cpu(f"{args.dest}/model.pt")
    model_cfg = state["cfg"].model
    g = torch.Generator().manual_seed(args.seed)
    length = min(args.length, config.max_position_embeddings - (2 if config.model_type == "roberta" else 0))
    if config.model_type == "albert":
        hf = transformers.AlbertModel.from_pretrained(args.src, add_pooling_layer=False).eval()
        options = {k: getattr(model_cfg, k) for k in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                   "encoder_attention_heads", "embedding_dim", "num_hidden_groups", "inner_group_num",
                   "type_vocab_size", "max_positions", "activation_fn", "layer_norm_eps")}
        ours = build_albert(options, config.vocab_size, {})
        ids = random_batch(args.batch, length, config.vocab_size, albert_vocab.SPM_CLS, albert_vocab.SPM_SEP,
                           albert_vocab.SPM_PAD, g)
        hf_in = dict(input_ids=ids, attention_mask=ids.ne(albert_vocab.SPM_PAD).long(),
                     token_type_ids=token_types_from_eos(ids, albert_vocab.SPM_SEP))
        our_ids = albert_vocab.spm_to_fairseq_ids(ids)
    elif config.model_type == "roberta":
        hf = transformers.RobertaModel.from_pretrained(args.src, add_pooling_layer=False).eval()
        options = {k: getattr(model_cfg, k) for k in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                   "encoder_attention_heads", "max_positions", "activation_fn")}
        ours = build_roberta(options, config.vocab_size, {})
        ids = random_batch(args.batch, length, config.vocab_size, 0, 2, 1, g)
        hf_in = dict(input_ids=ids, attention_mask=ids.ne(1).long())
        our_ids = ids
    else:
        print(f"{args.src}: model_type {config.model_type!r} is neither albert nor roberta", file=sys.stderr)
        return 2
    # fairseq's load drops checkpoint heads the model lacks (roberta semantics); everything else must match
    ours.load_state_dict(state["model"], strict=True, model_cfg=ours.cfg if hasattr(ours, "cfg") else None)
    ours.eval()
    with torch.no_grad():
        theirs = hf(**hf_in).last_hidden_state
        mine, _ = ours(our_ids, features_only=True)
    keep = hf_in["attention_mask"].bool()
    diff = (mine[keep] - theirs[keep]).abs().max().item()
    print(f"{config.model_type}: batch {tuple(ids.shape)}, max |hidden-state difference| at non-pad positions "
          f"{diff:.3g} (hidden-state std {theirs[keep].std().item():.3g}, tolerance {args.tolerance:g})")
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
