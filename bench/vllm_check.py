"""A Wren checkpoint served by vLLM's Transformers backend, its greedy answers checked against transformers.

NOT RUN YET: it needs a CUDA GPU and vLLM (`pip install vllm`, which brings its own torch build), and the
session that wrote it had neither. It is written for vLLM's offline `LLM` API with `model_impl="transformers"`
(vLLM runs the checkpoint's own modeling code, loaded with `trust_remote_code=True`, through its Transformers
backend, which Wren qualifies for with `_supports_attention_backend` and the attention-interface kwargs).

For each chat prompt it generates greedily with vLLM and with transformers (`generate`, same dtype, same GPU)
and prints both answers, whether the token ids agree, and where they first differ. Exit status 0 when every
answer agrees, 1 otherwise. Half-precision kernels may break a near-tie differently; run with
`--dtype float32` to tell kernel rounding from a real difference.

    wren import smollm2                                     # runs/smollm2-135m-instruct (dense)
    python -m bench.vllm_check --model runs/smollm2-135m-instruct --dtype bfloat16
    python -m bench.vllm_check --model runs/my-moe-wren     # a MoE Wren: untested in vLLM so far
"""

import argparse
import sys

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
]


def first_difference(expected: list[int], actual: list[int]) -> int | None:
    for index, (left, right) in enumerate(zip(expected, actual, strict=False)):
        if left != right:
            return index
    return None if len(expected) == len(actual) else min(len(expected), len(actual))


def transformers_answers(model_path: str, prompts: list[list[int]], dtype: str, new_tokens: int) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM

    import wrenlm  # noqa: F401  (registers Wren with the Auto classes)

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to("cuda").eval()
    answers = []
    with torch.no_grad():
        for prompt in prompts:
            output = model.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=new_tokens, do_sample=False)
            answers.append(output[0, len(prompt) :].tolist())
    del model
    torch.cuda.empty_cache()
    return answers


def vllm_answers(model_path: str, prompts: list[list[int]], dtype: str, new_tokens: int) -> list[list[int]]:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=model_path,
        model_impl="transformers",
        trust_remote_code=True,
        dtype=dtype,
        max_model_len=2048,
        gpu_memory_utilization=0.5,
        seed=0,
    )
    backend = llm.apply_model(lambda model: type(model).__name__)
    print(f"vLLM model class: {backend}")  # TransformersForCausalLM when the Transformers backend runs it
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=prompt) for prompt in prompts], params)
    return [list(output.outputs[0].token_ids) for output in outputs]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/smollm2-135m-instruct", help="Wren checkpoint folder")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    parser.add_argument("--new-tokens", type=int, default=48)
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    prompts = [tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"] for chat in CHATS]
    # vLLM takes the GPU memory it is allowed at start; transformers runs first and frees its copy.
    expected = transformers_answers(args.model, prompts, args.dtype, args.new_tokens)
    actual = vllm_answers(args.model, prompts, args.dtype, args.new_tokens)
    agree = 0
    for chat, wanted, got in zip(CHATS, expected, actual, strict=True):
        # transformers keeps the stop token in the answer; vLLM leaves it out by default.
        wanted = wanted[: len(got)] if len(wanted) == len(got) + 1 else wanted
        difference = first_difference(wanted, got)
        agree += difference is None
        print(f"\n{chat[-1]['content']!r}: {'same tokens' if difference is None else f'differ at token {difference}'}")
        print(f"  transformers: {tokenizer.decode(wanted)!r}")
        print(f"  vLLM:         {tokenizer.decode(got)!r}")
    print(f"\n{agree}/{len(CHATS)} answers identical ({args.dtype}, {args.new_tokens} new tokens)")
    return 0 if agree == len(CHATS) else 1


if __name__ == "__main__":
    sys.exit(main())
