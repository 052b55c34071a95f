"""Core model properties, in the spirit of transformers' ModelTesterMixin, on tiny dense and MoE configs."""

import copy

import pytest
import torch
from accelerate import init_empty_weights
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs
from wrenlm import WrenConfig, WrenForCausalLM, WrenModel
from wrenlm.modeling.mlp import WrenMLP
from wrenlm.modeling.moe import WrenSparseMoeBlock


def make_model(config, seed=0):
    torch.manual_seed(seed)
    return WrenForCausalLM(config).eval()


def random_ids(config, batch=2, seq=12, seed=1):
    generator = torch.Generator().manual_seed(seed)
    # Avoid the special ids (0..2) so padding/eos never appear by accident.
    return torch.randint(3, config.vocab_size, (batch, seq), generator=generator)


def test_auto_classes_resolve_to_wren(any_tiny_config):
    fields = {k: v for k, v in any_tiny_config.to_diff_dict().items() if k != "model_type"}
    assert isinstance(AutoConfig.for_model("wren", **fields), WrenConfig)
    assert isinstance(AutoModel.from_config(any_tiny_config), WrenModel)
    assert isinstance(AutoModelForCausalLM.from_config(any_tiny_config), WrenForCausalLM)


def test_forward_shapes_and_hidden_states(any_tiny_config):
    model = make_model(any_tiny_config)
    ids = random_ids(any_tiny_config)
    out = model(ids, output_hidden_states=True, output_attentions=False)
    assert out.logits.shape == (2, 12, any_tiny_config.vocab_size)
    assert len(out.hidden_states) == any_tiny_config.num_hidden_layers + 1
    assert torch.isfinite(out.logits).all()


def test_moe_layout_follows_config():
    config = WrenConfig(**tiny_moe_config_kwargs(num_hidden_layers=4, first_k_dense_layers=1, moe_layer_interval=2))
    model = make_model(config)
    kinds = [type(layer.mlp) for layer in model.model.layers]
    assert kinds == [WrenMLP, WrenSparseMoeBlock, WrenMLP, WrenSparseMoeBlock]
    assert model.model.layers[1].mlp.shared_experts is not None


def test_save_and_reload_round_trip(any_tiny_config, tmp_path):
    model = make_model(any_tiny_config)
    ids = random_ids(any_tiny_config)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(reloaded, WrenForCausalLM)
    assert not reloaded.training
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_tied_and_untied_lm_head(tmp_path):
    tied = make_model(WrenConfig(**tiny_config_kwargs(tie_word_embeddings=True)))
    assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()
    untied = make_model(WrenConfig(**tiny_config_kwargs(tie_word_embeddings=False)))
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    untied.save_pretrained(tmp_path)
    reloaded = WrenForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.lm_head.weight, untied.lm_head.weight)


def test_inputs_embeds_matches_input_ids(any_tiny_config):
    model = make_model(any_tiny_config)
    ids = random_ids(any_tiny_config)
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(ids).logits)
    with pytest.raises(ValueError, match="exactly one"):
        model(input_ids=ids, inputs_embeds=embeds)


@pytest.mark.parametrize("tie", [True, False])
def test_resize_token_embeddings(tie):
    config = WrenConfig(**tiny_config_kwargs(tie_word_embeddings=tie))
    model = make_model(config)
    vocab = config.vocab_size  # the model shares (and resizing updates) this config
    ids = random_ids(config)
    before = model(ids).logits
    model.resize_token_embeddings(vocab + 10, mean_resizing=False)
    assert model.config.vocab_size == vocab + 10
    assert model.get_output_embeddings().weight.shape[0] == vocab + 10
    after = model(ids).logits
    # Existing rows are untouched, so old-vocabulary logits do not change.
    torch.testing.assert_close(after[..., :vocab], before)
    new_ids = torch.full((1, 3), vocab + 5)
    assert model(new_ids).logits.shape[-1] == vocab + 10
    if tie:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_token_ids_out_of_range_raise_clear_error(tiny_config):
    model = make_model(tiny_config)
    with pytest.raises(ValueError, match=r"token id 128, outside the vocabulary of size 128"):
        model(torch.tensor([[5, 128]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[-1, 4]]))


def test_sequence_past_context_window_raises(tiny_config):
    model = make_model(tiny_config)
    too_long = torch.full((1, tiny_config.max_position_embeddings + 1), 5)
    with pytest.raises(ValueError, match="max_position_embeddings=128"):
        model(too_long)
    prompt = torch.full((1, tiny_config.max_position_embeddings - 2), 5)
    with pytest.raises(ValueError, match="context window"):
        model.generate(prompt, max_new_tokens=5, do_sample=False)


def test_gradient_checkpointing_gives_equal_gradients(any_tiny_config):
    ids = random_ids(any_tiny_config)
    grads = []
    for checkpointing in (False, True):
        model = make_model(any_tiny_config).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert model.is_activation_checkpointing
        model(ids, labels=ids).loss.backward()
        grads.append({name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_meta_device_init_and_device_map_loading(any_tiny_config, tmp_path):
    make_model(any_tiny_config).save_pretrained(tmp_path)
    with init_empty_weights():
        empty = WrenForCausalLM(any_tiny_config)
    assert all(param.device.type == "meta" for param in empty.parameters())
    reference = WrenForCausalLM.from_pretrained(tmp_path)
    mapped = AutoModelForCausalLM.from_pretrained(tmp_path, device_map="auto")
    assert {param.device.type for param in mapped.parameters()} == {"cpu"}
    ids = random_ids(any_tiny_config)
    torch.testing.assert_close(mapped(ids).logits, reference(ids).logits)
    # The rotary buffers are not saved; they must be rebuilt identically after meta loading.
    torch.testing.assert_close(mapped.model.rotary_emb.inv_freq, reference.model.rotary_emb.inv_freq)


def test_tiny_model_overfits_one_batch(any_tiny_config):
    model = make_model(any_tiny_config).train()
    ids = random_ids(any_tiny_config, batch=2, seq=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first_loss = None
    for _ in range(60):
        loss = model(ids, labels=ids).loss
        first_loss = first_loss if first_loss is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    final = model(ids, labels=ids)
    assert first_loss > 4.0
    assert final.loss.item() < 0.3
    # Memorised: greedy next-token predictions reproduce the batch.
    assert torch.equal(final.logits[:, :-1].argmax(-1), ids[:, 1:])


def test_deepcopy_and_pickle_state(tiny_config):
    model = make_model(tiny_config)
    clone = copy.deepcopy(model)
    ids = random_ids(tiny_config)
    torch.testing.assert_close(clone(ids).logits, model(ids).logits)
