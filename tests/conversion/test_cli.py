"""`wren convert`: direction from the source's model_type, options, one-line errors."""

import json

from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2MoeConfig, Qwen3MoeConfig

from wren_testing import parity
from wrenlm.cli import main


def test_convert_to_wren_and_back(tmp_path, capsys):
    hf = parity.build_hf(
        Qwen3MoeConfig,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=24,
        num_hidden_layers=4,
        decoder_sparse_step=2,
    )
    hf.save_pretrained(tmp_path / "hf")

    assert (
        main(["convert", "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "wren"), "--max-shard-size", "30KB"])
        == 0
    )
    assert "qwen3_moe -> Wren (MoE, 4 experts" in capsys.readouterr().out
    assert (tmp_path / "wren" / "model.safetensors.index.json").is_file()
    wren = AutoModelForCausalLM.from_pretrained(tmp_path / "wren", attn_implementation="eager")
    parity.assert_same_logits(hf, wren)

    assert main(["convert", "--from", str(tmp_path / "wren"), "--out", str(tmp_path / "back")]) == 0
    assert "Wren -> qwen3_moe (Qwen3MoeForCausalLM)" in capsys.readouterr().out
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "back", attn_implementation="eager")
    assert type(back) is type(hf)
    parity.assert_same_logits(hf, back)


def test_target_and_dtype_options(tmp_path):
    hf = parity.build_hf(LlamaConfig)
    hf.save_pretrained(tmp_path / "hf")
    assert (
        main(
            [
                "convert",
                "--from",
                str(tmp_path / "hf"),
                "--out",
                str(tmp_path / "wren"),
                "--to",
                "wren",
                "--dtype",
                "float16",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "wren" / "config.json").read_text())["dtype"] == "float16"

    assert (
        main(["convert", "--from", str(tmp_path / "wren"), "--out", str(tmp_path / "mistral"), "--to", "mistral"]) == 0
    )
    assert json.loads((tmp_path / "mistral" / "config.json").read_text())["model_type"] == "mistral"


def test_errors_are_one_line(tmp_path, capsys):
    hf = parity.build_hf(LlamaConfig)
    hf.save_pretrained(tmp_path / "hf")
    Qwen2MoeConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4).save_pretrained(
        tmp_path / "qwen2moe"
    )
    cases = [
        (["--from", str(tmp_path / "hf"), "--out", str(tmp_path / "x"), "--to", "qwen2"], "--to qwen2 only applies"),
        (["--from", str(tmp_path / "qwen2moe"), "--out", str(tmp_path / "x")], "shared_expert_gate"),
        (["--from", str(tmp_path / "missing"), "--out", str(tmp_path / "x")], "missing does not exist"),
    ]
    for args, message in cases:
        assert main(["convert", *args]) == 1
        last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bars
        assert last_line.startswith("wren convert: error:") and message in last_line, last_line
    assert main(["convert", "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "w")]) == 0
    assert main(["convert", "--from", str(tmp_path / "w"), "--out", str(tmp_path / "x"), "--to", "qwen3"]) == 1
    assert "cannot be expressed as qwen3 exactly: qk_norm=False" in capsys.readouterr().err
