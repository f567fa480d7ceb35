"""``AlbertHubInterface``: load a converted or fine-tuned ALBERT directory and encode / classify raw text.

Mirrors fairseq's RobertaHubInterface (``from_pretrained``, ``encode``, ``decode``, ``extract_features``,
``register_classification_head``, ``predict``), with ALBERT's SentencePiece tokenisation and id map.
"""

import os
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from fairseq_npu import albert_vocab


class AlbertHubInterface(nn.Module):
    def __init__(self, cfg, task, model, sentencepiece_model: str):
        super().__init__()
        import sentencepiece

        self.cfg = cfg
        self.task = task
        self.model = model
        self.spm = sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_model))
        self.spm_vocab_size = self.spm.get_piece_size()
        albert_vocab.check_fairseq_dictionary(task.source_dictionary, self.spm_vocab_size, str(sentencepiece_model))
        self.register_buffer("_float_tensor", torch.tensor([0], dtype=torch.float), persistent=False)

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".",
                        sentencepiece_model="spiece.model", **kwargs):
        """``model_name_or_path``: directory with ``checkpoint_file``; ``data_name_or_path`` (relative to it): the
        task's data directory (``dict.txt`` for masked_lm, ``input0/dict.txt`` for sentence_prediction)."""
        from fairseq import hub_utils

        x = hub_utils.from_pretrained(
            model_name_or_path, checkpoint_file, data_name_or_path, load_checkpoint_heads=True, **kwargs
        )
        spm_path = os.path.join(model_name_or_path, sentencepiece_model)
        return cls(x["args"], x["task"], x["models"][0], spm_path)

    @property
    def device(self):
        return self._float_tensor.device

    def encode(self, sentence: str, *addl_sentences: str) -> torch.LongTensor:
        """fairseq ids of ``[CLS] A [SEP] B [SEP] ...`` (ALBERT's layout), truncated to the model's positions."""
        ids = [albert_vocab.FAIRSEQ_BOS] + albert_vocab.encode_text(self.spm, sentence) + [albert_vocab.FAIRSEQ_EOS]
        for s in addl_sentences:
            ids += albert_vocab.encode_text(self.spm, s) + [albert_vocab.FAIRSEQ_EOS]
        return torch.tensor(ids[: self.model.max_positions()], dtype=torch.long)

    def decode(self, tokens: torch.LongTensor):
        """Text of each segment (split at ``[SEP]``); one string for a single sentence."""
        tokens = tokens.tolist() if tokens.dim() == 1 else tokens[0].tolist()
        if tokens and tokens[0] == albert_vocab.FAIRSEQ_BOS:
            tokens = tokens[1:]
        segments: List[List[int]] = [[]]
        for t in tokens:
            if t == albert_vocab.FAIRSEQ_EOS:
                segments.append([])
            elif t != albert_vocab.FAIRSEQ_PAD:
                segments[-1].append(albert_vocab.spm_id(t, self.spm_vocab_size))
        texts = [self.spm.decode(s) for s in segments if s]
        return texts[0] if len(texts) == 1 else texts

    def _batch(self, tokens):
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.size(-1) > self.model.max_positions():
            raise ValueError(f"tokens exceeds maximum length: {tokens.size(-1)} > {self.model.max_positions()}")
        return tokens.to(device=self.device)

    def extract_features(self, tokens: torch.LongTensor, return_all_hiddens: bool = False):
        """B x T x H features of the last layer (or a list of all, embeddings first)."""
        features, extra = self.model(self._batch(tokens), features_only=True, return_all_hiddens=return_all_hiddens)
        if return_all_hiddens:
            return [h.transpose(0, 1) for h in extra["inner_states"]]
        return features

    def register_classification_head(self, name: str, num_classes: int = None, **kwargs):
        self.model.register_classification_head(name, num_classes=num_classes, **kwargs)

    def predict(self, head: str, tokens: torch.LongTensor, return_logits: bool = False):
        logits, _ = self.model(self._batch(tokens), classification_head_name=head)
        return logits if return_logits else F.log_softmax(logits, dim=-1)

    def pad_batch(self, token_lists) -> torch.LongTensor:
        """Right-pad several encoded inputs into one batch (the layout the model expects)."""
        longest = max(len(t) for t in token_lists)
        out = torch.full((len(token_lists), longest), albert_vocab.FAIRSEQ_PAD, dtype=torch.long)
        for i, t in enumerate(token_lists):
            out[i, : len(t)] = t
        return out
