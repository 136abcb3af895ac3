"""Rendering a problem into the policy's chat format, in token ids.

The user turn is `problem + "\\n" + instruction`, with no system turn unless one is configured
(docs/method.md §7 prompt row, Q7: rendered explicitly so a tokenizer's default system prompt cannot slip in
unnoticed; a test snapshots the rendered prompt of the embedded tokenizer).
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import UserError


def build_messages(problem: str, instruction: str | None, system_prompt: str | None = None) -> list[dict[str, str]]:
    user = problem if not instruction else f"{problem}\n{instruction}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": user}]


def render_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Chat-template the messages with the generation prompt and tokenize without extra specials."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"tokenizer of {getattr(tokenizer, 'name_or_path', '?')} has no chat template; "
                        "use a chat/instruct tokenizer or add a `chat_template` to its tokenizer_config.json")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def stop_token_ids(tokenizer: Any, model_config: Any = None) -> list[int]:
    """End-of-turn ids: the tokenizer's eos plus the model's generation eos ids."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model_config, "eos_token_id", None) if model_config is not None else None
    if isinstance(gen, int):
        ids.add(gen)
    elif isinstance(gen, (list, tuple)):
        ids.update(int(x) for x in gen)
    return sorted(ids)


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """What ends a whole demonstration (SFT rows, LUFFY's off-policy member): the tokens the chat
    template puts right after an assistant message, trailing whitespace dropped (ChatML `<|im_end|>`,
    Llama 3.1 `<|eot_id|>`), then the tokenizer's eos unless that already ends them, so a demonstration
    stops where a rollout of the policy stops (ReLIFT and LUFFY append the eos to their targets)."""
    marker = "\u2063end-of-turn-probe\u2063"
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}]
    text = tokenizer.apply_chat_template(messages, tokenize=False) if getattr(tokenizer, "chat_template", None) else ""
    tail = text.split(marker, 1)[1].rstrip() if marker in text else ""
    ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else []
    eos = tokenizer.eos_token_id
    return ids + [int(eos)] if eos is not None and (not ids or ids[-1] != eos) else ids
