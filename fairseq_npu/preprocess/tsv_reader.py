"""Read one GLUE tsv split into sentences and labels, checking every row.

Line handling follows what fairseq's shell pipeline does to the same file, so that the sentences are the same:
lines end at ``\\n`` (``tail``/``cut``), a trailing ``\\r`` is dropped (Python's universal newlines do that in the
stock BPE step), sentences are ``str.strip()``-ed (multiprocessing_bpe_encoder), a header line is skipped except
where GLUE has none (CoLA train/dev). Where the stock pipeline silently writes something wrong (a missing column
becomes an empty sentence, an unknown label becomes a class of its own), this reader stops with
``file:line: reason`` instead, or, with ``skip_bad_rows``, drops the row and counts it.
"""

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from fairseq_npu.glue_tasks import STSB_SCALE, GlueTask, Split

# a plain decimal number, as awk reads it (Python's float() would also take "1_0", "inf", "nan")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class GlueInputError(ValueError):
    """Bad input: the message is one line that names the file and line (or the missing file or flag)."""


@dataclass
class SplitRows:
    path: Path
    layout: Split
    sentences: List[List[str]]  # one list per input column, one normalised sentence per kept row
    labels: Optional[List[str]]  # label text per kept row (labelled splits only)
    line_numbers: List[int]  # 1-based line in ``path`` of each kept row
    skipped: Counter = field(default_factory=Counter)  # reason -> rows skipped (skip_bad_rows)
    first_skipped: Dict[str, str] = field(default_factory=dict)  # reason -> first message, for the report
    dropped_malformed: int = 0  # rows dropped by QQP's field-count rule (as the stock pipeline does)
    header_lines: int = 0  # lines before the first data row (1 with a header, 0 for CoLA train/dev)
    source_rows: int = 0  # data rows in the file, kept or not
    # splits with an index column (test files): each kept row's value, and every value read, kept or not
    indices: Optional[List[int]] = None
    indices_read: Dict[int, int] = field(default_factory=dict)  # index -> its line

    def __len__(self):
        return len(self.line_numbers)

    def glue_indices(self) -> List[int]:
        """GLUE's ``index`` of each kept row: its index column where the split has one, else its 0-based data row."""
        if self.indices is not None:
            return list(self.indices)
        return [line - self.header_lines - 1 for line in self.line_numbers]

    def dropped_indices(self) -> List[int]:
        """GLUE indices of the rows that were not kept (skipped, dropped by QQP's rule, empty after encoding)."""
        kept = set(self.glue_indices())
        if self.indices is not None:  # a row whose index could not be read is a gap in the column (predict names it)
            return sorted(i for i in self.indices_read if i not in kept)
        return [i for i in range(self.source_rows) if i not in kept]

    def drop_rows(self, row_indices, reason: str, messages: List[str]) -> None:
        """Remove rows found bad after reading (e.g. a sentence that encodes to nothing) and count them."""
        drop = set(row_indices)
        keep = [i for i in range(len(self)) if i not in drop]
        self.sentences = [[col[i] for i in keep] for col in self.sentences]
        if self.labels is not None:
            self.labels = [self.labels[i] for i in keep]
        self.line_numbers = [self.line_numbers[i] for i in keep]
        if self.indices is not None:
            self.indices = [self.indices[i] for i in keep]
        self.skipped[reason] += len(drop)
        if messages:
            self.first_skipped.setdefault(reason, messages[0])


def _decode(path: Path, data: bytes, skip_bad_rows: bool) -> List[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        if not skip_bad_rows:
            line = data.count(b"\n", 0, err.start) + 1
            column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
            raise GlueInputError(
                f"{path}:{line}: not UTF-8 (byte 0x{data[err.start]:02x} at column {column}); "
                f"fix the file or pass --skip-bad-rows"
            ) from None
        lines = []
        for raw in data.split(b"\n"):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append(None)  # marked bad; counted when the row is read
        return _without_final_newline(lines)
    return _without_final_newline(text.split("\n"))


def _without_final_newline(lines):
    if lines and lines[-1] == "":
        lines.pop()  # "a\nb\n" holds two lines, as for tail and cut
    if lines and lines[0] is not None and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]  # a byte-order mark belongs to no column
    return lines


