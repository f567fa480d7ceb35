"""``fairseq-npu-export``: a fairseq RoBERTa / ALBERT checkpoint -> a Hugging Face model directory.

    fairseq-npu-export CKPT DEST [--head-name NAME | --masked-lm] [--label-dict FILE] [--dict FILE]
                       [--gpt2-bpe-dir DIR] [--sentencepiece-model FILE] [--overwrite]

CKPT is what ``fairseq-train`` saves (``checkpoint_best.pt``) or what ``fairseq-npu-convert`` writes (a directory
with ``model.pt``). DEST receives ``config.json``, ``model.safetensors`` and the tokenizer files. A checkpoint with
one classification head becomes ``*ForSequenceClassification`` (regression for ``--regression-target`` or a
one-output head), with ``id2label`` from the task's ``label/dict.txt``; one without becomes ``*ForMaskedLM``
(``AlbertForPreTraining`` when it carries ALBERT's sentence-order head). The tensors are renamed with the
converter's own tables (albert.py, roberta.py) run backwards, so export and import cannot drift apart.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import torch

from fairseq_npu import albert_vocab

from . import albert, hf_tokenizer, roberta
from .command_line import converter_command
from .errors import ConversionError

logger = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("model.pt", "checkpoint_best.pt", "checkpoint_last.pt")
WEIGHTS_FILE = "model.safetensors"  # moved into DEST last: its presence means the export is complete

# fairseq roberta options whose other values change the network in ways Hugging Face's RoBERTa cannot express
ROBERTA_FIXED_OPTIONS = {
    "encoder_normalize_before": False,
    "layernorm_embedding": True,
    "no_scale_embedding": True,
    "encoder_learned_pos": True,
    "no_token_positional_embeddings": False,
    "adaptive_input": False,
    "untie_weights_roberta": False,
    "pooler_activation_fn": "tanh",
    "spectral_norm_classification_head": False,
}


def hf_activation(table: Dict[str, str], fairseq_name: str, option: str, source: str) -> str:
    """The Hugging Face name of a fairseq activation: the first entry of the converter's table that maps to it."""
    for hf_name, fs_name in table.items():
        if fs_name == fairseq_name:
            return hf_name
    raise ConversionError(f"{source}: --{option.replace('_', '-')} {fairseq_name} has no Hugging Face equivalent "
                          f"(supported: {', '.join(sorted(set(table.values())))})")


def _encoder_config(a, activations: Dict[str, str], source: str) -> dict:
    """The Hugging Face config keys that RoBERTa and ALBERT both read from a fairseq encoder's options."""
    return dict(
        num_hidden_layers=a.encoder_layers,
        num_attention_heads=a.encoder_attention_heads,
        intermediate_size=a.encoder_ffn_embed_dim,
        hidden_act=hf_activation(activations, a.activation_fn, "activation_fn", source),
        hidden_dropout_prob=a.dropout,
        attention_probs_dropout_prob=a.attention_dropout,
    )


# ----------------------------------------------------------------------------------------------------------------
# reading the checkpoint


