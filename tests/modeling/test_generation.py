"""generate(): greedy, sampling, beam search, streaming and compiled static-cache decoding."""

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation import CompileConfig
from transformers.generation.streamers import BaseStreamer

from wren_testing import tiny_config_kwargs
from wrenlm import WrenConfig, WrenForCausalLM


@pytest.fixture
def model():
    torch.manual_seed(0)
    # A larger init spread makes the next-token distributions peaked enough to tell strategies apart.
    return WrenForCausalLM(WrenConfig(**tiny_config_kwargs(initializer_range=0.2))).eval()


@pytest.fixture
def prompt():
    return torch.randint(3, 128, (1, 5), generator=torch.Generator().manual_seed(3))


def next_token_logprobs(model, sequences):
    with torch.no_grad():
        return torch.log_softmax(model(sequences).logits.float(), dim=-1)


def test_greedy_picks_argmax_at_every_step(model, prompt):
    out = model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert out.shape == (1, 13)
    logprobs = next_token_logprobs(model, out)
    for position in range(5, 13):
        assert out[0, position] == logprobs[0, position - 1].argmax()


def test_sampling_is_seeded_and_respects_top_k(model, prompt):
    kwargs = dict(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=3, eos_token_id=None)
    torch.manual_seed(7)
    first = model.generate(prompt, **kwargs)
    torch.manual_seed(7)
    assert torch.equal(model.generate(prompt, **kwargs), first)
    logprobs = next_token_logprobs(model, first)
    for position in range(5, 15):
        allowed = logprobs[0, position - 1].topk(3).indices
        assert first[0, position] in allowed
    torch.manual_seed(8)
    samples = {tuple(model.generate(prompt, **kwargs)[0].tolist()) for _ in range(5)}
    assert len(samples) > 1  # it really samples


def test_top_p_and_low_temperature_collapse_to_greedy(model, prompt):
    greedy = model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=None)
    torch.manual_seed(0)
    tiny_top_p = model.generate(prompt, max_new_tokens=8, do_sample=True, top_p=1e-6, top_k=0, eos_token_id=None)
    torch.manual_seed(0)
    cold = model.generate(prompt, max_new_tokens=8, do_sample=True, temperature=1e-4, top_k=0, eos_token_id=None)
    assert torch.equal(tiny_top_p, greedy)
    assert torch.equal(cold, greedy)


def test_beam_search_scores_are_true_sequence_logprobs(model, prompt):
    out = model.generate(
        prompt,
        max_new_tokens=6,
        num_beams=4,
        num_return_sequences=4,
        do_sample=False,
        eos_token_id=None,
        length_penalty=0.0,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert out.sequences.shape == (4, 11)
    assert len({tuple(seq.tolist()) for seq in out.sequences}) == 4
    logprobs = next_token_logprobs(model, out.sequences)
    generated = out.sequences[:, 5:]
    totals = logprobs[:, 4:-1].gather(-1, generated[..., None]).squeeze(-1).sum(-1)
    # length_penalty=0 makes the beam score the plain sum of token log-probs.
    torch.testing.assert_close(out.sequences_scores, totals, atol=1e-4, rtol=1e-4)
    assert torch.all(out.sequences_scores[:-1] >= out.sequences_scores[1:])
    greedy = model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None)
    greedy_total = next_token_logprobs(model, greedy)[0, 4:-1].gather(-1, greedy[0, 5:, None]).sum()
    assert out.sequences_scores[0] >= greedy_total - 1e-4


class RecordingStreamer(BaseStreamer):
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


def test_streamer_receives_prompt_then_each_new_token(model, prompt):
    streamer = RecordingStreamer()
    out = model.generate(prompt, max_new_tokens=5, do_sample=False, eos_token_id=None, streamer=streamer)
    assert streamer.ended
    assert streamer.chunks[0] == prompt[0].tolist()
    assert [c[0] for c in streamer.chunks[1:]] == out[0, 5:].tolist()


def test_generation_config_defaults_come_from_model_config(model):
    assert isinstance(model.generation_config, GenerationConfig)
    assert model.generation_config.eos_token_id == model.config.eos_token_id


def test_torch_compile_with_static_cache_matches_eager(model, prompt):
    expected = model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None)
    compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    compile_config._compile_all_devices = True  # transformers only auto-compiles on accelerators otherwise
    torch._dynamo.reset()
    compiled = model.generate(
        prompt,
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=None,
        cache_implementation="static",
        compile_config=compile_config,
    )
    assert hasattr(model, "_compiled_call")  # the compiled forward really ran
    assert torch.equal(compiled, expected)


@pytest.fixture
def short_context_model():
    torch.manual_seed(0)
    return WrenForCausalLM(WrenConfig(**tiny_config_kwargs(max_position_embeddings=64))).eval()


def count_forwards(model) -> list:
    calls = []
    model.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


@pytest.mark.parametrize("cache", ["dynamic", "static", "dynamic object"])
def test_generation_past_the_context_fails_before_any_work(short_context_model, cache):
    from transformers import DynamicCache

    model = short_context_model
    prompt = torch.randint(3, 128, (2, 50), generator=torch.Generator().manual_seed(1))
    options = {"cache_implementation": "static"} if cache == "static" else {}
    if cache == "dynamic object":
        options["cache"] = DynamicCache(config=model.config)
    calls = count_forwards(model)
    with pytest.raises(ValueError, match=r"50-token prompt needs 80 positions.*=64 \(at most 14 new tokens fit\)"):
        model.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=None, **options)
    with pytest.raises(ValueError, match="needs 70 positions"):
        model.generate(prompt, max_length=70, do_sample=False, eos_token_id=None, **options)
    assert calls == []  # nothing was computed (and thrown away)

    output = model.generate(prompt, max_new_tokens=14, do_sample=False, eos_token_id=None, **options)
    assert output.shape == (2, 64)  # exactly the context: allowed


def test_generation_from_embeddings_counts_the_embedded_prompt(short_context_model):
    embeds = short_context_model.get_input_embeddings()(torch.randint(3, 128, (1, 50)))
    with pytest.raises(ValueError, match="50-token prompt needs 80 positions"):
        short_context_model.generate(inputs_embeds=embeds, max_new_tokens=30, do_sample=False, eos_token_id=None)
    output = short_context_model.generate(inputs_embeds=embeds, max_new_tokens=14, do_sample=False, eos_token_id=None)
    assert output.shape == (1, 14)


def test_default_length_is_clamped_to_the_context_and_dynamic_rope_may_extend(short_context_model):
    prompt = torch.randint(3, 128, (1, 50))
    # No max_new_tokens: transformers' default max_length is clamped to the context (not an error).
    assert short_context_model.generate(prompt, do_sample=False, eos_token_id=None).shape == (1, 64)
    torch.manual_seed(0)
    rope = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}
    extending = WrenForCausalLM(WrenConfig(**tiny_config_kwargs(max_position_embeddings=64, rope_parameters=rope)))
    assert extending.eval().generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=None).shape == (1, 80)
