"""Tokenizer files of an exported Hugging Face directory: RoBERTa's vocab.json + merges.txt, ALBERT's spiece.model.

RoBERTa: fairseq's ``dict.txt`` lists GPT-2 BPE ids as text ("13 850314647"), and a fairseq id is the line number
plus the four specials. Hugging Face's RoBERTa numbers tokens by fairseq id (that is how its published checkpoints
were converted), so the embedding rows stay as they are and ``vocab.json`` maps each GPT-2 token string to the
fairseq id of its GPT-2 id; ``merges.txt`` is GPT-2's ``vocab.bpe`` unchanged. ALBERT: the SentencePiece model
itself; the embedding rows are reordered to SentencePiece ids by the exporter (fairseq_npu.albert_vocab).
"""

import json
import shutil
from pathlib import Path
from typing import Dict, Sequence

from .errors import ConversionError

ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def not_gpt2_symbol(symbols: Sequence[str]):
    """(line, symbol) of the first dictionary entry that is no GPT-2 id (nor a special or fairseq padding), or None."""
    for fairseq_id, symbol in enumerate(symbols):
        if not (symbol in ROBERTA_SPECIALS or symbol.isdigit() or symbol.startswith("madeupword")):
            return fairseq_id - 3, symbol
    return None


def roberta_vocab(symbols: Sequence[str], encoder: Dict[str, int], dict_path, rows: int) -> Dict[str, int]:
    """``vocab.json`` for a RoBERTa whose fairseq dictionary has ``symbols`` (id order) and ``rows`` embeddings.

    The task appends ``<mask>`` after the dictionary, so ``rows`` is ``len(symbols) + 1`` (or ``len(symbols)``
    when the dictionary already ends with ``<mask>``). Symbols that are not GPT-2 ids (fairseq's
    ``madeupword0000`` padding) keep their own text.
    """
    symbols = list(symbols)
    if symbols[-1:] != ["<mask>"]:
        symbols.append("<mask>")
    if len(symbols) != rows:
        raise ConversionError(f"{dict_path}: {len(symbols) - 5} lines, but the model has {rows} word embeddings "
                              f"(expected {rows - 5} lines: the vocabulary minus <s> <pad> </s> <unk> and <mask>)")
    decoder = {i: token for token, i in encoder.items()}
    vocab = {}
    for fairseq_id, symbol in enumerate(symbols):
        if symbol in ROBERTA_SPECIALS or not symbol.isdigit():
            token = symbol
        elif int(symbol) in decoder:
            token = decoder[int(symbol)]
        else:
            raise ConversionError(f"{dict_path}:{fairseq_id - 3}: GPT-2 id {symbol} is not in encoder.json")
        if token in vocab:
            raise ConversionError(f"{dict_path}:{fairseq_id - 3}: token {token!r} appears twice")
        vocab[token] = fairseq_id
    return vocab


def write_roberta(directory: Path, symbols: Sequence[str], dict_path, encoder_json: Path, vocab_bpe: Path,
                  rows: int, max_length: int) -> None:
    import transformers

    try:
        with open(encoder_json, encoding="utf-8") as f:
            encoder = json.load(f)
    except (OSError, ValueError) as err:
        raise ConversionError(f"{encoder_json}: not a GPT-2 encoder.json ({err})") from None
    vocab = roberta_vocab(symbols, encoder, dict_path, rows)
    with open(directory / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    shutil.copyfile(vocab_bpe, directory / "merges.txt")
    # transformers builds its tokenizer.json and tokenizer_config.json from the two files
    tokenizer = transformers.RobertaTokenizer.from_pretrained(str(directory), model_max_length=max_length)
    tokenizer.save_pretrained(str(directory))


def write_albert(directory: Path, spm_model: Path, max_length: int) -> None:
    import transformers

    shutil.copyfile(spm_model, directory / "spiece.model")
    tokenizer = transformers.AlbertTokenizer.from_pretrained(str(directory), model_max_length=max_length)
    tokenizer.save_pretrained(str(directory))
