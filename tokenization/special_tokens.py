"""The special-token rules that generation, evaluation and training share: where a reply stops, what pads a batch.

A chat reply ends with the token its chat template writes right after an assistant message: `<|im_end|>` in
Wren's ChatML template (`tokenization_wren.DEFAULT_CHAT_TEMPLATE`, `IM_END_TOKEN`), `<|eot_id|>` in Llama 3's.
It is found by rendering the tokenizer's own template, so converted tokenizers get theirs too.
"""

import logging

logger = logging.getLogger(__name__)

# Content of a probe assistant message, located in the rendered chat template to find what follows it.
_PROBE_REPLY = "wrenlm stop-token probe"


def token_id_list(ids) -> list[int]:
    """An `eos_token_id`-style field (None, one id or a list of ids) as a list."""
    return [] if ids is None else [ids] if isinstance(ids, int) else list(ids)


def turn_end_token_ids(tokenizer) -> list[int]:
    """[the special token the chat template writes right after an assistant message], or [] when there is none."""
    import jinja2

    if not getattr(tokenizer, "chat_template", None):
        return []
    messages = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": _PROBE_REPLY}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except (jinja2.TemplateError, ValueError) as error:
        logger.warning(f"Could not render the chat template to find its end-of-turn token ({error}).")
        return []
    after_reply = text[text.rindex(_PROBE_REPLY) + len(_PROBE_REPLY) :]
    # Control tokens such as <|im_end|> are special added tokens without being bos/eos/pad.
    special_ids = set(tokenizer.all_special_ids)
    special_ids.update(index for index, token in tokenizer.added_tokens_decoder.items() if token.special)
    ids = tokenizer(after_reply, add_special_tokens=False)["input_ids"]
    return [next(token for token in ids if token in special_ids)] if special_ids.intersection(ids) else []


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Where generation stops: the generation config's eos id(s), the tokenizer's eos, the chat turn end; each once."""
    ids = token_id_list(generation_config.eos_token_id) if generation_config is not None else []
    for candidate in [tokenizer.eos_token_id, *turn_end_token_ids(tokenizer)]:
        if candidate is not None and candidate not in ids:
            ids.append(candidate)
    return ids


def add_chat_stop_tokens(generation_config, tokenizer) -> None:
    """Make `generate` stop at the end of a chat turn as well as at the generation config's eos token(s)."""
    eos = token_id_list(generation_config.eos_token_id)
    stops = eos + [token for token in turn_end_token_ids(tokenizer) if token not in eos]
    if stops:
        generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops


def pad_token_id(tokenizer) -> int:
    """The id that pads batches: the tokenizer's pad token, else its eos token.

    Padding is masked out of attention and labels, so any id would do for the model; the eos fallback is a special
    token that decoding with `skip_special_tokens=True` drops, so padding after a finished reply spells nothing.
    """
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise ValueError("The tokenizer has neither a pad nor an eos token; set `tokenizer.pad_token` first.")


__all__ = ["add_chat_stop_tokens", "pad_token_id", "stop_token_ids", "token_id_list", "turn_end_token_ids"]
