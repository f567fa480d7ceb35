"""The ALBERT SentencePiece <-> fairseq id contract (fairseq_npu.albert_vocab)."""

import pytest
import torch
from fairseq.data import Dictionary

from fairseq_npu import albert_vocab as av

ALBERT_VOCAB = "vocab/albert/30k-clean.vocab"
ALBERT_MODEL = "vocab/albert/30k-clean.rebuilt.model"


def test_id_maps_swap_the_four_specials_and_keep_the_rest():
    spm = [2, 0, 3, 1, 4, 5, 29999]
    assert av.spm_to_fairseq_ids(spm) == [0, 1, 2, 3, 4, 5, 29999]
    assert av.fairseq_to_spm_ids([0, 1, 2, 3, 4, 5, 29999, 30000], 30000) == [2, 0, 3, 1, 4, 5, 29999, 4]
    t = torch.tensor([[2, 17, 3, 0]])
    assert av.spm_to_fairseq_ids(t).tolist() == [[0, 17, 2, 1]]
    assert [av.fairseq_id(i) for i in range(6)] == [1, 3, 0, 2, 4, 5]
    with pytest.raises(av.AlbertVocabError, match="fairseq id 30001 is outside"):
        av.spm_id(30001, 30000)


def test_embedding_rows_permute_and_gain_the_mask_row():
    w = torch.arange(8.0).unsqueeze(1).repeat(1, 3)  # row i holds i
    f = av.spm_rows_to_fairseq(w)
    assert f[:, 0].tolist() == [2, 0, 3, 1, 4, 5, 6, 7, 4]
    assert torch.equal(av.fairseq_rows_to_spm(f, 8), w)
    assert av.spm_rows_to_fairseq(w, with_mask=False).size(0) == 8


@pytest.mark.parametrize("source", [ALBERT_VOCAB, ALBERT_MODEL])
def test_real_vocabulary_dict_loads_into_fairseq_with_contract_ids(shared_data, tmp_path, source):
    path = av.write_fairseq_dict(shared_data / source, tmp_path / "dict.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 30000 - 4 and lines[0] == "[MASK] 1" and lines[1] == "( 1"
    d = Dictionary.load(str(path))
    d.add_symbol("<mask>")  # what sentence_prediction / masked_lm do
    pieces = av.read_spm_pieces(shared_data / ALBERT_VOCAB)
    assert len(d) == 30001 and d[4] == "[MASK]" and d.index("<mask>") == 30000
    assert all(d[i] == pieces[i] for i in range(4, 30000))
    av.check_fairseq_dictionary(d, 30000)


def test_model_and_vocab_files_give_the_same_dict(shared_data, tmp_path):
    a = av.write_fairseq_dict(shared_data / ALBERT_VOCAB, tmp_path / "a.txt").read_bytes()
    b = av.write_fairseq_dict(shared_data / ALBERT_MODEL, tmp_path / "b.txt").read_bytes()
    assert a == b


def test_encode_text_matches_published_albert_ids(shared_data):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(shared_data / ALBERT_MODEL))
    # albert-base-v2 tokenizer: "Hello World!" -> [CLS] 10975 126 187 [SEP]; ids >= 4 are unchanged in fairseq
    assert av.encode_text(sp, "  Hello   World!") == [10975, 126, 187]
    assert av.normalize_text("Café ``quoted''") == 'cafe "quoted"'


def test_vocabulary_without_albert_specials_is_refused_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.vocab"
    bad.write_text("<pad>\t0\n<unk>\t0\n<s>\t0\n[SEP]\t0\n[MASK]\t0\na\t0\n", encoding="utf-8")
    with pytest.raises(av.AlbertVocabError, match=r"bad.vocab:3: piece 2 is '<s>', expected '\[CLS\]'"):
        av.write_fairseq_dict(bad, tmp_path / "dict.txt")
    assert not (tmp_path / "dict.txt").exists()


def test_piece_equal_to_a_fairseq_symbol_keeps_its_id(tmp_path):
    v = tmp_path / "odd.vocab"
    v.write_text("<pad>\t0\n<unk>\t0\n[CLS]\t0\n[SEP]\t0\n[MASK]\t0\n</s>\t0\nx\t0\n", encoding="utf-8")
    d = Dictionary.load(str(av.write_fairseq_dict(v, tmp_path / "dict.txt")))
    assert len(d) == 7 and d[5] == "</s>" and d[6] == "x" and d.eos() == 2


def test_number_comma_pieces_are_recut_as_albert_tokenizes(shared_data):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(shared_data / ALBERT_MODEL))
    assert sp.encode("on 1990, and", out_type=str) == ["▁on", "▁1990,", "▁and"]  # the raw model glues the comma
    assert av.encode_pieces(sp, "On 1990, and") == ["▁on", "▁1990", ",", "▁and"]
    assert av.encode_text(sp, "On 1990, and") == [sp.piece_to_id(p) for p in ["▁on", "▁1990", ",", "▁and"]]
