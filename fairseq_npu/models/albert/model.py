"""The ``albert`` fairseq model: ALBERT encoder + classification heads, registered with archs albert_base..xxlarge."""

import dataclasses
import logging

import torch.nn.functional as F
from torch import nn

from fairseq.models import FairseqEncoderModel, register_model, register_model_architecture
from fairseq.utils import safe_getattr

from .config import ARCHITECTURES, AlbertConfig
from .encoder import AlbertEncoder
from .heads import AlbertClassificationHead

logger = logging.getLogger(__name__)

SENTENCE_ORDER_HEAD = "sentence_order_head"  # where ALBERT's SOP classifier lives (pretraining checkpoints)
HEADS_PREFIX = "classification_heads."


@register_model("albert", dataclass=AlbertConfig)
class AlbertModel(FairseqEncoderModel):
    def __init__(self, cfg, encoder):
        super().__init__(encoder)
        self.cfg = cfg
        self.args = cfg  # fairseq code (and users) reach model options through model.args, as for roberta
        self.classification_heads = nn.ModuleDict()
        self.apply(self._init_weights)

    def _init_weights(self, module):
        """BERT initialisation: N(0, init_std) weights, zero biases and padding row, unit LayerNorm."""
        std = self.cfg.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @classmethod
    def build_model(cls, cfg, task):
        return cls(cfg, AlbertEncoder(cfg, task.source_dictionary))

    def forward(self, src_tokens, features_only=False, return_all_hiddens=False, classification_head_name=None,
                **kwargs):
        if classification_head_name is not None:
            features_only = True
        x, extra = self.encoder(src_tokens, features_only, return_all_hiddens, **kwargs)
        if classification_head_name is not None:
            x = self.classification_heads[classification_head_name](self.encoder.pool(x))
        return x, extra

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        logits = net_output[0].float()
        return F.log_softmax(logits, dim=-1) if log_probs else F.softmax(logits, dim=-1)

    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        """Add (or replace) head ``name``: dropout + linear on the shared pooler output."""
        hidden = self.cfg.encoder_embed_dim
        if inner_dim is not None and inner_dim != hidden:
            raise ValueError(f"ALBERT heads sit on the {hidden}-dim pooler; inner_dim {inner_dim} is not supported")
        if name in self.classification_heads:
            previous = self.classification_heads[name].out_proj.out_features
            if previous != num_classes:
                logger.warning(f're-registering head "{name}" with num_classes {num_classes} (prev: {previous})')
        head = AlbertClassificationHead(hidden, num_classes, self.cfg.pooler_dropout)
        head.apply(self._init_weights)
        head.train(self.training)  # a head added to a model in eval mode must not apply dropout
        self.classification_heads[name] = head

    @property
    def supported_targets(self):
        return {"self"}

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".",
                        sentencepiece_model="spiece.model", **kwargs):
        """Load a converted (or fine-tuned) directory as an :class:`AlbertHubInterface`."""
        from .hub_interface import AlbertHubInterface

        return AlbertHubInterface.from_pretrained(
            model_name_or_path, checkpoint_file, data_name_or_path, sentencepiece_model, **kwargs
        )

    def upgrade_state_dict_named(self, state_dict, name):
        """Reconcile checkpoint heads with this model's, with the semantics of fairseq roberta.

        A head in the checkpoint but not in the model is dropped (or registered with --load-checkpoint-heads); a
        head whose size differs from the model's is dropped; a head only in the model keeps its fresh weights.
        """
        prefix = name + "." if name != "" else ""
        super().upgrade_state_dict_named(state_dict, name)
        current = self.classification_heads
        sizes = {}
        for k, v in state_dict.items():
            if k.startswith(prefix + HEADS_PREFIX) and k.endswith(".out_proj.weight"):
                sizes[k[len(prefix + HEADS_PREFIX):].split(".")[0]] = v.size(0)
        to_delete = []
        for k in state_dict:
            if not k.startswith(prefix + HEADS_PREFIX):
                continue
            head = k[len(prefix + HEADS_PREFIX):].split(".")[0]
            if head not in sizes:
                raise KeyError(f"checkpoint head {head!r} has no out_proj.weight (found {k})")
            if safe_getattr(self.cfg, "load_checkpoint_heads", False):
                if head not in current:
                    self.register_classification_head(head, sizes[head])
            elif head not in current:
                logger.warning(f"deleting classification head ({head}) from checkpoint not present in current model: {k}")
                to_delete.append(k)
            elif sizes[head] != current[head].out_proj.out_features:
                logger.warning(
                    f"deleting classification head ({head}) from checkpoint with different dimensions than "
                    f"current model: {k}"
                )
                to_delete.append(k)
        for k in to_delete:
            del state_dict[k]
        for k, v in current.state_dict().items():
            if prefix + HEADS_PREFIX + k not in state_dict:
                logger.info("Overwriting " + prefix + HEADS_PREFIX + k)
                state_dict[prefix + HEADS_PREFIX + k] = v


def _fill_architecture(cfg, arch: str) -> None:
    """Fill every option the command line left unset: the arch's sizes (config.ARCHITECTURES), else the
    AlbertConfig default."""
    defaults = {f.name: f.default for f in dataclasses.fields(AlbertConfig) if f.name != "_name"}
    defaults.update(ARCHITECTURES[arch])
    for name, value in defaults.items():
        if safe_getattr(cfg, name, None) is None:
            setattr(cfg, name, value)


@register_model_architecture("albert", "albert_base")
def albert_base_architecture(cfg):
    _fill_architecture(cfg, "albert_base")


@register_model_architecture("albert", "albert_large")
def albert_large_architecture(cfg):
    _fill_architecture(cfg, "albert_large")


@register_model_architecture("albert", "albert_xlarge")
def albert_xlarge_architecture(cfg):
    _fill_architecture(cfg, "albert_xlarge")


@register_model_architecture("albert", "albert_xxlarge")
def albert_xxlarge_architecture(cfg):
    _fill_architecture(cfg, "albert_xxlarge")