class FairseqCheckpoint:
    """The parts of a fairseq checkpoint the export needs: weights, model options (arch defaults filled), task."""

    def __init__(self, path):
        path = Path(path)
        if path.is_dir():
            found = next((path / n for n in CHECKPOINT_NAMES if (path / n).is_file()), None)
            if found is None:
                raise ConversionError(f"{path}: no {', '.join(CHECKPOINT_NAMES)} in this directory")
            path = found
        if not path.is_file():
            raise ConversionError(f"{path}: no such checkpoint")
        self.path = path
        self.source = str(path)

        import fairseq_npu  # noqa: F401  (registers albert and installs the weights-only checkpoint loading)
        from fairseq import checkpoint_utils
        from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
        from fairseq.models.roberta import RobertaModel
        from omegaconf import OmegaConf

        from fairseq_npu.models.albert import AlbertModel

        from fairseq_npu.checkpoint_loading import CheckpointLoadError

        try:
            state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
        except CheckpointLoadError as err:  # damaged or unsafe: its own line names the file already
            raise ConversionError(str(err)) from None
        except Exception as err:  # noqa: BLE001 - torch/pickle raise many types for bad files
            # the file passed the integrity check: what fails now is its content, or this project
            raise ConversionError(f"{path}: cannot be read as a fairseq checkpoint "
                                  f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); the file is "
                                  "intact, so if fairseq itself loads it this is a bug in fairseq_npu, please report "
                                  "it") from None
        cfg = state.get("cfg")
        if cfg is None or cfg.get("model") is None or "model" not in state:
            raise ConversionError(f"{path}: not a fairseq checkpoint (no cfg.model or model weights)")
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True) if OmegaConf.is_config(cfg.model) \
            else dict(vars(cfg.model))
        self.arch = model_cfg.get("arch") or model_cfg.get("_name")
        model_class = ARCH_MODEL_REGISTRY.get(self.arch)
        if model_class is RobertaModel:
            self.family = "roberta"
        elif model_class is AlbertModel:
            self.family = "albert"
        else:
            found = model_class.__name__ if model_class is not None else "not registered"
            raise ConversionError(f"{path}: arch {self.arch!r} ({found}) cannot be exported: only fairseq's roberta "
                                  "and fairseq_npu's albert models have a Hugging Face counterpart here")
        args = argparse.Namespace(**model_cfg)
        ARCH_CONFIG_REGISTRY[self.arch](args)  # fills what older checkpoints leave unset, as fairseq does on load
        self.options = args
        task = cfg.get("task")
        self.task = (OmegaConf.to_container(task, resolve=True) if OmegaConf.is_config(task) else
                     dict(vars(task)) if task is not None else {})
        self.weights: Dict[str, torch.Tensor] = {
            k: v for k, v in state["model"].items() if not k.endswith(".version")  # fairseq's format markers
        }
        self.heads = {k.split(".")[1]: v.size(0) for k, v in self.weights.items()
                      if k.startswith("classification_heads.") and k.endswith(".out_proj.weight")}

    def data_file(self, *parts) -> Optional[Path]:
        """A file under the task's data directory (as trained), if that directory is still there."""
        data = str(self.task.get("data") or "").split(os.pathsep)[0]
        if not data:
            return None
        for base in (Path(data), self.path.parent / data):
            if (base.joinpath(*parts)).is_file():
                return base.joinpath(*parts)
        return None

    def beside(self, name) -> Optional[Path]:
        return self.path.parent / name if (self.path.parent / name).is_file() else None


def choose_head(ckpt: FairseqCheckpoint, head_name: Optional[str], masked_lm: bool) -> Optional[str]:
    """The classification head to export, or None for a masked-LM export."""
    if masked_lm:
        return None
    if head_name is not None:
        if head_name not in ckpt.heads:
            raise ConversionError(f"{ckpt.source}: no classification head {head_name!r} "
                                  f"(heads: {', '.join(ckpt.heads) or 'none'})")
        return head_name
    task_heads = [h for h in ckpt.heads if h != albert.SENTENCE_ORDER_HEAD]
    if len(task_heads) > 1:
        raise ConversionError(f"{ckpt.source}: {len(task_heads)} classification heads ({', '.join(task_heads)}); "
                              "pass --head-name NAME (or --masked-lm)")
    return task_heads[0] if task_heads else None


def read_labels(ckpt: FairseqCheckpoint, outputs: int, label_dict: Optional[str], notes: List[str]):
    """id2label from the label dictionary (fairseq's targets are its ids minus the specials), or None."""
    from fairseq.data import Dictionary

    path = Path(label_dict) if label_dict else ckpt.data_file("label", "dict.txt")
    if path is None:
        notes.append("no label dictionary found (--label-dict): labels are named LABEL_0..")
        return None
    try:
        d = Dictionary.load(str(path))
    except (OSError, ValueError, RuntimeError) as err:
        raise ConversionError(f"{path}: not a fairseq label dict.txt ({err})") from None
    labels = d.symbols[d.nspecial:]
    extra = labels[outputs:]
    if len(labels) < outputs or any(not s.startswith("madeupword") for s in extra):  # fairseq's padding symbols
        raise ConversionError(f"{path}: {len(labels)} labels, but head has {outputs} outputs")
    return {i: label for i, label in enumerate(labels[:outputs])}


# ----------------------------------------------------------------------------------------------------------------
# fairseq weights -> Hugging Face weights and config


def _take_tied_lm_weight(weights, words_key, source):
    lm = weights.pop("encoder.lm_head.weight", None)
    if lm is not None and not torch.equal(lm, weights[words_key]):
        raise ConversionError(f"{source}: encoder.lm_head.weight differs from the word embeddings; Hugging Face "
                              "ties them, untied output embeddings cannot be exported")


def _select(weights, head: Optional[str], keep_lm: bool, keep_prefixes=()) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in weights.items():
        if k.startswith("classification_heads."):
            if k.split(".")[1] != head and not k.startswith(keep_prefixes):
                continue
        elif k.startswith("encoder.lm_head.") and not keep_lm:
            continue
        out[k] = v
    return out