def read_split(
    path: Path,
    layout: Split,
    task: GlueTask,
    normalize: Callable[[str], str] = str.strip,
    skip_bad_rows: bool = False,
) -> SplitRows:
    """Read and check one split; ``normalize`` turns a raw column into the sentence to encode (empty = bad)."""
    path = Path(path)
    if not path.is_file():
        raise GlueInputError(f"{path}: missing {task.name} split '{layout.tsv}' (expected in {path.parent})")
    rows = SplitRows(path, layout, [[] for _ in layout.input_columns], [] if layout.labelled else None, [])
    lines = _decode(path, path.read_bytes(), skip_bad_rows)

    first = 0
    if layout.has_header:
        if not lines or lines[0] is None:
            raise GlueInputError(f"{path}:1: {'empty file' if not lines else 'header is not UTF-8'} "
                                 f"(GLUE {task.name} files start with a header line)")
        num_fields = len(lines[0].rstrip("\r").split("\t"))
        first = 1
    else:
        num_fields = layout.fields_without_header
    needed = max(layout.input_columns + ((layout.label_column,) if layout.labelled else ()))
    if num_fields < needed:
        raise GlueInputError(
            f"{path}:1: the header has {num_fields} fields, but {task.name} reads column {needed} "
            f"(is this the {task.name} {layout.tsv}?)"
        )
    expected = layout.drop_rows_without_fields or num_fields
    rows.header_lines = first
    rows.source_rows = len(lines) - first

    def bad(lineno, reason, message):
        message = f"{path}:{lineno}: {message}"
        if not skip_bad_rows:
            raise GlueInputError(message)
        rows.skipped[reason] += 1
        rows.first_skipped.setdefault(reason, message)

    out_sentences, out_labels, out_lines = rows.sentences, rows.labels, rows.line_numbers
    index_at = layout.index_column - 1 if layout.index_column else None
    if index_at is not None:
        rows.indices = []
    columns = [c - 1 for c in layout.input_columns]
    label_index = layout.label_column - 1 if layout.labelled else None
    labels = frozenset(task.labels) if task.labels else None

    for lineno, line in enumerate(lines[first:], first + 1):
        if line is None:
            bad(lineno, "not UTF-8", "not UTF-8")
            continue
        if line.endswith("\r"):
            line = line[:-1]
        fields = line.split("\t")
        index = None
        if index_at is not None:  # never skipped: the submission is numbered by this column
            index = _index_value(path, lineno, fields[index_at] if index_at < len(fields) else "", index_at + 1)
            if index in rows.indices_read:
                raise GlueInputError(f"{path}:{lineno}: index {index} in column {index_at + 1} again (first on line "
                                     f"{rows.indices_read[index]}); GLUE's index column numbers each row once")
            rows.indices_read[index] = lineno
        if len(fields) != expected:
            if layout.drop_rows_without_fields:
                rows.dropped_malformed += 1
                continue
            bad(lineno, "wrong field count", f"expected {expected} tab-separated fields, found {len(fields)}")
            continue
        sentences = [normalize(fields[c]) for c in columns]
        empty = [c + 1 for c, s in zip(columns, sentences) if not s]
        if empty:
            bad(lineno, "empty sentence", f"empty sentence in column {empty[0]}")
            continue
        if label_index is not None:
            label = fields[label_index].strip()
            if not label:
                bad(lineno, "missing label", f"missing label in column {label_index + 1}")
                continue
            if labels is not None:
                if label not in labels:
                    bad(lineno, "unknown label",
                        f"unknown label {label!r} in column {label_index + 1} "
                        f"({task.name} labels: {', '.join(task.labels)})")
                    continue
            elif task.regression:
                if not _NUMBER.fullmatch(label) or not 0.0 <= float(label) <= STSB_SCALE:
                    bad(lineno, "unknown label",
                        f"label {label!r} in column {label_index + 1} is not a score in [0, {STSB_SCALE:g}]")
                    continue
            out_labels.append(label)
        for out, s in zip(out_sentences, sentences):
            out.append(s)
        out_lines.append(lineno)
        if index is not None:
            rows.indices.append(index)
    return rows


def _index_value(path: Path, lineno: int, text: str, column: int) -> int:
    value = text.strip()
    if not value.isdigit() or not value.isascii():
        raise GlueInputError(f"{path}:{lineno}: index {value!r} in column {column} is not a whole number >= 0; GLUE's "
                             "submission is numbered by this column")
    return int(value)


def stsb_target(score: str) -> str:
    """STS-B label line: score / 5 printed as awk's ``print $1 / 5.0`` does (integers bare, else %.6g)."""
    value = float(score) / STSB_SCALE
    return str(int(value)) if value == int(value) else "%.6g" % value
