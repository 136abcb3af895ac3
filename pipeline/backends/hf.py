"""transformers rollout backend: a KV-cached sampling loop over the trainer's own module.

It shares the policy module with the update stage, so `sync_weights` has nothing to copy. For a chunk
of requests the distinct prompts are prefilled once. With SDPA attention their KV then stays once per
group and each row's cache holds only what follows its prompt (shared-prompt attention,
pipeline/backends/cascade.py); otherwise the prompt's cache is repeated for every request that shares it.
A hybrid request's forced prefix (the demonstration cut) is known in advance, so it is prefilled in
chunked forwards after the prompt (`prefill_chunk` positions each), not fed through the decode loop:
sampling starts at the first continuation token, from the same distribution. Finished rows are dropped
from the batch as they stop.

Sampling is inverse-CDF with one uniform per generated token drawn from the request's own seed, so a
request's sample does not depend on which other requests share its batch (up to floating point).
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.backends import Completion, GenerationRequest, SamplingParams
from pipeline.backends.cascade import NAME as CASCADE
from pipeline.backends.cascade import SharedPrompt
from pipeline.backends.kvcache import cache_keyword, leading_masked, preallocated_cache, spliceable
from pipeline.precision import autocast as precision_autocast


def sample_from_logits(logits: torch.Tensor, sampling: SamplingParams,
                       uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row by inverse CDF.

    logits [A, V] float32, uniforms [A] in [0, 1). Returns token ids [A] and log softmax(logits / T) of
    the drawn token [A] (the untruncated distribution the trainer scores). temperature 0 is greedy.
    """
    if sampling.temperature <= 0:
        logp = torch.log_softmax(logits, dim=-1)  # [A, V]
        tok = logp.argmax(dim=-1)  # [A]
        return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits / sampling.temperature, dim=-1)  # [A, V]
    if sampling.top_k > 0 or sampling.top_p < 1.0:
        sorted_logp, order = logp.sort(dim=-1, descending=True)  # [A, V]
        probs = sorted_logp.exp()
        keep = torch.ones_like(probs, dtype=torch.bool)
        if sampling.top_k > 0:
            keep[:, sampling.top_k:] = False
        if sampling.top_p < 1.0:
            mass_before = probs.cumsum(dim=-1) - probs  # [A, V]
            keep &= mass_before < sampling.top_p
        cdf = (probs * keep).cumsum(dim=-1)  # [A, V]
        j = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True).clamp_max(cdf.shape[1] - 1)
        tok = order.gather(-1, j).squeeze(-1)
    else:
        cdf = logp.exp().cumsum(dim=-1)  # [A, V]
        j = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True)
        tok = j.squeeze(-1).clamp_max(cdf.shape[1] - 1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: Any, *, pad_token_id: int, batch_size: int = 256, precision: str = "fp32",
                 prefill_chunk: int = 512, prefill_prefixes: bool = True, shared_prompt: bool = True):
        self.model = model
        self.shared_prompt = shared_prompt  # keep a group's prompt KV once (cascade attention) where possible
        self.prefill_chunk = prefill_chunk  # positions per prefill forward (prompts and prefixes)
        self.prefill_prefixes = prefill_prefixes  # False: force prefix tokens through the decode loop (benchmarks)
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size
        self.precision = precision

    def version(self) -> str:
        import transformers

        return f"transformers-{transformers.__version__}"

    def sync_weights(self, model: Any, checkpoint: str | None = None) -> None:
        self.model = model  # the module is shared with the trainer: nothing to copy

    def release(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def flush_cache(self) -> None:
        pass  # no cache outlives a generate call

    def shutdown(self) -> None:
        pass

    def _autocast(self):
        return precision_autocast(self.precision, self._device())

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        was_training = self.model.training
        self.model.eval()
        impl = self.model.config._attn_implementation
        # our attention function: cascade attention with a shared prompt, plain matrix products at a CPU decode
        # step, SDPA otherwise (pipeline/backends/cascade.py)
        if impl == "sdpa" and not getattr(self.model.config, "use_sliding_window", False):
            from pipeline.backends.cascade import register

            self.model.config._attn_implementation = register()
        try:
            out: list[Completion] = []
            for start in range(0, len(requests), self.batch_size):
                out += self._generate_chunk(requests[start:start + self.batch_size], sampling)
            return out
        finally:
            self.model.config._attn_implementation = impl
            self.model.train(was_training)

    def _forward(self, ids, mask, pos, cache, shared=None):
        extra = {} if shared is None else {"shared_prompt": shared.with_own(mask)}
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model  # peft
        extra[cache_keyword(type(base))] = cache  # the cache is filled in place
        with self._autocast():
            res = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                             **extra)
        return res.logits[:, -1].float(), cache

    def _prefill(self, ids, mask, pos, cache, past_mask=None, shared=None):
        """Forward `ids` [B, W] after what `cache` holds, in chunks of at most `prefill_chunk` positions.
        Returns the last position's logits [B, V], the mask over all positions and the cache."""
        logits = None
        full = mask if past_mask is None else torch.cat([past_mask, mask], dim=-1)
        done = full.shape[1] - ids.shape[1]
        for c0 in range(0, ids.shape[1], self.prefill_chunk):
            c1 = min(ids.shape[1], c0 + self.prefill_chunk)
            logits, cache = self._forward(ids[:, c0:c1], full[:, :done + c1], pos[:, c0:c1], cache, shared)
        return logits, full, cache

    def _prefill_prefixes(self, reqs, cache, logits, mask, next_pos, shared=None):
        """Feed each hybrid row's demonstration prefix after its (shared) prompt in chunked forwards,
        instead of token by token through the decode loop. The prefixes are left-padded to a common
        width W, so every hybrid row's last position is its last prefix token; pads are masked. When the
        cache supports it only hybrid rows are forwarded, and the other rows get W masked positions in
        front of their prompt; otherwise every row is forwarded, rows without a prefix fully masked.
        Under cascade attention (`shared`) the prefixes become the shared prompt's prefix part instead
        (pipeline/backends/cascade.py) and the rows' own caches stay empty. Returns the next-token logits
        [R, V], the attention mask, the next positions [R] and `shared`."""
        from transformers import DynamicCache

        dev = logits.device
        flen = torch.tensor([len(r.prefix_ids) for r in reqs], device=dev)  # [R]
        spliced = spliceable(cache)
        rows = (flen > 0).nonzero().squeeze(-1) if spliced else torch.arange(len(reqs), device=dev)  # [Hb]
        ids, pmask = _left_pad([reqs[i].prefix_ids for i in rows.tolist()], self.pad_token_id)  # [Hb, W]
        ids, pmask = ids.to(dev), pmask.to(dev)
        pos = next_pos[rows, None] + (pmask.cumsum(-1) - 1).clamp_min(0)  # [Hb, W]
        sub = cache
        if spliced:
            sub = DynamicCache(config=self.model.config)
            sub.layers = [layer.take_rows(rows, cache.get_seq_length() + ids.shape[1]) for layer in cache.layers]
        out, sub_mask, sub = self._prefill(ids, pmask, pos, sub, past_mask=mask[rows],
                                           shared=None if shared is None else shared.select(rows))
        if spliced and shared is not None and mask.shape[1] == 0:  # own caches empty: prefixes become their own part
            shared = shared.with_prefixes([layer.keys for layer in sub.layers], [layer.values for layer in sub.layers],
                                          pmask, rows, len(reqs))
        elif spliced:
            for layer, part in zip(cache.layers, sub.layers):
                layer.splice_rows(rows, part)
            mask = torch.cat([mask.new_zeros((mask.shape[0], ids.shape[1])), mask], dim=-1)
            mask[rows] = sub_mask
        else:
            mask = sub_mask
        has = flen[rows] > 0
        logits = logits.clone()
        logits[rows[has]] = out[has]
        return logits, mask, next_pos + flen, shared

    def _generate_chunk(self, reqs: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        from transformers import DynamicCache

        dev = self._device()
        n = len(reqs)
        prefill = self.prefill_prefixes and any(r.prefix_ids for r in reqs)
        # prefix tokens left for the decode loop to force (none when they are prefilled)
        flen = torch.tensor([0 if prefill else len(r.prefix_ids) for r in reqs], device=dev)  # [R]
        budget = torch.tensor([r.max_new_tokens for r in reqs], device=dev)  # [R]
        total = flen + budget  # tokens emitted by the loop, at most
        steps = int(total.max())
        width = max(len(r.prefix_ids) for r in reqs) if prefill else 0
        # prefill each distinct prompt once, then repeat its cache for every request that shares it
        distinct: dict[tuple[int, ...], int] = {}
        row_to_prompt = [distinct.setdefault(tuple(r.prompt_ids), len(distinct)) for r in reqs]
        ids, mask = _left_pad([list(p) for p in distinct], self.pad_token_id)
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = preallocated_cache(self.model.config, ids.shape[1] + width + steps)
        logits, mask, cache = self._prefill(ids, mask, pos, cache)
        select = torch.tensor(row_to_prompt, device=dev)
        logits, next_pos = logits[select], mask.sum(-1)[select]  # [R, V], [R]
        shared = None
        if (self.shared_prompt and self.model.config._attn_implementation == CASCADE and len(distinct) < n
                and spliceable(cache)):
            # the prompts' KV stays once per group; each row's cache holds what follows its prompt
            shared = SharedPrompt.build([layer.keys for layer in cache.layers], [layer.values for layer in cache.layers],
                                        mask.bool(), select)
            rows = DynamicCache(config=self.model.config)
            rows.layers = [layer.empty_like_rows(n, width + steps) for layer in cache.layers]
            cache, mask = rows, mask.new_zeros((n, 0))
        elif len(distinct) < n:  # (every row its own prompt: the cache is already in row order)
            cache.batch_select_indices(select)
            mask = mask[select]  # [R, P]
        if prefill:
            logits, mask, next_pos, shared = self._prefill_prefixes(reqs, cache, logits, mask, next_pos, shared)

        forced = torch.full((n, max(1, int(flen.max()))), self.pad_token_id, dtype=torch.long, device=dev)
        for i, r in enumerate(reqs):
            if r.prefix_ids and not prefill:
                forced[i, :len(r.prefix_ids)] = torch.tensor(r.prefix_ids, device=dev)
        uniforms = torch.zeros((n, int(budget.max())), dtype=torch.float32)
        for i, r in enumerate(reqs):
            g = torch.Generator().manual_seed(r.seed)
            uniforms[i, :r.max_new_tokens] = torch.rand(r.max_new_tokens, generator=g)
        uniforms = uniforms.to(dev)
        stop_ids = torch.tensor(sampling.stop_token_ids or [-1], device=dev)

        emitted = torch.full((n, steps), self.pad_token_id, dtype=torch.long, device=dev)
        logps = torch.zeros((n, steps), dtype=torch.float32, device=dev)
        length = torch.zeros(n, dtype=torch.long, device=dev)
        stopped = torch.zeros(n, dtype=torch.bool, device=dev)
        active = torch.arange(n, device=dev)  # original row of each batch row
        spliced = spliceable(cache)
        live = torch.ones(n, dtype=torch.bool, device=dev)  # [A]: finished rows stay until the next compaction
        for s in range(steps):
            is_forced = s < flen[active]  # [A]
            gen_index = (s - flen[active]).clamp_min(0)
            u = uniforms[active, gen_index.clamp_max(uniforms.shape[1] - 1)]
            if sampling.min_new_tokens > 0 and sampling.stop_token_ids:
                early = (~is_forced & (gen_index < sampling.min_new_tokens)).nonzero().squeeze(-1)  # rows
                logits[early[:, None], stop_ids[None, :]] = float("-inf")  # as transformers' min_new_tokens
            tok, lp = sample_from_logits(logits, sampling, u)
            tok = torch.where(is_forced, forced[active, min(s, forced.shape[1] - 1)], tok)
            rows = active[live]
            emitted[rows, s] = tok[live]
            logps[rows, s] = lp[live]
            length[rows] = s + 1
            stop = live & ~is_forced & torch.isin(tok, stop_ids)
            stopped[active] |= stop
            live &= ~(stop | (s + 1 >= total[active]))
            if not bool(live.any()):
                break
            dead = len(live) - int(live.sum())
            if dead and dead * 8 >= len(live):  # compact in batches: each compaction copies every kept row's cache
                keep = live.nonzero().squeeze(-1)
                mask = mask[keep]
                drop = leading_masked(mask) if spliced else 0
                if spliced:  # finished rows leave; so do positions no remaining row attends to (e.g. the
                    for layer in cache.layers:  # prefix width W in front of rows that have no prefix)
                        layer.compact(keep, drop)
                    mask = mask[:, drop:]
                else:
                    cache.batch_select_indices(keep)
                active, next_pos, tok, live = active[keep], next_pos[keep], tok[keep], live[keep]
                shared = None if shared is None else shared.select(keep)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)  # (a [R, 0] own mask too)
            logits, cache = self._forward(tok[:, None], mask, next_pos[:, None], cache, shared)
            next_pos = next_pos + 1

        results = []
        emitted, logps, length = emitted.cpu(), logps.cpu(), length.cpu()
        for i, r in enumerate(reqs):
            a, b = int(flen[i]), int(length[i])
            results.append(Completion(token_ids=emitted[i, a:b].tolist(), logprobs=logps[i, a:b].tolist(),
                                      finish_reason="stop" if bool(stopped[i]) else "length"))
        return results
