"""``TASK-bin/preprocess.json``: what the preprocessor wrote, and which GLUE row each binarized row came from.

GLUE's ``index`` of a row is the value of its index column in the test files (``index``, QQP's ``id``), and its
0-based data row in the other splits. fairseq's binary datasets only know positions, which shift after a row is
dropped (``--skip-bad-rows``, QQP's field-count rule) and say nothing of a file whose rows are out of order or lack
an index. The manifest records, per split, the rows of the source file, the GLUE indices that were dropped and,
where the index column is not simply 0..N-1 in file order, each row's index, so that a submission is numbered with
the data's own indices.
"""

import json
from pathlib import Path
from typing import List, Optional, Tuple

MANIFEST = "preprocess.json"


def read_manifest(bin_dir) -> Optional[dict]:
    path = Path(bin_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable preprocessing manifest ({err})") from None


def glue_indices(bin_dir, split: str, num_rows: int) -> Tuple[List[int], int, List[int]]:
    """(GLUE index of each of the ``num_rows`` dataset rows, rows in the source tsv, GLUE indices not binarized).

    A folder without a manifest (written by fairseq's own script, which drops no test rows) maps position i to
    index i; so does an older manifest (without ``source_rows``) whose split lost no rows. One that lost rows
    cannot be mapped: ValueError.
    """
    manifest = read_manifest(bin_dir)
    info = ((manifest or {}).get("splits") or {}).get(split)
    if not info:
        return list(range(num_rows)), num_rows, []
    if "source_rows" not in info:
        lost = sum(int(n) for n in (info.get("skipped") or {}).values()) + int(info.get("dropped_malformed") or 0)
        if lost:  # an older manifest: rows were dropped, but not which
            raise ValueError(f"{Path(bin_dir) / MANIFEST}: {lost} rows of split {split!r} were dropped at "
                             "preprocessing and this manifest does not say which; preprocess the task again")
        return list(range(num_rows)), num_rows, []
    dropped = sorted(int(i) for i in info.get("dropped_indices", ()))
    source_rows = int(info["source_rows"])
    if "index_column" in info:
        return _from_index_column(bin_dir, split, info, num_rows, dropped, source_rows)
    if int(info.get("rows", num_rows)) != num_rows or source_rows - len(dropped) != num_rows:
        raise ValueError(f"{Path(bin_dir) / MANIFEST}: split {split!r} has {info.get('rows')} rows there but "
                         f"{num_rows} in the dataset; was the folder changed after preprocessing?")
    skip = set(dropped)
    return [i for i in range(source_rows) if i not in skip], source_rows, dropped


def _from_index_column(bin_dir, split, info, num_rows, dropped, source_rows) -> Tuple[List[int], int, List[int]]:
    """A split read with its index column: GLUE's indices are 0..N-1, N the larger of the rows in the file and the
    highest index + 1, so that a row deleted by hand is missing, not renumbered away."""
    skip = set(dropped)
    kept = [int(i) for i in info["indices"]] if "indices" in info else [i for i in range(source_rows) if i not in skip]
    if int(info.get("rows", num_rows)) != num_rows or len(kept) != num_rows:
        raise ValueError(f"{Path(bin_dir) / MANIFEST}: split {split!r} has {info.get('rows')} rows there but "
                         f"{num_rows} in the dataset; was the folder changed after preprocessing?")
    total = max(source_rows, max(kept + dropped, default=-1) + 1)
    have = set(kept)
    return kept, total, [i for i in range(total) if i not in have]
