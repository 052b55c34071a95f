"""Streaming generation for the demo: `generate` runs in a thread and feeds a `TextIteratorStreamer`.

Stopping is cooperative: every stream owns an Event that a `StoppingCriteria` checks after each token. Closing the
stream (Gradio closes it on Stop, on a closed tab, and when the reply is complete) sets the Event and waits for the
thread, so no generation outlives the request that started it.
"""

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from ..tokenization.special_tokens import pad_token_id, stop_token_ids

GENERATION_THREAD_NAME = "wren-generate"


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.7  # 0: greedy decoding
    top_p: float = 0.95
    top_k: int = 50  # 0: no top-k filter
    max_new_tokens: int = 128

    def generate_kwargs(self) -> dict:
        if self.temperature <= 0:
            return {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
        }


class StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def context_length(model) -> int:
    return int(model.config.max_position_embeddings)


def fit_to_context(ids: list[int], context: int, max_new_tokens: int) -> tuple[list[int], int, str | None]:
    """Keep the newest tokens that leave room for `max_new_tokens`: (ids, max_new_tokens, notice or None).

    The newest text matters most in a chat, so the prompt is cut from the left. `max_new_tokens` shrinks to leave
    at least one prompt token when it alone would fill the context.
    """
    max_new_tokens = max(1, min(max_new_tokens, context - 1))
    budget = context - max_new_tokens
    if len(ids) <= budget:
        return ids, max_new_tokens, None
    dropped = len(ids) - budget
    notice = (
        f"The prompt has {len(ids)} tokens, more than the {budget} that fit in the model's {context}-token context "
        f"with {max_new_tokens} new tokens: the oldest {dropped} tokens were left out."
    )
    return ids[dropped:], max_new_tokens, notice


def stream_generate(model, tokenizer, ids: list[int], settings: SamplingSettings) -> Iterator[str]:
    """Yield the reply decoded so far (cumulative text) as tokens arrive; closing the iterator stops generation."""
    stop = threading.Event()
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    input_ids = torch.tensor([ids], device=model.device)
    eos = stop_token_ids(tokenizer, model.generation_config)
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        streamer=streamer,
        stopping_criteria=StoppingCriteriaList([StopOnEvent(stop)]),
        eos_token_id=eos,
        pad_token_id=pad_token_id(tokenizer),
        **settings.generate_kwargs(),
    )
    failure: list[BaseException] = []

    def generate() -> None:
        try:
            with torch.no_grad():
                model.generate(**kwargs)
        except BaseException as error:  # reported by the consumer, which would otherwise wait forever
            failure.append(error)
            streamer.end()

    thread = threading.Thread(target=generate, name=GENERATION_THREAD_NAME, daemon=True)
    thread.start()
    text = ""
    try:
        for piece in streamer:
            if piece:
                text += piece
                yield text
        if failure:
            raise failure[0]
    finally:
        stop.set()
        thread.join()
