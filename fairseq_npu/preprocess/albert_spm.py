"""SentencePiece for ALBERT: ALBERT's text normalisation, encoding to fairseq ids, and training a new model.

Encoding follows google-research/albert ``tokenization.py`` (the tokenizer the published checkpoints were trained
with): ``preprocess_text`` (collapse whitespace, `` and '' -> ", NFKD without combining marks, lower-case), the
SentencePiece pieces, and the rule that re-splits a piece like ``▁1990,`` into ``▁1990`` + ``,``. SentencePiece ids
become fairseq ids through the shared contract in :mod:`fairseq_npu.albert_vocab` (``[CLS]``/``[SEP]`` become
``<s>``/``</s>``, every id from 4 on is unchanged), and each sentence ends with ``</s>`` = ``[SEP]``.
"""

import itertools
import logging
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from fairseq_npu import albert_vocab
from fairseq_npu.preprocess.tsv_reader import GlueInputError

logger = logging.getLogger(__name__)

# names under which ALBERT releases ship their SentencePiece model, looked up in --vocab-dir in this order
MODEL_NAMES = ("spiece.model", "30k-clean.model", "30k-clean.rebuilt.model")


def albert_normalize(text: str) -> str:
    """ALBERT's ``preprocess_text`` with lower-casing and accent stripping (albert-base-v2 and friends)."""
    return albert_vocab.normalize_text(text)


def find_spm_model(spm_model: Optional[Path], vocab_dir: Optional[Path]) -> Path:
    if spm_model:
        if not Path(spm_model).is_file():
            raise GlueInputError(f"{spm_model}: missing SentencePiece model (--spm-model)")
        return Path(spm_model)
    if vocab_dir is None:
        raise GlueInputError("--model albert needs --spm-model FILE, --vocab-dir DIR or --train-spm VOCAB_SIZE")
    for name in MODEL_NAMES:
        if (Path(vocab_dir) / name).is_file():
            return Path(vocab_dir) / name
    raise GlueInputError(f"{Path(vocab_dir) / MODEL_NAMES[0]}: missing SentencePiece model "
                         f"(--vocab-dir holds none of {', '.join(MODEL_NAMES)})")


class AlbertSpmEncoder:
    """Encode sentences normalised by :func:`albert_normalize` to fairseq ids with a trailing ``</s>``."""

    normalize = staticmethod(albert_normalize)

    def __init__(self, model_path: Path, workers: int = 1):
        import sentencepiece

        self.model_path = Path(model_path)
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(self.model_path))
        except (RuntimeError, OSError) as err:
            raise GlueInputError(f"{self.model_path}: not a SentencePiece model ({err})") from None
        self.pieces = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        try:
            albert_vocab.check_spm_specials(self.pieces, self.model_path)
        except albert_vocab.AlbertVocabError as err:
            raise GlueInputError(str(err)) from None
        self.workers = max(1, int(workers))
        self.lookup = np.array([albert_vocab.fairseq_id(i) for i in range(len(self.pieces))], dtype=np.int64)
        self.eos = albert_vocab.FAIRSEQ_EOS
        # pieces that ALBERT's tokenizer splits again ("▁1990," -> "▁1990" ","), by SentencePiece id
        self.resplit = np.array([len(p) > 1 and p[-1] == "," and p[-2].isdigit() for p in self.pieces], dtype=bool)

    def __len__(self):
        return len(self.pieces)

    def encode(self, sentences: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """(flat fairseq ids incl. one ``</s>`` per sentence, int32 sizes); sentences are already normalised."""
        encoded = self.sp.encode(list(sentences), out_type=int, num_threads=self.workers)
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum()))
        if self.resplit[flat].any():
            rows = np.unique(np.repeat(np.arange(len(encoded)), lengths)[self.resplit[flat]])
            for r in rows:
                encoded[r] = self._encode_resplit(sentences[r])
            lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        sizes = (lengths + 1).astype(np.int32)
        ids = np.fromiter(
            itertools.chain.from_iterable(e + [albert_vocab.SPM_SEP] for e in encoded), dtype=np.int64,
            count=int(sizes.sum()),
        )
        return self.lookup[ids], sizes

    def _encode_resplit(self, text: str):
        return [self.sp.piece_to_id(p) for p in albert_vocab.encode_pieces(self.sp, text)]


def train_spm(sentences: Iterable[str], vocab_size: int, model_path: Path, workers: int = 1) -> Path:
    """Train an ALBERT-layout unigram SentencePiece model (``<pad>`` ``<unk>`` ``[CLS]`` ``[SEP]`` ``[MASK]`` first).

    ``sentences`` should be normalised with :func:`albert_normalize`, as they will be when encoded. The vocabulary
    may come out smaller than ``vocab_size`` when the text has fewer pieces to offer (small synthetic tasks).
    """
    import io

    import sentencepiece

    if vocab_size <= len(albert_vocab.SPM_SPECIAL_PIECES):
        raise GlueInputError(f"--train-spm {vocab_size}: the vocabulary must be larger than the 5 ALBERT specials")
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocab_size,
            model_type="unigram",
            pad_id=albert_vocab.SPM_PAD,
            unk_id=albert_vocab.SPM_UNK,
            bos_id=-1,
            eos_id=-1,
            control_symbols=list(albert_vocab.SPM_SPECIAL_PIECES[2:]),
            hard_vocab_limit=False,
            character_coverage=1.0,
            num_threads=max(1, int(workers)),
            minloglevel=2,
        )
    except RuntimeError as err:
        raise GlueInputError(f"--train-spm {vocab_size}: SentencePiece training failed ({err})") from None
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(model.getvalue())
    return model_path