def roberta_to_hf(ckpt: FairseqCheckpoint, head: Optional[str], notes: List[str]):
    """(Hugging Face class name, state dict, config kwargs) of a fairseq roberta."""
    a, source = ckpt.options, ckpt.source
    for option, value in ROBERTA_FIXED_OPTIONS.items():
        if getattr(a, option, value) != value:
            raise ConversionError(f"{source}: --{option.replace('_', '-')} {getattr(a, option)} cannot be "
                                  f"represented in Hugging Face's RoBERTa (it needs {value})")
    if getattr(a, "encoder_layers_to_keep", None):
        raise ConversionError(f"{source}: --encoder-layers-to-keep cannot be represented in Hugging Face's RoBERTa")
    weights = dict(ckpt.weights)
    words_key = "encoder.sentence_encoder.embed_tokens.weight"
    _take_tied_lm_weight(weights, words_key, source)
    if head is not None:
        inner = weights[f"classification_heads.{head}.dense.weight"].size(0)
        if inner != a.encoder_embed_dim:
            raise ConversionError(f"{source}: head {head!r} has inner dimension {inner}; Hugging Face's RoBERTa "
                                  f"head has the hidden size {a.encoder_embed_dim}")
    weights = _select(weights, head, keep_lm=head is None)
    hidden = weights[words_key].size(1)
    # the converter folds token_type_embeddings[0] into the positions; fairseq has no segments, so the row is 0
    weights["folded.token_type_embeddings"] = torch.zeros(1, hidden, dtype=weights[words_key].dtype)
    hf_state = roberta.hf_to_fairseq(head or albert.DEFAULT_HEAD).backward(weights, source)
    config = dict(
        vocab_size=weights[words_key].size(0),
        hidden_size=hidden,
        **_encoder_config(a, roberta.HF_ACTIVATIONS, source),
        classifier_dropout=a.pooler_dropout,
        max_position_embeddings=weights["encoder.sentence_encoder.embed_positions.weight"].size(0),
        type_vocab_size=1,
        layer_norm_eps=roberta.FAIRSEQ_LAYER_NORM_EPS,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )
    if head is None and ckpt.heads:
        notes.append(f"classification heads not exported: {', '.join(ckpt.heads)}")
    elif head is not None:
        notes.append("encoder.lm_head not exported (RobertaForSequenceClassification has none)")
    return ("RobertaForSequenceClassification" if head else "RobertaForMaskedLM"), hf_state, config


def albert_to_hf(ckpt: FairseqCheckpoint, head: Optional[str], notes: List[str]):
    """(Hugging Face class name, state dict, config kwargs) of a fairseq_npu albert."""
    a, source = ckpt.options, ckpt.source
    weights = dict(ckpt.weights)
    words_key = "encoder.embeddings.word_embeddings.weight"
    _take_tied_lm_weight(weights, words_key, source)
    words = weights[words_key]
    vocab = words.size(0) - 1  # the task's <mask> is the extra last row
    pretraining = head is None and albert.SENTENCE_ORDER_HEAD in ckpt.heads
    if head is None and not torch.equal(words[vocab], words[albert_vocab.SPM_MASK]):
        # fairseq's masked_lm masks with the appended <mask>; Hugging Face's tokenizer masks with [MASK]
        words = words.clone()
        words[albert_vocab.SPM_MASK] = words[vocab]
        notes.append("the trained <mask> row becomes the [MASK] embedding (fairseq masks with <mask>)")
    weights[words_key] = albert_vocab.fairseq_rows_to_spm(words, vocab)
    if "encoder.lm_head.bias" in weights:
        weights["encoder.lm_head.bias"] = albert_vocab.fairseq_rows_to_spm(weights["encoder.lm_head.bias"], vocab)
    keep = (f"classification_heads.{albert.SENTENCE_ORDER_HEAD}.",) if pretraining else ()
    weights = _select(weights, head, keep_lm=head is None, keep_prefixes=keep)
    if head is None and not pretraining:
        weights = {k: v for k, v in weights.items() if not k.startswith("encoder.pooler.")}  # MaskedLM: no pooler
    hf_state = albert.hf_to_fairseq(head or albert.DEFAULT_HEAD).backward(weights, source)
    config = dict(
        vocab_size=vocab,
        embedding_size=a.embedding_dim,
        hidden_size=a.encoder_embed_dim,
        **_encoder_config(a, albert.HF_ACTIVATIONS, source),
        num_hidden_groups=a.num_hidden_groups,
        inner_group_num=a.inner_group_num,
        classifier_dropout_prob=a.pooler_dropout,
        max_position_embeddings=a.max_positions,
        type_vocab_size=a.type_vocab_size,
        layer_norm_eps=a.layer_norm_eps,
        pad_token_id=albert_vocab.SPM_PAD, bos_token_id=albert_vocab.SPM_CLS, eos_token_id=albert_vocab.SPM_SEP,
    )
    dropped = [h for h in ckpt.heads if h != head and not (pretraining and h == albert.SENTENCE_ORDER_HEAD)]
    if dropped:
        notes.append(f"classification heads not exported: {', '.join(dropped)}")
    if head is not None:
        notes.append("encoder.lm_head not exported (AlbertForSequenceClassification has none)")
    name = "AlbertForSequenceClassification" if head else "AlbertForPreTraining" if pretraining else "AlbertForMaskedLM"
    return name, hf_state, config


