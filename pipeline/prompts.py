"""Rendering a problem into the policy's chat format, in token ids.

The user turn is `problem + "\\n" + instruction`; our messages carry no system turn unless one is
configured, and the tokenizer's own chat template renders them (docs/method.md §7 prompt row, Q7). That
template may add a system turn of its own: Qwen2.5-Math's inserts "Please reason step by step, and put
your final answer within \\boxed{}." when the messages have none, Llama-3.1-Instruct's always opens
with a system header (knowledge cut-off and date). Prefix-RFT and LUFFY apply the same templates the
same way, so the rendered prompts match theirs; tests/test_prompt_templates.py renders both published
templates.

Rollouts stop at any of: the tokenizer's eos, the eos ids of config.json and generation_config.json,
and the token the chat template closes an assistant turn with (Qwen2.5-Math-7B's tokenizer and
config.json name only `<|endoftext|>`, while its template ends a turn with `<|im_end|>`; Qwen's own
evaluation stops at both, as we do).
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


def _eos_ids(value: Any) -> set[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return {value}
    if isinstance(value, (list, tuple)):
        return {int(x) for x in value}
    return set()


def _generation_config_eos(tokenizer: Any) -> set[int]:
    """eos ids of generation_config.json next to the tokenizer files (a local checkpoint)."""
    import json
    from pathlib import Path

    path = Path(str(getattr(tokenizer, "name_or_path", "") or "")) / "generation_config.json"
    try:
        return _eos_ids(json.loads(path.read_text()).get("eos_token_id")) if path.is_file() else set()
    except (OSError, ValueError, AttributeError):
        return set()


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """Where a rollout ends: the tokenizer's eos, the eos ids of the model's config.json and
    generation_config.json (`model` is a transformers model or a bare config; without one,
    generation_config.json is read from the tokenizer's folder), and the chat template's end-of-turn
    token (the first token of `end_of_turn_ids` when it is a special token)."""
    ids = _eos_ids(tokenizer.eos_token_id)
    config = getattr(model, "config", model)
    ids |= _eos_ids(getattr(config, "eos_token_id", None)) if config is not None else set()
    gen = getattr(model, "generation_config", None)
    ids |= _eos_ids(getattr(gen, "eos_token_id", None)) if gen is not None else _generation_config_eos(tokenizer)
    turn = end_of_turn_ids(tokenizer)
    if turn and turn[0] in set(getattr(tokenizer, "all_special_ids", ()) or ()) | set(
            getattr(tokenizer, "added_tokens_decoder", {}) or {}):
        ids.add(int(turn[0]))
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
