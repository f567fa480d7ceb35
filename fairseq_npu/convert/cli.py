"""``fairseq-npu-convert``: Hugging Face / lonePatient ALBERT and Hugging Face RoBERTa directories -> fairseq.

    fairseq-npu-convert SRC_DIR DEST_DIR [--model auto|albert|roberta] [--head-name NAME]
                        [--sentencepiece-model FILE] [--dict FILE] [--overwrite]

DEST_DIR receives ``model.pt`` (for ``fairseq-train --restore-file`` and ``from_pretrained``) and, when the
vocabulary is known, ``dict.txt`` (+ ``spiece.model`` for ALBERT), like fairseq's published model archives.
"""

import argparse
import sys
from pathlib import Path

from fairseq_npu import albert_vocab

from . import albert, roberta
from .checkpoint import checkpoint_state, fairseq_cfg, write_directory
from .command_line import converter_command
from .errors import ConversionError
from .source import read_directory

SPM_NAMES = ("spiece.model", "30k-clean.model", "sentencepiece.model")


def detect_model(config: dict, state: dict) -> str:
    kind = config.get("model_type")
    if kind in ("albert", "roberta"):
        return kind
    if albert.is_lonepatient(state) or "embedding_size" in config:
        return "albert"
    raise ConversionError("cannot tell the model type (config.json has no model_type albert/roberta); pass --model")


def convert(src, dest, model="auto", head_name=albert.DEFAULT_HEAD, sentencepiece_model=None, dict_file=None,
            overwrite=False):
    """Convert directory ``src`` into ``dest``; returns (path of model.pt, arch, model options, notes)."""
    src = Path(src)
    config, state, weights_path = read_directory(src)
    source = str(weights_path)
    kind = detect_model(config, state) if model == "auto" else model
    text_files, copies = {}, {}
    if kind == "albert":
        converted, options, notes = albert.convert_albert(state, config, source, head_name)
        arch = albert.arch_for(options)
        spm = Path(sentencepiece_model) if sentencepiece_model else next(
            (src / n for n in SPM_NAMES if (src / n).is_file()), None)
        if spm is not None:
            pieces = albert_vocab.read_spm_pieces(spm)
            rows = converted["encoder.embeddings.word_embeddings.weight"].size(0) - 1
            if len(pieces) != rows:
                raise ConversionError(f"{spm}: {len(pieces)} pieces, but the model has {rows} word embeddings")
            text_files["dict.txt"] = albert_vocab.fairseq_dict_lines(pieces)
            copies["spiece.model"] = spm
        else:
            notes.append("no SentencePiece model found (--sentencepiece-model): dict.txt not written")
    elif kind == "roberta":
        converted, options, notes = roberta.convert_roberta(state, config, source, head_name)
        arch = roberta.arch_for(options)
        if dict_file:
            lines = Path(dict_file).read_text(encoding="utf-8").splitlines()
            expected = converted["encoder.sentence_encoder.embed_tokens.weight"].size(0) - 5
            if len(lines) != expected:
                raise ConversionError(f"{dict_file}: {len(lines)} lines, expected {expected} "
                                      "(vocabulary minus <s> <pad> </s> <unk> and <mask>)")
            copies["dict.txt"] = Path(dict_file)
        else:
            notes.append("no --dict given (fairseq's gpt2 dict.txt): dict.txt not written")
    else:
        raise ConversionError(f"--model {model}: expected auto, albert or roberta")
    cfg = fairseq_cfg(arch, options)
    path = write_directory(dest, checkpoint_state(converted, cfg, str(src)), text_files, copies, overwrite)
    return path, arch, options, notes


def get_parser():
    p = argparse.ArgumentParser(
        prog="fairseq-npu-convert",
        description="Convert a Hugging Face ALBERT/RoBERTa directory (config.json + model.safetensors or "
        "pytorch_model.bin) or a lonePatient/albert_pytorch (Ascend ModelZoo) ALBERT into a fairseq checkpoint.",
    )
    p.add_argument("src", help="source directory (config.json and weights)")
    p.add_argument("dest", help="output directory: model.pt, dict.txt (and spiece.model for ALBERT)")
    p.add_argument("--model", choices=["auto", "albert", "roberta"], default="auto",
                   help="source model family (default: from config.json / tensor names)")
    p.add_argument("--head-name", default=albert.DEFAULT_HEAD,
                   help="fairseq name of the classification head a *ForSequenceClassification checkpoint carries "
                   "(default: %(default)s, the sentence_prediction criterion's)")
    p.add_argument("--sentencepiece-model", help="ALBERT SentencePiece model for dict.txt (default: SRC/spiece.model)")
    p.add_argument("--dict", dest="dict_file", help="RoBERTa: fairseq gpt2 dict.txt to place beside model.pt")
    p.add_argument("--overwrite", action="store_true", help="replace files already in DEST")
    return p


@converter_command("fairseq-npu-convert", get_parser)
def cli_main(args):
    path, arch, options, notes = convert(args.src, args.dest, args.model, args.head_name, args.sentencepiece_model,
                                         args.dict_file, args.overwrite)
    print(f"wrote {path} (arch {arch})")
    for note in notes:
        print(f"  {note}")
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())
    print(f"fine-tune with: fairseq-train ... --arch {arch} {flags} --restore-file {path} "
          f"--reset-optimizer --reset-dataloader --reset-meters")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
