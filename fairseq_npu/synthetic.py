"""A learnable GLUE-format task that needs no download: the embedded default of the demo and the tests.

Sentences are made of invented words; each holds exactly one polarity word, from a "positive" or a "negative"
set, among neutral filler words, and the label says which set. A small transformer learns it to ~100% dev
accuracy in a few dozen updates, so a run that does not get there points at a real bug. Files follow GLUE's
SST-2 layout (``sentence<TAB>label`` with a header; test.tsv has ``index<TAB>sentence``), so every tool that
reads GLUE reads them.
"""

import argparse
import random
from pathlib import Path
from typing import List, Tuple

SYLLABLES = ["ka", "lo", "mi", "ra", "tu", "ne", "so", "vi", "da", "pe", "zu", "ho", "ga", "fi", "bo", "ye"]


def _vocabulary(rng: random.Random, size: int) -> List[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))))
    return sorted(words)


def make_sentences(n: int, seed: int, min_len: int = 3, max_len: int = 24) -> List[Tuple[str, int]]:
    """``n`` (sentence, label) pairs; the vocabulary depends only on a fixed seed, the sentences on ``seed``."""
    words = _vocabulary(random.Random(1234), 140)
    positive, negative, neutral = words[:10], words[10:20], words[20:]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        body = [rng.choice(neutral) for _ in range(rng.randint(min_len, max_len) - 1)]
        body.insert(rng.randint(0, len(body)), rng.choice(positive if label else negative))
        rows.append((" ".join(body), label))
    return rows


def write_task(dest, n_train: int = 2000, n_dev: int = 200, n_test: int = 100, seed: int = 1) -> Path:
    """Write ``train.tsv``, ``dev.tsv`` and ``test.tsv`` in GLUE SST-2 layout under ``dest``; returns ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for split, n, split_seed in (("train", n_train, seed), ("dev", n_dev, seed + 1), ("test", n_test, seed + 2)):
        rows = make_sentences(n, split_seed)
        with open(dest / f"{split}.tsv", "w", encoding="utf-8") as f:
            if split == "test":
                f.write("index\tsentence\n")
                f.writelines(f"{i}\t{s}\n" for i, (s, _) in enumerate(rows))
            else:
                f.write("sentence\tlabel\n")
                f.writelines(f"{s}\t{label}\n" for s, label in rows)
    return dest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dest", help="folder to write train.tsv / dev.tsv / test.tsv into")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--dev", type=int, default=200)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(write_task(args.dest, args.train, args.dev, args.test, args.seed))


if __name__ == "__main__":
    main()