def build_hf_model(class_name: str, state: Dict[str, torch.Tensor], config_kwargs: dict, source: str):
    """The Hugging Face model with these weights; every one of its tensors is loaded or tied to a loaded one."""
    import transformers

    model_class = getattr(transformers, class_name)
    config = model_class.config_class(**config_kwargs, architectures=[class_name])
    model = model_class(config).to(next(iter(state.values())).dtype).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ConversionError(f"{source}: {class_name} has no tensor {sorted(unexpected)[0]!r} "
                              f"({len(unexpected)} unexpected)")
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in state}
    own = model.state_dict()
    untied = [k for k in missing if own[k].data_ptr() not in loaded and k in dict(model.named_parameters())]
    if untied:
        raise ConversionError(f"{source}: no weights for {class_name} tensor {untied[0]!r}")
    return model


# ----------------------------------------------------------------------------------------------------------------
# tokenizer files and the directory


def write_tokenizer(ckpt: FairseqCheckpoint, directory: Path, rows: int, max_length: int, args, notes: List[str]):
    if ckpt.family == "roberta":
        from fairseq.data import Dictionary

        dict_path = (Path(args.dict_file) if args.dict_file else ckpt.beside("dict.txt")
                     or ckpt.data_file("input0", "dict.txt") or ckpt.data_file("dict.txt"))
        bpe_dir = Path(args.gpt2_bpe_dir) if args.gpt2_bpe_dir else None
        candidates = [bpe_dir] if bpe_dir else [ckpt.path.parent, _manifest_vocab_dir(ckpt),
                                                Path.home() / ".cache" / "fairseq_npu" / "gpt2_bpe"]
        bpe = next((d for d in candidates if d and (d / "encoder.json").is_file() and (d / "vocab.bpe").is_file()),
                   None)
        if dict_path is None or bpe is None:
            what = "dict.txt (--dict)" if dict_path is None else "encoder.json + vocab.bpe (--gpt2-bpe-dir)"
            if bpe_dir is not None and bpe is None:
                raise ConversionError(f"{bpe_dir}: needs encoder.json and vocab.bpe")
            notes.append(f"no {what} found: tokenizer files not written")
            return
        try:
            symbols = Dictionary.load(str(dict_path)).symbols
        except (OSError, ValueError, RuntimeError) as err:
            raise ConversionError(f"{dict_path}: not a fairseq dict.txt ({err})") from None
        odd = hf_tokenizer.not_gpt2_symbol(symbols)
        if odd is not None:  # e.g. a word-level dictionary: GPT-2's BPE would not produce these ids
            notes.append(f"{dict_path}:{odd[0]}: {odd[1]!r} is no GPT-2 BPE id: tokenizer files not written")
            return
        hf_tokenizer.write_roberta(directory, symbols, dict_path, bpe / "encoder.json", bpe / "vocab.bpe", rows,
                                   max_length)
        notes.append(f"tokenizer: vocab.json from {dict_path} + {bpe / 'encoder.json'}, merges.txt")
    else:
        spm = (Path(args.sentencepiece_model) if args.sentencepiece_model else ckpt.beside("spiece.model")
               or ckpt.data_file("spiece.model"))
        if spm is None:
            notes.append("no SentencePiece model found (--sentencepiece-model): tokenizer files not written")
            return
        pieces = albert_vocab.read_spm_pieces(spm)
        if len(pieces) != rows:
            raise ConversionError(f"{spm}: {len(pieces)} pieces, but the model has {rows} word embeddings")
        hf_tokenizer.write_albert(directory, spm, max_length)
        notes.append(f"tokenizer: spiece.model from {spm}")


