"""TRL's SFTTrainer with its defaults on dense and MoE Wren models (users fine-tune with TRL)."""

import pytest
import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

import wrenlm
from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs

TEXTS = ["KING. thou art my lord and I thy humble servant", "QUEEN. shall we walk the garden in the morning light"]
CHATS = [
    {"messages": [{"role": "user", "content": "Copy: 1 2"}, {"role": "assistant", "content": "1 2"}]},
    {"messages": [{"role": "user", "content": "Copy: 3 4 5"}, {"role": "assistant", "content": "3 4 5"}]},
]


def tiny_model(kind: str, tokenizer) -> wrenlm.WrenForCausalLM:
    kwargs = tiny_config_kwargs if kind == "dense" else tiny_moe_config_kwargs
    ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos")}
    torch.manual_seed(0)
    return wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**kwargs(vocab_size=len(tokenizer), **ids)))


def sft_trainer(model, tokenizer, dataset, tmp_path) -> SFTTrainer:
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


@pytest.mark.parametrize("kind", ["dense", "moe"])
@pytest.mark.parametrize("data", ["text", "messages"])
def test_sft_trainer_defaults_train(kind, data, tokenizer, tmp_path):
    model = tiny_model(kind, tokenizer)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    dataset = Dataset.from_list([{"text": text} for text in TEXTS] * 4 if data == "text" else CHATS * 4)
    trainer = sft_trainer(model, tokenizer, dataset, tmp_path)
    assert trainer.aux_loss_enabled is (kind == "moe")  # TRL reads a dense Wren as dense
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3 and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logs)
    if kind == "moe":
        assert all(entry["aux_loss"] > 0 for entry in logs)
    else:
        assert all("aux_loss" not in entry for entry in logs)
    changed = [name for name, param in model.named_parameters() if not torch.equal(param, before[name])]
    assert "model.embed_tokens.weight" in changed and any("self_attn" in name for name in changed)
    if kind == "moe":
        assert any("mlp.experts" in name for name in changed)


def test_sft_loss_is_the_models_own_loss_on_a_dense_wren(tokenizer, tmp_path):
    model = tiny_model("dense", tokenizer)
    trainer = sft_trainer(model, tokenizer, Dataset.from_list([{"text": text} for text in TEXTS]), tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(TEXTS))])
    model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch))  # TRL's fused LM head
        own_loss = model(**{key: batch[key] for key in ("input_ids", "attention_mask", "labels")}).loss
    torch.testing.assert_close(trl_loss, own_loss, rtol=1e-5, atol=1e-5)


def test_dense_config_reports_no_router_loss_and_outputs():
    dense = wrenlm.WrenConfig(**tiny_config_kwargs(router_aux_loss_coef=0.01))
    assert dense.router_aux_loss_coef == 0.0  # a dense model has no load-balancing loss
    assert wrenlm.WrenConfig(**tiny_moe_config_kwargs()).router_aux_loss_coef == 0.01
    model = wrenlm.WrenForCausalLM(dense)
    outputs = model.model(torch.tensor([[5, 6, 7]]), output_router_logits=True)
    assert outputs.router_logits is None and outputs.router_indices is None  # not (): nothing to index
