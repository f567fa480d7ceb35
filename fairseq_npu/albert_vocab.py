"""The ALBERT vocabulary in fairseq: the one place that maps SentencePiece ids to fairseq ids and back.

fairseq's ``Dictionary`` always starts with ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, and the
``sentence_prediction`` / ``masked_lm`` tasks append ``<mask>`` at the end. ALBERT's SentencePiece model has
``<pad>``=0, ``<unk>``=1, ``[CLS]``=2, ``[SEP]``=3, ``[MASK]``=4 and ordinary pieces after them. The contract that
the preprocessor, the model, the converters and the hub interface share:

* every id >= 4 is the same in both (``[MASK]`` is fairseq id 4; ``dict.txt`` lists the pieces 4..V-1 in
  SentencePiece order, so loading it with fairseq reproduces these ids);
* the four specials swap places: ``[CLS]`` -> ``<s>`` (0), ``<pad>`` -> ``<pad>`` (1), ``[SEP]`` -> ``</s>`` (2),
  ``<unk>`` -> ``<unk>`` (3);
* the task-appended ``<mask>`` (fairseq id V) is an extra embedding row, filled with the ``[MASK]`` row.

So a binarized sentence ends with ``</s>`` = ``[SEP]``, ``--init-token 0`` prepends ``[CLS]`` and, without a
``--separator-token``, a pair reads ``[CLS] A [SEP] B [SEP]`` exactly as ALBERT was trained.
"""

import os
import tempfile
from pathlib import Path
from typing import List, Sequence, Union

import torch

# SentencePiece ids of ALBERT's special pieces (30k-clean.model, HF AlbertTokenizer)
SPM_PAD, SPM_UNK, SPM_CLS, SPM_SEP, SPM_MASK = 0, 1, 2, 3, 4
SPM_SPECIAL_PIECES = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")

# fairseq Dictionary ids of its own specials
FAIRSEQ_BOS, FAIRSEQ_PAD, FAIRSEQ_EOS, FAIRSEQ_UNK = 0, 1, 2, 3
FAIRSEQ_MASK_SYMBOL = "<mask>"
FAIRSEQ_SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")

# the four ids that differ between the two numberings; all others are equal
SPM_TO_FAIRSEQ_SPECIALS = {SPM_CLS: FAIRSEQ_BOS, SPM_PAD: FAIRSEQ_PAD, SPM_SEP: FAIRSEQ_EOS, SPM_UNK: FAIRSEQ_UNK}
FAIRSEQ_TO_SPM_SPECIALS = {f: s for s, f in SPM_TO_FAIRSEQ_SPECIALS.items()}
NUM_REMAPPED = len(SPM_TO_FAIRSEQ_SPECIALS)  # == 4: pieces from here on keep their id

DICT_COUNT = 1  # dict.txt needs a count per line; fairseq only uses it when building, never when loading


class AlbertVocabError(ValueError):
    pass


# --------------------------------------------------------------------------------------------------------------
# id maps


def fairseq_id(spm_id: int) -> int:
    """fairseq id of one SentencePiece id."""
    return SPM_TO_FAIRSEQ_SPECIALS.get(spm_id, spm_id)


def spm_id(fairseq_id_: int, spm_vocab_size: int) -> int:
    """SentencePiece id of one fairseq id; the task-appended ``<mask>`` (id ``spm_vocab_size``) is ``[MASK]``."""
    if fairseq_id_ == spm_vocab_size:
        return SPM_MASK
    if not 0 <= fairseq_id_ < spm_vocab_size:
        raise AlbertVocabError(f"fairseq id {fairseq_id_} is outside the ALBERT vocabulary (size {spm_vocab_size} + <mask>)")
    return FAIRSEQ_TO_SPM_SPECIALS.get(fairseq_id_, fairseq_id_)


def _as_long_tensor(ids):
    return ids if isinstance(ids, torch.Tensor) else torch.as_tensor(ids, dtype=torch.long)


def spm_to_fairseq_ids(ids):
    """Vectorised :func:`fairseq_id`: list -> list, tensor -> tensor (same device, no host sync)."""
    t = _as_long_tensor(ids)
    out = t.clone()
    for s, f in SPM_TO_FAIRSEQ_SPECIALS.items():
        out = torch.where(t == s, torch.full_like(t, f), out)
    return out if isinstance(ids, torch.Tensor) else out.tolist()


