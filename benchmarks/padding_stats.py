"""How much of a batch is padding on SST-2 train, for random batches (stock order) and length-grouped batches.

Exact counts over one epoch of batches, independent of the machine: the work the length grouping removes before
any timing. Attention scores scale with the square of the padded length, the rest of the model linearly.
"""


import numpy as np

from benchmarks import common, glue_data


def stats(lengths: np.ndarray, batch_size: int, seed: int = 1) -> dict:
    order = np.random.default_rng(seed).permutation(len(lengths))
    rand = [lengths[order[i : i + batch_size]] for i in range(0, len(order), batch_size)]
    srt = np.sort(lengths)
    grouped = [srt[i : i + batch_size] for i in range(0, len(srt), batch_size)]

    def positions(batches, power=1):
        return float(sum(len(b) * int(b.max()) ** power for b in batches))

    real = float(lengths.sum())
    return dict(sentences=int(len(lengths)), mean_length=round(float(lengths.mean()), 2), max_length=int(lengths.max()),
                real_fraction_random=round(real / positions(rand), 4),
                real_fraction_grouped=round(real / positions(grouped), 4),
                positions_ratio=round(positions(rand) / positions(grouped), 3),
                attention_ratio=round(positions(rand, 2) / positions(grouped, 2), 3))


def main(batch_size: int = 32) -> dict:
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    out = dict(batch_size=batch_size, models={})
    for model in ("roberta", "albert"):
        data = glue_data.build(model, "SST-2")
        dataset = MMapIndexedDataset(str(data / "input0" / "train"))
        # a copy (sizes is a view of the mmap, closed with the dataset); + 1: the init token the task prepends
        lengths = np.array(dataset.sizes, dtype=np.int64) + 1
        out["models"][model] = stats(lengths, batch_size)
        print(model, out["models"][model])
    common.save_result("padding_sst2", out)
    return out


if __name__ == "__main__":
    main()
