"""ALBERT preprocessing: SentencePiece ids under the albert_vocab contract, ALBERT normalisation, trained models."""

import os
from pathlib import Path

import pytest

from fairseq_npu import albert_vocab
from fairseq_npu.preprocess import GlueInputError, preprocess_task
from fairseq_npu.preprocess.albert_spm import albert_normalize

SHARED = Path(os.environ.get("FAIRSEQ_NPU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ALBERT_DIR = SHARED / "vocab" / "albert"
RTE_HEAD = ["index", "sentence1", "sentence2", "label"]


def write_rte(root: Path, train, dev=(("Dev one.", "Dev two.", "entailment"),), test=(("Test A.", "Test B."),)):
    task = root / "RTE"
    task.mkdir(parents=True, exist_ok=True)
    for name, rows, head in (("train", train, RTE_HEAD), ("dev", dev, RTE_HEAD), ("test", test, RTE_HEAD[:3])):
        lines = ["\t".join(head)] + ["\t".join([str(i), *r]) for i, r in enumerate(rows)]
        (task / f"{name}.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return root


def pieces_of(bin_dir: Path, sub: str, split: str):
    from fairseq.data import Dictionary
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    d = Dictionary.load(str(bin_dir / sub / "dict.txt"))
    data = MMapIndexedDataset(str(bin_dir / sub / split))
    return [[d[t] for t in data[i].tolist()] for i in range(len(data))]


@pytest.fixture(scope="module")
def real_model_output(tmp_path_factory):
    if not ALBERT_DIR.is_dir():
        pytest.skip(f"ALBERT vocabulary not found at {ALBERT_DIR}")
    root = tmp_path_factory.mktemp("albert")
    glue_dir = write_rte(root / "glue", [
        ("Héllo,  the ``Café'' opened in 1990, and cost 3,000 Euros.", "It is OLD.", "not_entailment"),
        ("Zebras zigzag.", "Animals move.", "entailment"),
    ])
    return preprocess_task(glue_dir, "RTE", dest=root / "out", model="albert", vocab_dir=ALBERT_DIR, workers=2)


def test_albert_ids_follow_google_tokenization(real_model_output):
    # lower-cased, accents stripped, `` '' -> ", and "▁1990," split into "▁1990" "," as ALBERT's tokenizer does
    assert pieces_of(real_model_output, "input0", "train")[0] == [
        "▁hello", ",", "▁the", "▁", '"', "ca", "fe", '"', "▁opened", "▁in", "▁1990", ",", "▁and", "▁cost", "▁3,000",
        "▁euro", "s", ".", "</s>"]
    assert pieces_of(real_model_output, "input1", "train")[0] == ["▁it", "▁is", "▁old", ".", "</s>"]
    assert pieces_of(real_model_output, "label", "train") == [["not_entailment", "</s>"], ["entailment", "</s>"]]


def test_albert_dictionary_is_the_contract(real_model_output):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(real_model_output / "spiece.model"))
    lines = (real_model_output / "input0" / "dict.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == sp.get_piece_size() - 4 == 29996
    assert lines[0] == "[MASK] 1"
    assert [line.rsplit(" ", 1)[0] for line in lines[:3]] == [sp.id_to_piece(i) for i in (4, 5, 6)]
    assert (real_model_output / "input1" / "dict.txt").read_bytes() == (real_model_output / "input0" / "dict.txt").read_bytes()
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    ids = MMapIndexedDataset(str(real_model_output / "input0" / "train"))[1].tolist()
    spm_ids = sp.encode(albert_normalize("Zebras zigzag."))
    assert ids == [albert_vocab.fairseq_id(i) for i in spm_ids] + [albert_vocab.FAIRSEQ_EOS]
    assert all(i >= 4 for i in spm_ids)  # ordinary pieces keep their SentencePiece id


def test_albert_pair_reads_cls_a_sep_b_sep(real_model_output):
    from fairseq.tasks.sentence_prediction import SentencePredictionConfig, SentencePredictionTask

    cfg = SentencePredictionConfig(data=str(real_model_output), num_classes=2, init_token=0, seed=1,
                                   regression_target=False, classification_head_name="head")
    task = SentencePredictionTask.setup_task(cfg)
    task.load_dataset("train")
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(real_model_output / "spiece.model"))
    sample = next(task.dataset("train")[i] for i in range(2) if task.dataset("train")[i]["id"] == 1)
    tokens = sample["net_input.src_tokens"].tolist()
    spm_ids = albert_vocab.fairseq_to_spm_ids(tokens, len(task.source_dictionary) - 1)
    cls, sep = albert_vocab.SPM_CLS, albert_vocab.SPM_SEP
    assert spm_ids == [cls] + sp.encode("zebras zigzag.") + [sep] + sp.encode("animals move.") + [sep]
    assert len(task.source_dictionary) == 30001  # 30000 pieces + the task's <mask>


def test_sentence_empty_after_albert_normalisation(tmp_path):
    if not ALBERT_DIR.is_dir():
        pytest.skip("no ALBERT vocabulary")
    glue_dir = write_rte(tmp_path / "glue", [("Fine.", "Fine too.", "entailment"), ("\u0301\u0300", "x", "entailment")])
    with pytest.raises(GlueInputError) as err:
        preprocess_task(glue_dir, "RTE", dest=tmp_path / "out", model="albert", vocab_dir=ALBERT_DIR)
    assert str(err.value) == f"{glue_dir / 'RTE' / 'train.tsv'}:3: empty sentence in column 2"
    # a control character survives ALBERT's normalisation but SentencePiece drops it: no tokens at all
    glue_dir = write_rte(tmp_path / "glue2", [("Fine.", "Fine too.", "entailment"), ("x", "\x01", "entailment")])
    with pytest.raises(GlueInputError) as err:
        preprocess_task(glue_dir, "RTE", dest=tmp_path / "out", model="albert", vocab_dir=ALBERT_DIR)
    assert str(err.value) == f"{glue_dir / 'RTE' / 'train.tsv'}:3: sentence has no tokens after normalisation"
    assert not (tmp_path / "out" / "RTE-bin").exists()
    out = preprocess_task(glue_dir, "RTE", dest=tmp_path / "out", model="albert", vocab_dir=ALBERT_DIR,
                          skip_bad_rows=True)
    assert pieces_of(out, "input0", "train") == [["▁fine", ".", "</s>"]]
    assert pieces_of(out, "label", "train") == [["entailment", "</s>"]]


def test_train_spm_mode_on_the_synthetic_task(tmp_path):
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    from fairseq_npu import synthetic

    synthetic.write_task(tmp_path / "glue" / "SST-2", n_train=400, n_dev=50, n_test=20, seed=3)
    outs = [preprocess_task(tmp_path / "glue", "SST-2", dest=tmp_path / name, model="albert",
                            train_spm_vocab_size=120, workers=1) for name in ("a", "b")]
    pieces = albert_vocab.read_spm_pieces(outs[0] / "spiece.model")
    assert pieces[:5] == list(albert_vocab.SPM_SPECIAL_PIECES) and 20 < len(pieces) <= 120
    assert (outs[0] / "input0" / "dict.txt").read_text().splitlines() == albert_vocab.fairseq_dict_lines(pieces)
    train = MMapIndexedDataset(str(outs[0] / "input0" / "train"))
    assert len(train) == 400
    all_ids = [t for i in range(len(train)) for t in train[i].tolist()]
    assert max(all_ids) < len(pieces) and albert_vocab.FAIRSEQ_UNK not in all_ids  # learned on train: no <unk>
    for rel in ("spiece.model", "input0/train.bin", "input0/valid.bin", "label/train.bin"):  # reproducible
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes()
    with pytest.raises(GlueInputError, match="--train-spm trains a SentencePiece vocabulary: it needs --model albert"):
        preprocess_task(tmp_path / "glue", "SST-2", dest=tmp_path / "c", train_spm_vocab_size=120)