def fairseq_to_spm_ids(ids, spm_vocab_size: int):
    """Vectorised :func:`spm_id` (``<mask>`` -> ``[MASK]``): list -> list, tensor -> tensor."""
    t = _as_long_tensor(ids)
    out = t.clone()
    for f, s in FAIRSEQ_TO_SPM_SPECIALS.items():
        out = torch.where(t == f, torch.full_like(t, s), out)
    out = torch.where(t == spm_vocab_size, torch.full_like(t, SPM_MASK), out)
    return out if isinstance(ids, torch.Tensor) else out.tolist()


# --------------------------------------------------------------------------------------------------------------
# embedding rows


def fairseq_row_order(spm_vocab_size: int, with_mask: bool = True) -> torch.Tensor:
    """``index[f]`` = SentencePiece row that fairseq row ``f`` takes (``weight_spm[index]`` -> fairseq order).

    With ``with_mask`` the result has ``spm_vocab_size + 1`` entries, the last one (the task's ``<mask>``) being
    ``[MASK]``.
    """
    if spm_vocab_size <= SPM_MASK:
        raise AlbertVocabError(f"an ALBERT vocabulary needs more than {SPM_MASK + 1} pieces, got {spm_vocab_size}")
    index = torch.arange(spm_vocab_size + (1 if with_mask else 0), dtype=torch.long)
    for f, s in FAIRSEQ_TO_SPM_SPECIALS.items():
        index[f] = s
    if with_mask:
        index[spm_vocab_size] = SPM_MASK
    return index


def spm_rows_to_fairseq(weight: torch.Tensor, with_mask: bool = True) -> torch.Tensor:
    """Reorder a ``[V, ...]`` tensor (word embeddings, MLM bias) from SentencePiece ids to fairseq ids."""
    return weight.index_select(0, fairseq_row_order(weight.size(0), with_mask).to(weight.device)).clone()


def fairseq_rows_to_spm(weight: torch.Tensor, spm_vocab_size: int) -> torch.Tensor:
    """Inverse of :func:`spm_rows_to_fairseq`: drops rows past the SentencePiece vocabulary (``<mask>``, padding)."""
    if weight.size(0) < spm_vocab_size:
        raise AlbertVocabError(f"{weight.size(0)} rows cannot hold an ALBERT vocabulary of {spm_vocab_size}")
    index = torch.tensor([spm_id(f, spm_vocab_size) for f in range(spm_vocab_size)], dtype=torch.long)
    inverse = torch.empty_like(index)
    inverse[index] = torch.arange(spm_vocab_size)
    return weight[:spm_vocab_size].index_select(0, inverse.to(weight.device)).clone()


# --------------------------------------------------------------------------------------------------------------
# pieces and dict.txt


def read_spm_pieces(path: Union[str, Path]) -> List[str]:
    """The pieces of a SentencePiece vocabulary, in id order, from a ``.model`` or a ``.vocab`` file.

    Checks that the first five are ALBERT's specials, since the id map relies on them.
    """
    path = Path(path)
    if not path.is_file():
        raise AlbertVocabError(f"{path}: no such SentencePiece model or vocabulary file")
    if path.suffix == ".vocab":
        pieces = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n")
                piece = line.split("\t", 1)[0]
                if not piece:
                    raise AlbertVocabError(f"{path}:{lineno}: empty piece (expected '<piece>\\t<score>')")
                pieces.append(piece)
    else:
        import sentencepiece

        try:
            processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as err:
            raise AlbertVocabError(f"{path}: not a SentencePiece model ({err})") from None
        pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    check_spm_specials(pieces, path)
    return pieces


def check_spm_specials(pieces: Sequence[str], source="vocabulary") -> None:
    for i, expected in enumerate(SPM_SPECIAL_PIECES):
        got = pieces[i] if i < len(pieces) else None
        if got != expected:
            raise AlbertVocabError(
                f"{source}:{i + 1}: piece {i} is {got!r}, expected {expected!r} "
                f"(ALBERT vocabularies start with {', '.join(SPM_SPECIAL_PIECES)})"
            )


