"""fairseq-npu-convert on whole directories: what it writes, what fairseq loads from it, how it refuses bad input."""

import torch
import transformers

from fairseq_npu.convert.cli import cli_main


def test_roberta_directory_converts_for_fairseqs_own_hub_interface(tmp_path, shared_data, capsys):
    """HF RobertaForSequenceClassification -> model.pt + dict.txt that fairseq's RobertaModel.from_pretrained loads."""
    gpt2 = shared_data / "vocab" / "gpt2_bpe"
    config = transformers.RobertaConfig(
        vocab_size=50265, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=66, layer_norm_eps=1e-5, type_vocab_size=1, num_labels=2,
    )
    torch.manual_seed(0)
    hf = transformers.RobertaForSequenceClassification(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    assert cli_main([str(tmp_path / "hf"), str(tmp_path / "out"), "--dict", str(gpt2 / "dict.txt")]) == 0
    assert "arch roberta_base" in capsys.readouterr().out

    from fairseq.models.roberta import RobertaModel

    hub = RobertaModel.from_pretrained(
        str(tmp_path / "out"), "model.pt", bpe="gpt2", gpt2_encoder_json=str(gpt2 / "encoder.json"),
        gpt2_vocab_bpe=str(gpt2 / "vocab.bpe"),
    ).eval()
    tokens = hub.encode("Hello world!", "A second sentence.")
    assert tokens[0] == 0 and tokens[-1] == 2 and len(tokens) > 8
    with torch.no_grad():
        ours = hub.predict("sentence_classification_head", tokens, return_logits=True)
        theirs = hf(input_ids=tokens.unsqueeze(0)).logits
    assert (ours - theirs).abs().max().item() < 1e-4

    from fairseq_npu.convert.verify import main as verify

    assert verify([str(tmp_path / "hf"), str(tmp_path / "out"), "--length", "40"]) == 0
    assert "roberta: batch (4, 40), max |hidden-state difference|" in capsys.readouterr().out


def test_missing_config_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    assert cli_main([str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fairseq-npu-convert: error: {tmp_path / 'src' / 'config.json'}: not found (a Hugging Face model directory has config.json)"
    assert not (tmp_path / "out").exists()


def test_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
    config = transformers.AlbertConfig(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
    transformers.AlbertForMaskedLM(config).save_pretrained(tmp_path / "hf")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"earlier run")
    assert cli_main([str(tmp_path / "hf"), str(out)]) == 2
    assert "model.pt exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert (out / "model.pt").read_bytes() == b"earlier run"
    assert cli_main([str(tmp_path / "hf"), str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]  # no staging directory left behind

    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(str(out / "model.pt"))
    assert state["model"]["encoder.embeddings.word_embeddings.weight"].shape == (41, 8)


def test_bad_tensor_reported_by_the_cli(tmp_path, capsys):
    config = transformers.AlbertConfig(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
    state = transformers.AlbertModel(config).state_dict()
    state["encoder.embedding_hidden_mapping_in.weight"] = torch.zeros(16, 9)
    (tmp_path / "lp").mkdir()
    torch.save(state, tmp_path / "lp" / "pytorch_model.bin")
    config.to_json_file(tmp_path / "lp" / "config.json")
    assert cli_main([str(tmp_path / "lp"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "tensor 'encoder.embedding_hidden_mapping_in.weight' has shape [16, 9], expected [16, 8]" in err
    assert not (tmp_path / "out" / "model.pt").exists()


def test_the_command_prints_no_debug_or_info_lines(tmp_path):
    """Importing fairseq sets the root logger to DEBUG; the command still prints only its own result."""
    import os
    import subprocess
    import sys

    config = transformers.AlbertConfig(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
    transformers.AlbertForMaskedLM(config).save_pretrained(tmp_path / "hf")
    run = subprocess.run([sys.executable, "-m", "fairseq_npu.convert.cli", str(tmp_path / "hf"), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert run.stdout.startswith(f"wrote {tmp_path / 'out' / 'model.pt'} (arch albert)")
