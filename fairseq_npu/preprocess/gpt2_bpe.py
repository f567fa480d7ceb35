"""GPT-2 byte-level BPE for RoBERTa: sentences -> fairseq ids, equal to fairseq's own two-step pipeline.

The stock pipeline writes GPT-2 ids as text (multiprocessing_bpe_encoder), then maps each id string through
``dict.txt`` (fairseq-preprocess). Here both steps happen in memory: a BPE backend gives GPT-2 ids, a lookup table
built from the same ``Dictionary`` turns them into fairseq ids, ``</s>`` ends each sentence.

Backends:
* ``tiktoken`` (default when installed): OpenAI's Rust BPE, built from the local encoder.json with the exact
  pre-tokenisation regex of fairseq's gpt2_bpe_utils. Many sentences are encoded in one call, joined by ``\\n``:
  a stripped sentence never contains or touches ``\\n``, so each separator comes back as the lone GPT-2 token
  198 and marks where that sentence's ``</s>`` goes; if the count of separators ever differs from the count of
  sentences, that chunk is encoded sentence by sentence instead.
* ``fairseq``: fairseq's own Python encoder (the reference; slower), in a process pool with ``workers`` > 1.
Tests check that both give identical ids on every sentence of the real GLUE data.
"""

import json
import logging
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from fairseq_npu.preprocess.tsv_reader import GlueInputError

logger = logging.getLogger(__name__)

VOCAB_FILES = ("encoder.json", "vocab.bpe", "dict.txt")
DOWNLOAD_URL = "https://dl.fbaipublicfiles.com/fairseq/gpt2_bpe/{}"  # what fairseq's script fetches with wget
# fairseq's gpt2_bpe_utils.Encoder.pat, verbatim in meaning
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
NEWLINE = "\n"
CHUNK_SENTENCES = 20000  # sentences per tiktoken call: big enough to amortise, small enough to spread over threads


def find_vocab_files(vocab_dir: Optional[Path], download: bool = True) -> Tuple[Path, Path, Path]:
    """encoder.json, vocab.bpe and dict.txt in ``vocab_dir``; fetched from fairseq's URLs only if absent and allowed."""
    vocab_dir = Path(vocab_dir) if vocab_dir else Path.home() / ".cache" / "fairseq_npu" / "gpt2_bpe"
    paths = [vocab_dir / name for name in VOCAB_FILES]
    missing = [p for p in paths if not p.is_file()]
    if missing and download:
        vocab_dir.mkdir(parents=True, exist_ok=True)
        for p in missing:
            tmp = p.with_name(p.name + ".part")
            try:
                logger.info("downloading %s", DOWNLOAD_URL.format(p.name))
                with urllib.request.urlopen(DOWNLOAD_URL.format(p.name), timeout=30) as r, open(tmp, "wb") as f:
                    f.write(r.read())
                tmp.replace(p)
            except OSError as err:
                tmp.unlink(missing_ok=True)
                logger.warning("could not download %s: %s", p.name, err)
        missing = [p for p in paths if not p.is_file()]
    if missing:
        raise GlueInputError(
            f"{missing[0]}: missing GPT-2 BPE file (--vocab-dir needs {', '.join(VOCAB_FILES)}"
            f"{'' if download else '; download disabled'})"
        )
    return tuple(paths)


