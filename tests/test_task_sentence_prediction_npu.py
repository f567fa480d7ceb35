"""sentence_prediction_npu: stock parity, static shapes, length grouping, padding ratio."""

import numpy as np
import pytest
import torch

from glue_tiny_data import make_glue_dir, tiny_roberta_args, train_in_process


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
    # lengths 2..20 per sentence: with <s> and </s> pairs are 6..42 tokens
    return make_glue_dir(tmp_path_factory.mktemp("glue") / "RTE-bin", {"train": 160, "valid": 68, "test": 20},
                         pair=True, labels=("entailment", "not_entailment"))


def _recorded_losses(monkeypatch):
    from fairseq.criterions.sentence_prediction import SentencePredictionCriterion

    losses = []
    forward = SentencePredictionCriterion.forward

    def recording(self, model, sample, reduce=True):
        out = forward(self, model, sample, reduce)
        if model.training:
            losses.append(out[0].item())
        return out

    monkeypatch.setattr(SentencePredictionCriterion, "forward", recording)
    return losses


def _train(data, task, tmp_path, monkeypatch, extra=()):
    losses = _recorded_losses(monkeypatch)
    records = train_in_process(
        tiny_roberta_args(data, task, ["--max-epoch", "1", "--save-dir", str(tmp_path / task), *extra])
    )
    monkeypatch.undo()
    epoch = [r for r in records if r["tag"] == "train"][-1]
    return losses, epoch


def test_same_losses_as_stock_and_grouping_cuts_padding(pair_data, tmp_path, monkeypatch):
    stock, _ = _train(pair_data, "sentence_prediction", tmp_path, monkeypatch)
    ours, ours_epoch = _train(pair_data, "sentence_prediction_npu", tmp_path, monkeypatch)
    grouped, grouped_epoch = _train(pair_data, "sentence_prediction_npu", tmp_path, monkeypatch, ["--group-by-length"])

    assert len(stock) == 20  # 160 sentences / batch size 8
    assert ours == stock  # bit-identical, update by update
    assert len(grouped) == 20 and grouped != stock
    off, on = float(ours_epoch["train_pad_ratio"]), float(grouped_epoch["train_pad_ratio"])
    assert off > 0.2, off
    assert on <= 0.5 * off, (on, off)


# ----------------------------------------------------------------------------------------------------------------
# the task used directly: batches it builds


def _setup_task(data, extra):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = options.parse_args_and_arch(
        options.get_training_parser(), input_args=tiny_roberta_args(data, "sentence_prediction_npu", extra)
    )
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return task, cfg


def _epoch_batches(task, cfg, split, epoch):
    task.load_dataset(split)
    itr = task.get_batch_iterator(
        dataset=task.dataset(split), max_tokens=cfg.dataset.max_tokens, max_sentences=cfg.dataset.batch_size,
        max_positions=task.max_positions(), ignore_invalid_inputs=True, seed=cfg.common.seed, epoch=epoch,
    )
    return list(itr.next_epoch_itr(shuffle=split == "train"))


@pytest.mark.parametrize("policy", ["drop", "fill"])
def test_static_shapes_are_bounded_and_grouped_batches_change_every_epoch(pair_data, policy):
    task, cfg = _setup_task(pair_data, ["--pad-buckets", "16,32", "--static-batch", policy, "--group-by-length"])
    pad = task.source_dictionary.pad()
    dataset = None
    seen_per_epoch = []
    for epoch in (1, 2):
        batches = _epoch_batches(task, cfg, "train", epoch)
        dataset = task.dataset("train")
        shapes = {tuple(b["net_input"]["src_tokens"].shape) for b in batches}
        # longest pair is 42 tokens > 32: those batches go to --max-positions 64
        assert shapes <= {(8, 16), (8, 32), (8, 64)}, shapes
        ids = np.concatenate([b["id"].numpy() for b in batches])
        assert len(batches) == 20  # 160 / 8: nothing to drop or fill
        assert sorted(ids.tolist()) == list(range(160))
        for b in batches:
            tokens, lengths = b["net_input"]["src_tokens"], b["net_input"]["src_lengths"]
            for row, n, i in zip(tokens, lengths, b["id"]):
                assert torch.equal(row[:n], dataset[int(i)]["net_input.src_tokens"])
                assert (row[n:] == pad).all()  # padded positions hold the pad token
        seen_per_epoch.append({frozenset(b["id"].tolist()) for b in batches})
    assert seen_per_epoch[0] != seen_per_epoch[1]  # regrouped, not just reordered


def test_fixed_batch_remainder_policies(pair_data):
    from fairseq_npu.data import LengthGroupedDataset

    task, cfg = _setup_task(pair_data, ["--pad-length", "64", "--static-batch", "drop"])
    valid = _epoch_batches(task, cfg, "valid", 1)  # evaluation keeps every sentence
    assert [len(b["id"]) for b in valid] == [8] * 8 + [4]
    assert {b["net_input"]["src_tokens"].shape[1] for b in valid} == {64}
    assert sorted(np.concatenate([b["id"].numpy() for b in valid]).tolist()) == list(range(68))

    inner = task.dataset("valid")
    idx = np.arange(68)
    for policy, sizes in {"keep": [8] * 8 + [4], "drop": [8] * 8, "fill": [8] * 9}.items():
        ds = LengthGroupedDataset(inner.dataset, inner._sizes, fixed_batch_size=True, remainder=policy)
        batches = ds.batch_by_size(idx, max_sentences=8)
        assert [len(b) for b in batches] == sizes
        if policy == "fill":
            assert batches[-1].tolist() == list(range(64, 68)) + [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"8 sentences x padded length 64 = 512 tokens exceeds --max-tokens 500"):
        LengthGroupedDataset(inner.dataset, inner._sizes, fixed_batch_size=True, buckets=task.buckets).batch_by_size(
            idx, max_tokens=500, max_sentences=8)
    with pytest.raises(ValueError, match="--static-batch needs --batch-size"):
        LengthGroupedDataset(inner.dataset, inner._sizes, fixed_batch_size=True).batch_by_size(idx)


def test_pad_buckets_mapping_and_errors():
    from fairseq_npu.data import PadBuckets

    b = PadBuckets([32, 16, 64], max_length=128)
    assert b.padded_lengths([1, 16, 17, 64, 65, 128]).tolist() == [16, 16, 32, 64, 128, 128]
    assert b.shapes(128) == (16, 32, 64, 128)
    m = PadBuckets(multiple=8, max_length=60)
    assert m.padded_lengths([1, 8, 9, 57, 60]).tolist() == [8, 8, 16, 60, 60]
    both = PadBuckets([16], multiple=8, max_length=512)
    assert both.padded_lengths([3, 17, 25]).tolist() == [16, 24, 32]
    assert not PadBuckets().enabled
    with pytest.raises(ValueError, match="give --pad-length or --pad-buckets, not both"):
        PadBuckets.from_flags(16, "8,16", 1, 512)
    with pytest.raises(ValueError, match=r"--pad-buckets takes comma-separated integers, got '8,x'"):
        PadBuckets.from_flags(None, "8,x", 1, 512)
    with pytest.raises(ValueError, match="pad length 600 exceeds --max-positions 512"):
        PadBuckets.from_flags(600, None, 1, 512)
