"""fairseq-npu-export: fairseq RoBERTa / ALBERT checkpoints -> Hugging Face directories.

transformers loads them without a word about missing or unused weights, their logits equal the fairseq model's
(< 1e-4, padded pairs), a Hugging Face model converted in and exported back has the very same tensors, and what
Hugging Face cannot express is refused in one line.
"""

import logging
import warnings

import pytest
import torch
import transformers

from fairseq_npu import albert_vocab
from fairseq_npu.convert import albert, roberta
from fairseq_npu.convert.checkpoint import checkpoint_state, fairseq_cfg
from fairseq_npu.convert.cli import convert
from fairseq_npu.convert.export import cli_main, export
from fairseq_npu.models.albert.embeddings import token_types_from_eos

TOL = 1e-4
V = 50  # vocabulary of the tiny models (SentencePiece pieces for ALBERT, fairseq ids for RoBERTa)
HEAD = albert.DEFAULT_HEAD


def roberta_config(**kw):
    return transformers.RobertaConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=26, layer_norm_eps=1e-5, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, **kw)


def albert_config(**kw):
    return transformers.AlbertConfig(
        vocab_size=V, embedding_size=16, hidden_size=32, num_hidden_layers=3, num_hidden_groups=2, inner_group_num=1,
        num_attention_heads=4, intermediate_size=48, max_position_embeddings=24, **kw)