class Gpt2BpeEncoder:
    """Encode stripped sentences to fairseq ids (with ``</s>``), as multiprocessing_bpe_encoder + fairseq-preprocess."""

    def __init__(self, encoder_json: Path, vocab_bpe: Path, dictionary, backend: str = "auto", workers: int = 1):
        self.encoder_json, self.vocab_bpe = Path(encoder_json), Path(vocab_bpe)
        self.workers = max(1, int(workers))
        try:
            with open(self.encoder_json, encoding="utf-8") as f:
                self.encoder = json.load(f)
        except (OSError, ValueError) as err:
            raise GlueInputError(f"{self.encoder_json}: not a GPT-2 encoder.json ({err})") from None
        self.merges = self._read_merges()
        self._check_vocabulary()
        # GPT-2 id -> fairseq id: what fairseq-preprocess does to each id string via dict.txt (unknown -> <unk>)
        self.lookup = np.array(
            [dictionary.index(str(i)) for i in range(max(self.encoder.values()) + 1)], dtype=np.int64
        )
        self.eos = dictionary.eos()
        self.backend = self._pick_backend(backend)
        logger.info("GPT-2 BPE backend: %s", self.backend)

    # ------------------------------------------------------------------------------------------------------
    def _pick_backend(self, backend: str) -> str:
        if backend not in ("auto", "tiktoken", "fairseq"):
            raise ValueError(f"--bpe-backend must be auto, tiktoken or fairseq, not {backend!r}")
        if backend == "fairseq":
            return backend
        try:
            import tiktoken  # noqa: F401
        except ImportError:
            if backend == "tiktoken":
                raise GlueInputError("--bpe-backend tiktoken: the tiktoken package is not installed") from None
            logger.warning("tiktoken is not installed: using fairseq's (slower) Python GPT-2 encoder")
            return "fairseq"
        problem = self._merge_order_problem()
        if problem:
            if backend == "tiktoken":
                raise GlueInputError(f"{self.vocab_bpe}: --bpe-backend tiktoken cannot reproduce this BPE ({problem})")
            logger.warning("%s: %s; using fairseq's Python GPT-2 encoder", self.vocab_bpe, problem)
            return "fairseq"
        self._tiktoken = self._build_tiktoken()
        return "tiktoken"

    def _read_merges(self) -> List[Tuple[int, List[str]]]:
        """(line number, pair) of each merge in vocab.bpe (its first line is a version comment)."""
        try:
            with open(self.vocab_bpe, encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, UnicodeDecodeError) as err:
            raise GlueInputError(f"{self.vocab_bpe}: cannot read GPT-2 merges ({err})") from None
        return [(number, line.split()) for number, line in enumerate(lines[1:], 2) if line.strip()]

    def _check_vocabulary(self) -> None:
        """encoder.json must be GPT-2's kind: an id for each of the 256 byte symbols and for every merged token.

        Otherwise fairseq's encoder fails half-way with a bare KeyError on the first token it cannot map.
        """
        from fairseq.data.encoders.gpt2_bpe_utils import bytes_to_unicode

        encoder, path = self.encoder, self.encoder_json
        if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
            raise GlueInputError(f"{path}: not GPT-2's encoder.json (expected a JSON object of token -> integer id)")
        missing = [ch for ch in bytes_to_unicode().values() if ch not in encoder]
        if missing:
            raise GlueInputError(f"{path}: not GPT-2's encoder.json (no id for {len(missing)} of the 256 byte "
                                 f"symbols, e.g. {missing[0]!r})")
        for number, pair in self.merges:
            if len(pair) != 2:
                raise GlueInputError(f"{self.vocab_bpe}:{number}: not a GPT-2 merge pair ({' '.join(pair)!r})")
            if pair[0] + pair[1] not in encoder:
                raise GlueInputError(f"{self.vocab_bpe}:{number}: merged token {pair[0] + pair[1]!r} has no id in "
                                     f"{path} (encoder.json and vocab.bpe are not the same GPT-2 vocabulary)")

    def _merge_order_problem(self) -> Optional[str]:
        """tiktoken ranks merged tokens by id; that is GPT-2's merge order only if id = 256 + merge rank."""
        for rank, (_number, pair) in enumerate(self.merges):
            if self.encoder.get(pair[0] + pair[1]) != 256 + rank:
                return f"merge {rank} ({' '.join(pair)}) does not have encoder id {256 + rank}"
        return None

    def _build_tiktoken(self):
        import tiktoken
        from fairseq.data.encoders.gpt2_bpe_utils import bytes_to_unicode

        byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
        ranks = {}
        for token, i in self.encoder.items():
            try:
                ranks[bytes(byte_of[ch] for ch in token)] = i
            except KeyError:  # <|endoftext|>-like specials are not byte-level pieces; text never maps to them
                continue
        return tiktoken.Encoding("fairseq_npu_gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})

    # ------------------------------------------------------------------------------------------------------
    def encode(self, sentences: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """(flat fairseq ids incl. one ``</s>`` per sentence, int32 sizes) for stripped, non-empty sentences."""
        if not sentences:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        if self.backend == "tiktoken":
            chunks = [sentences[i : i + CHUNK_SENTENCES] for i in range(0, len(sentences), CHUNK_SENTENCES)]
            if self.workers > 1 and len(chunks) > 1:
                with ThreadPoolExecutor(self.workers) as pool:  # the Rust encoder releases the GIL
                    parts = list(pool.map(self._encode_chunk_tiktoken, chunks))
            else:
                parts = [self._encode_chunk_tiktoken(c) for c in chunks]
            gpt2 = np.concatenate([p[0] for p in parts])
            ends = np.concatenate([p[1] + off for p, off in zip(parts, np.cumsum([0] + [len(p[0]) for p in parts[:-1]]))])
        else:
            gpt2, ends = self._encode_fairseq(sentences)
        ids = self.lookup[gpt2]
        ids[ends] = self.eos
        sizes = np.diff(np.concatenate([[-1], ends])).astype(np.int32)
        return ids, sizes

    def _encode_chunk_tiktoken(self, sentences: Sequence[str]):
        text = NEWLINE.join(sentences) + NEWLINE
        ids = self._tiktoken.encode_to_numpy(text, allowed_special=set(), disallowed_special=()).astype(np.int64)
        newline_id = self.encoder["\u010a"]  # byte-level symbol of "\n"
        ends = np.flatnonzero(ids == newline_id)
        if len(ends) == len(sentences):
            return ids, ends
        # some sentence made "\n" merge with a neighbour: fall back to one call per sentence for this chunk
        per_sentence = [self._tiktoken.encode_ordinary(s) + [newline_id] for s in sentences]
        ids = np.fromiter((i for s in per_sentence for i in s), dtype=np.int64)
        return ids, np.cumsum([len(s) for s in per_sentence]) - 1

    def _encode_fairseq(self, sentences: Sequence[str]):
        if self.workers > 1 and len(sentences) > 1000:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(
                self.workers, initializer=_init_fairseq_worker, initargs=(str(self.encoder_json), str(self.vocab_bpe))
            ) as pool:
                encoded = pool.map(_fairseq_encode, sentences, chunksize=1000)
        else:
            _init_fairseq_worker(str(self.encoder_json), str(self.vocab_bpe))
            encoded = [_fairseq_encode(s) for s in sentences]
        sizes = np.array([len(e) + 1 for e in encoded], dtype=np.int64)
        ids = np.fromiter((i for e in encoded for i in e + [0]), dtype=np.int64, count=int(sizes.sum()))
        return ids, np.cumsum(sizes) - 1


_FAIRSEQ_BPE = None


def _init_fairseq_worker(encoder_json: str, vocab_bpe: str):
    global _FAIRSEQ_BPE
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    _FAIRSEQ_BPE = get_encoder(encoder_json, vocab_bpe)


def _fairseq_encode(sentence: str) -> List[int]:
    return _FAIRSEQ_BPE.encode(sentence)