def fairseq_dict_lines(pieces: Sequence[str]) -> List[str]:
    """Lines of the fairseq ``dict.txt`` for these SentencePiece pieces: pieces 4..V-1, in id order."""
    check_spm_specials(pieces)
    lines, seen = [], set(FAIRSEQ_SPECIAL_SYMBOLS)
    for i, piece in enumerate(pieces[NUM_REMAPPED:], NUM_REMAPPED):
        if not piece or any(c in piece for c in " \n\r"):
            raise AlbertVocabError(f"piece {i} ({piece!r}) cannot be written to a fairseq dict.txt")
        line = f"{piece} {DICT_COUNT}"
        if piece in seen:
            # keeps the piece at its own id: fairseq would otherwise refuse (or merge) a repeated symbol
            line += " #fairseq:overwrite"
        seen.add(piece)
        lines.append(line)
    return lines


def write_fairseq_dict(spm_path: Union[str, Path], dict_path: Union[str, Path]) -> Path:
    """Write the fairseq ``dict.txt`` for an ALBERT SentencePiece model/vocab, atomically."""
    lines = fairseq_dict_lines(read_spm_pieces(spm_path))
    dict_path = Path(dict_path)
    dict_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".dict.", suffix=".tmp", dir=dict_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, dict_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dict_path


def check_fairseq_dictionary(dictionary, spm_vocab_size: int, source="dictionary") -> None:
    """Raise unless a loaded fairseq Dictionary follows the contract (size V, or V+1 with ``<mask>`` last)."""
    n = len(dictionary)
    if (dictionary.bos(), dictionary.pad(), dictionary.eos(), dictionary.unk()) != (0, 1, 2, 3):
        raise AlbertVocabError(f"{source}: fairseq specials are not <s>=0 <pad>=1 </s>=2 <unk>=3")
    if n == spm_vocab_size + 1:
        if dictionary[spm_vocab_size] != FAIRSEQ_MASK_SYMBOL:
            raise AlbertVocabError(f"{source}: symbol {spm_vocab_size} is {dictionary[spm_vocab_size]!r}, expected <mask>")
    elif n != spm_vocab_size:
        raise AlbertVocabError(
            f"{source}: {n} symbols, but the ALBERT vocabulary has {spm_vocab_size} pieces "
            f"(expected {spm_vocab_size} or {spm_vocab_size + 1} with <mask>)"
        )
    if dictionary[SPM_MASK] != "[MASK]":
        raise AlbertVocabError(f"{source}: symbol 4 is {dictionary[SPM_MASK]!r}, expected [MASK] (dict.txt must list spm pieces 4..V-1)")


# --------------------------------------------------------------------------------------------------------------
# text -> ids


def normalize_text(text: str, lowercase: bool = True, keep_accents: bool = False) -> str:
    """ALBERT's normalisation before SentencePiece: `` and '' -> ", accents stripped, lower-cased, spaces collapsed."""
    import unicodedata

    text = " ".join(text.strip().split()).replace("``", '"').replace("''", '"')
    if not keep_accents and not text.isascii():  # NFKD and combining marks only matter outside ASCII
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text.lower() if lowercase else text


def encode_pieces(processor, text: str, lowercase: bool = True) -> List[str]:
    """SentencePiece pieces of one text, as ALBERT's tokenizer cuts them.

    Like Google's ``tokenization.encode_pieces``, a piece that glues a trailing comma to a number ("▁12,") is
    re-cut so the comma stands alone ("▁12", ","), which is how the pretraining data was tokenised.
    """
    pieces = []
    for piece in processor.encode(normalize_text(text, lowercase), out_type=str):
        if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
            cut = processor.encode(piece[:-1].replace("\u2581", ""), out_type=str)
            if piece[0] != "\u2581" and cut and cut[0].startswith("\u2581"):
                cut = cut[1:] if len(cut[0]) == 1 else [cut[0][1:]] + cut[1:]
            pieces += cut + [piece[-1]]
        else:
            pieces.append(piece)
    return pieces


def encode_text(processor, text: str, lowercase: bool = True) -> List[int]:
    """fairseq ids (no [CLS]/[SEP]) of one text with a loaded ``sentencepiece.SentencePieceProcessor``."""
    return spm_to_fairseq_ids([processor.piece_to_id(p) for p in encode_pieces(processor, text, lowercase)])