def randomize(model, seed):
    """Perturb every parameter (zero biases and unit LayerNorms would hide a misplaced tensor)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if "layernorm.weight" in name.lower() or "layer_norm.weight" in name else
                    0.1 * noise)
        if hasattr(model, "roberta"):  # as in every published RoBERTa: fairseq has no segments, the row is 0
            model.roberta.embeddings.token_type_embeddings.weight.zero_()
    return model.eval()


class LoadLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def load_hf(directory, auto_class):
    """Load with transformers, returning the model and everything it logged or warned at WARNING and above."""
    handler, logger = LoadLog(), logging.getLogger("transformers")
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = auto_class.from_pretrained(str(directory), output_loading_info=True)
    finally:
        logger.removeHandler(handler)
    problems = {k: v for k, v in info.items() if v}
    return model.eval(), handler.lines + [str(w.message) for w in caught], problems


def test_load_log_catches_what_transformers_reports(tmp_path):
    """The capture above is not blind: a masked-LM directory loaded as a classifier is reported."""
    randomize(transformers.AlbertForMaskedLM(albert_config()), 0).save_pretrained(tmp_path)
    _, lines, problems = load_hf(tmp_path, transformers.AutoModelForSequenceClassification)
    assert problems.get("missing_keys") and any("classifier" in line for line in lines)


ROUND_TRIPS = [
    ("roberta", transformers.RobertaForSequenceClassification, dict(num_labels=3)),
    ("roberta", transformers.RobertaForSequenceClassification, dict(num_labels=1)),
    ("roberta", transformers.RobertaForMaskedLM, {}),
    ("albert", transformers.AlbertForSequenceClassification, dict(num_labels=3)),
    ("albert", transformers.AlbertForSequenceClassification, dict(num_labels=1)),
    ("albert", transformers.AlbertForMaskedLM, {}),
    ("albert", transformers.AlbertForPreTraining, {}),
]


@pytest.mark.parametrize("family,hf_class,kw", ROUND_TRIPS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_hugging_face_to_fairseq_and_back_gives_the_same_tensors(tmp_path, family, hf_class, kw):
    config = (roberta_config if family == "roberta" else albert_config)(**kw)
    original = randomize(hf_class(config), seed=len(kw) + 3)
    original.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "fairseq")
    exported, notes = export(tmp_path / "fairseq" / "model.pt", tmp_path / "back")
    assert exported == hf_class.__name__
    back, lines, problems = load_hf(tmp_path / "back", transformers.AutoModelForPreTraining
                                    if hf_class is transformers.AlbertForPreTraining else
                                    transformers.AutoModelForMaskedLM if "MaskedLM" in exported else
                                    transformers.AutoModelForSequenceClassification)
    assert type(back) is hf_class and not problems and not lines, (problems, lines)
    want, got = original.state_dict(), back.state_dict()
    assert sorted(got) == sorted(want)
    differ = [k for k in want if want[k].dtype != got[k].dtype or not torch.equal(want[k], got[k])]
    assert not differ
    if kw.get("num_labels") == 1:
        assert back.config.problem_type == "regression"


# ---------------------------------------------------------------------------------------------------------------
# parity with fairseq models as fine-tuning leaves them (every weight moved, including the <mask> row)

ROBERTA_OPTIONS = dict(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=48, encoder_attention_heads=4,
                       max_positions=24, activation_fn="gelu", dropout=0.1, attention_dropout=0.1, pooler_dropout=0.0)


def fairseq_checkpoint(tmp_path, family, heads, task=None):
    """A fairseq model with random weights, saved as fairseq saves it; returns (model, checkpoint path)."""
    if family == "roberta":
        options, arch = dict(ROBERTA_OPTIONS), "roberta_base"
        model = roberta.build_reference_model(options, V, {h: (n, 32) for h, n in heads.items()})
    else:
        options = albert.model_options(albert_config().to_dict(), "test")
        arch = albert.arch_for(options)
        model = albert.build_reference_model(options, V, heads)  # V pieces + the task's <mask> row
    randomize(model, seed=11)
    cfg = fairseq_cfg(arch, options)
    if task is not None:
        cfg["task"] = task
    path = tmp_path / "checkpoint_best.pt"
    torch.save(checkpoint_state(model.state_dict(), cfg, "test"), path)
    return model.eval(), path


def fairseq_pairs():
    """fairseq ids: <s> A </s> B </s> right-padded (ALBERT's pair layout; RoBERTa's adds a second </s>)."""
    rows = [[0, 10, 11, 12, 2, 20, 21, 2], [0, 30, 31, 2, 1, 1, 1, 1], [0, 5, 49, 7, 2, 44, 2, 1]]
    return torch.tensor(rows)


def hf_inputs(family, ids):
    if family == "roberta":
        return dict(input_ids=ids, attention_mask=ids.ne(1).long())
    spm = albert_vocab.fairseq_to_spm_ids(ids, V)
    return dict(input_ids=spm, attention_mask=spm.ne(albert_vocab.SPM_PAD).long(),
                token_type_ids=token_types_from_eos(spm, albert_vocab.SPM_SEP))


@pytest.mark.parametrize("family", ["roberta", "albert"])
def test_classifier_logits_and_labels(tmp_path, family):
    data = tmp_path / "data"
    (data / "label").mkdir(parents=True)
    # fairseq's label ids follow the dictionary (by frequency), with its padding symbols after the labels
    (data / "label" / "dict.txt").write_text("neutral 9\nentailment 8\ncontradiction 7\nmadeupword0000 0\n")
    task = {"_name": "sentence_prediction", "data": str(data), "num_classes": 3, "regression_target": False}
    model, path = fairseq_checkpoint(tmp_path, family, {HEAD: 3}, task)
    exported, _ = export(path, tmp_path / "hf")
    hf, lines, problems = load_hf(tmp_path / "hf", transformers.AutoModelForSequenceClassification)
    assert not lines and not problems
    assert hf.config.id2label == {0: "neutral", 1: "entailment", 2: "contradiction"}
    assert hf.config.label2id == {"neutral": 0, "entailment": 1, "contradiction": 2}
    assert hf.config.problem_type == "single_label_classification"
    ids = fairseq_pairs()
    with torch.no_grad():
        ours, _ = model(ids, classification_head_name=HEAD)
        theirs = hf(**hf_inputs(family, ids)).logits
    assert ours.std() > 0.1 and (ours - theirs).abs().max().item() < TOL


@pytest.mark.parametrize("family", ["roberta", "albert"])
def test_regression_head_logits(tmp_path, family):
    task = {"_name": "sentence_prediction_npu", "data": str(tmp_path / "STS-B-bin"), "num_classes": 1,
            "regression_target": True}
    model, path = fairseq_checkpoint(tmp_path, family, {"sts": 1}, task)
    export(path, tmp_path / "hf")
    hf, lines, problems = load_hf(tmp_path / "hf", transformers.AutoModelForSequenceClassification)
    assert not lines and not problems
    assert hf.config.problem_type == "regression" and hf.config.num_labels == 1
    ids = fairseq_pairs()
    with torch.no_grad():
        ours, _ = model(ids, classification_head_name="sts")
        theirs = hf(**hf_inputs(family, ids)).logits
    assert theirs.shape == (3, 1) and (ours - theirs).abs().max().item() < TOL


@pytest.mark.parametrize("family", ["roberta", "albert"])
def test_masked_lm_logits(tmp_path, family):
    model, path = fairseq_checkpoint(tmp_path, family, {})
    class_name, notes = export(path, tmp_path / "hf")
    hf, lines, problems = load_hf(tmp_path / "hf", transformers.AutoModelForMaskedLM)
    assert not lines and not problems and class_name.endswith("ForMaskedLM")
    ids = fairseq_pairs()
    ids[0, 2] = ids[2, 5] = V if family == "albert" else V - 1  # masked positions: the task's <mask>, the last id
    inputs = hf_inputs(family, ids)
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf(**inputs).logits
    keep = inputs["attention_mask"].bool()
    if family == "albert":
        assert any("<mask> row becomes the [MASK] embedding" in n for n in notes)
        # our logits are over fairseq ids (+ <mask>), Hugging Face's over SentencePiece ids. The output row of
        # [MASK] is the (tied) input row that now holds fairseq's <mask>: predicting [MASK] is never a target
        pieces = [s for s in range(V) if s != albert_vocab.SPM_MASK]
        ours = ours[..., torch.tensor([albert_vocab.fairseq_id(s) for s in pieces])]
        theirs = theirs[..., pieces]
    assert (ours[keep] - theirs[keep]).abs().max().item() < TOL


# ---------------------------------------------------------------------------------------------------------------
# refusals: one line, exit status 2, nothing written


def _patched(path, **model_options):
    state = torch.load(path, weights_only=False)
    model = state["cfg"]["model"]  # roberta's options are an argparse.Namespace, as fairseq saves them
    (model if isinstance(model, dict) else vars(model)).update(model_options)
    torch.save(state, path)


@pytest.mark.parametrize("options,message", [
    (dict(encoder_normalize_before=True),
     "--encoder-normalize-before True cannot be represented in Hugging Face's RoBERTa (it needs False)"),
    (dict(untie_weights_roberta=True),
     "--untie-weights-roberta True cannot be represented in Hugging Face's RoBERTa (it needs False)"),
    (dict(activation_fn="swish"), "--activation-fn swish has no Hugging Face equivalent (supported: gelu, "
     "gelu_accurate, relu)"),
    (dict(_name="transformer_lm", arch="transformer_lm"),
     "arch 'transformer_lm' (TransformerLanguageModel) cannot be exported: only fairseq's roberta and "
     "fairseq_npu's albert models have a Hugging Face counterpart here"),
])
def test_what_hugging_face_cannot_express_is_refused(tmp_path, capsys, options, message):
    _, path = fairseq_checkpoint(tmp_path, "roberta", {})
    _patched(path, **options)
    assert cli_main([str(path), str(tmp_path / "hf")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"fairseq-npu-export: error: {path}: {message}\n"
    assert not (tmp_path / "hf").exists()


def test_several_heads_need_a_choice(tmp_path, capsys):
    _, path = fairseq_checkpoint(tmp_path, "albert", {"mnli": 3, "rte": 2})
    assert cli_main([str(path), str(tmp_path / "hf")]) == 2
    assert capsys.readouterr().err == (f"fairseq-npu-export: error: {path}: 2 classification heads (mnli, rte); "
                                       "pass --head-name NAME (or --masked-lm)\n")
    assert cli_main([str(path), str(tmp_path / "hf"), "--head-name", "rte"]) == 0
    assert "AlbertForSequenceClassification" in capsys.readouterr().out
    hf, lines, problems = load_hf(tmp_path / "hf", transformers.AutoModelForSequenceClassification)
    assert hf.config.num_labels == 2 and not lines and not problems


def test_existing_files_are_kept_unless_overwrite(tmp_path, capsys):
    _, path = fairseq_checkpoint(tmp_path, "albert", {})
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("earlier")
    assert cli_main([str(path), str(tmp_path / "hf")]) == 2
    assert "config.json exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert (tmp_path / "hf" / "config.json").read_text() == "earlier"
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json"]  # staging removed
    assert cli_main([str(path), str(tmp_path / "hf"), "--overwrite"]) == 0


# ---------------------------------------------------------------------------------------------------------------
# tokenizer files from the real vocabularies


def test_roberta_tokenizer_reads_the_ids_the_preprocessor_writes(tmp_path, shared_data):
    """vocab.json maps GPT-2 tokens to fairseq ids (dict.txt), so the exported tokenizer matches the embedding rows."""
    from fairseq.data import Dictionary

    from fairseq_npu.convert.hf_tokenizer import write_roberta
    from fairseq_npu.preprocess.gpt2_bpe import Gpt2BpeEncoder

    gpt2 = shared_data / "vocab" / "gpt2_bpe"
    d = Dictionary.load(str(gpt2 / "dict.txt"))
    write_roberta(tmp_path, d.symbols, gpt2 / "dict.txt", gpt2 / "encoder.json", gpt2 / "vocab.bpe", len(d) + 1, 512)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(tokenizer) == 50265 and tokenizer.mask_token_id == 50264 and tokenizer.pad_token_id == 1
    encoder = Gpt2BpeEncoder(gpt2 / "encoder.json", gpt2 / "vocab.bpe", d)
    lines = (shared_data / "glue" / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:6]
    for line in lines:
        a, b = line.split("\t")[1:3]
        ours = [0] + encoder.encode([a])[0].tolist() + [2] + encoder.encode([b])[0].tolist()  # each ends with </s>
        assert tokenizer(a, b)["input_ids"] == ours


def test_albert_tokenizer_files_from_the_sentencepiece_model(tmp_path, shared_data):
    from fairseq_npu.convert.hf_tokenizer import write_albert

    spm = shared_data / "vocab" / "albert" / "30k-clean.rebuilt.model"
    write_albert(tmp_path, spm, 512)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm))
    a, b = "The cat sat on the mat.", "A second sentence"
    ids = tokenizer(a, b)["input_ids"]
    ours = [0] + albert_vocab.encode_text(processor, a) + [2] + albert_vocab.encode_text(processor, b) + [2]
    assert albert_vocab.spm_to_fairseq_ids(ids) == ours


def test_a_word_level_dictionary_gets_no_gpt2_tokenizer(tmp_path):
    """GPT-2's BPE cannot produce the ids of a dictionary of words: the model is exported, the tokenizer is not."""
    data = tmp_path / "data"
    (data / "input0").mkdir(parents=True)
    (data / "input0" / "dict.txt").write_text("".join(f"w{i} 1\n" for i in range(V - 5)))
    (tmp_path / "bpe").mkdir()
    (tmp_path / "bpe" / "encoder.json").write_text('{"a": 0}')
    (tmp_path / "bpe" / "vocab.bpe").write_text("#version: 0.2\n")
    _, path = fairseq_checkpoint(tmp_path, "roberta", {}, {"_name": "masked_lm", "data": str(data)})
    _, notes = export(path, tmp_path / "hf", gpt2_bpe_dir=tmp_path / "bpe")
    assert f"{data / 'input0' / 'dict.txt'}:1: 'w0' is no GPT-2 BPE id: tokenizer files not written" in notes
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]