def _manifest_vocab_dir(ckpt: FairseqCheckpoint) -> Optional[Path]:
    """Where the GLUE preprocessor found encoder.json (recorded in TASK-bin/preprocess.json)."""
    manifest = ckpt.data_file("preprocess.json")
    if manifest is None:
        return None
    try:
        encoder_json = json.loads(manifest.read_text(encoding="utf-8"))["vocabulary"]["encoder_json"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(encoder_json).parent


def export(ckpt_path, dest, head_name=None, masked_lm=False, label_dict=None, dict_file=None, gpt2_bpe_dir=None,
           sentencepiece_model=None, overwrite=False):
    """Export ``ckpt_path`` into ``dest``; returns (Hugging Face class name, notes)."""
    args = argparse.Namespace(dict_file=dict_file, gpt2_bpe_dir=gpt2_bpe_dir, sentencepiece_model=sentencepiece_model)
    notes: List[str] = []
    ckpt = FairseqCheckpoint(ckpt_path)
    head = choose_head(ckpt, head_name, masked_lm)
    to_hf = roberta_to_hf if ckpt.family == "roberta" else albert_to_hf
    class_name, state, config = to_hf(ckpt, head, notes)
    if head is not None:
        outputs = ckpt.heads[head]
        regression = bool(ckpt.task.get("regression_target")) or outputs == 1
        config["num_labels"] = outputs
        if regression:
            config["problem_type"] = "regression"
        else:
            config["problem_type"] = "single_label_classification"
            id2label = read_labels(ckpt, outputs, label_dict, notes)
            if id2label:
                config["id2label"] = id2label
                config["label2id"] = {v: k for k, v in id2label.items()}
        notes.append(f"head {head!r}: " + ("regression, outputs on the trained scale (the GLUE preprocessor "
                                           "trains STS-B on score / 5)" if regression else f"{outputs} classes"))
    model = build_hf_model(class_name, state, config, ckpt.source)

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=dest))
    try:
        model.save_pretrained(str(staging))
        max_length = config["max_position_embeddings"] - (2 if ckpt.family == "roberta" else 0)
        write_tokenizer(ckpt, staging, config["vocab_size"], max_length, args, notes)
        names = sorted(p.name for p in staging.iterdir())
        if not overwrite:
            existing = [n for n in names if (dest / n).exists()]
            if existing:
                raise FileExistsError(f"{dest / existing[0]} exists; pass --overwrite to replace it")
        for name in sorted(names, key=lambda n: n == WEIGHTS_FILE):
            os.replace(staging / name, dest / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return class_name, notes


def get_parser():
    p = argparse.ArgumentParser(
        prog="fairseq-npu-export",
        description="Export a fairseq RoBERTa or ALBERT checkpoint (pretrained/masked-LM or fine-tuned) as a "
        "Hugging Face model directory: config.json, model.safetensors and the tokenizer files.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint file (checkpoint_best.pt, model.pt) or a "
                   "directory with model.pt")
    p.add_argument("dest", metavar="DEST", help="output directory")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--head-name", help="classification head to export (default: the checkpoint's only one)")
    which.add_argument("--masked-lm", action="store_true", help="export the masked-LM model, ignoring any heads")
    p.add_argument("--label-dict", help="label dict.txt for id2label (default: the task's DATA/label/dict.txt)")
    p.add_argument("--dict", dest="dict_file", help="RoBERTa: fairseq dict.txt (default: beside CKPT, else the "
                   "task's DATA/input0/dict.txt)")
    p.add_argument("--gpt2-bpe-dir", help="RoBERTa: folder with GPT-2's encoder.json and vocab.bpe (default: beside "
                   "CKPT, where the preprocessor found them, ~/.cache/fairseq_npu/gpt2_bpe)")
    p.add_argument("--sentencepiece-model", help="ALBERT: SentencePiece model (default: spiece.model beside CKPT, "
                   "else in the task's DATA)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in DEST")
    return p


@converter_command("fairseq-npu-export", get_parser)
def cli_main(args):
    try:
        import transformers
    except ImportError:
        raise ConversionError("needs transformers (pip install 'fairseq_npu[convert]')") from None
    transformers.utils.logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar
    class_name, notes = export(args.checkpoint, args.dest, args.head_name, args.masked_lm, args.label_dict,
                               args.dict_file, args.gpt2_bpe_dir, args.sentencepiece_model, args.overwrite)
    print(f"wrote {Path(args.dest) / WEIGHTS_FILE} ({class_name})")
    for note in notes:
        print(f"  {note}")
    auto = "AutoModelForSequenceClassification" if "Sequence" in class_name else \
        "AutoModelForPreTraining" if "PreTraining" in class_name else "AutoModelForMaskedLM"
    print(f"load with: transformers.{auto}.from_pretrained({str(args.dest)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
