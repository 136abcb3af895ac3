"""Test-only import shim: a stand-in `sgl_kernel` for the SGLang conformance venv (never the package).

On CPU, sglang 0.5.23 imports a few ops from `sgl_kernel` at module level (`if _is_cpu: from
sgl_kernel import ...`), but PyPI has no CPU kernel wheel. Every name
resolves to a function that raises NotImplementedError if called, except the one op the CPU memory
pool calls, written here in plain torch. Dense Qwen2 generation calls none of the others: a call would
fail loudly rather than compute something wrong.
"""

import torch


def assign_req_to_token_pool_cpu(req_pool_indices, req_to_token, start_offset, end_offset, out_cache_loc,
                                 *args, **kwargs):
    """req_to_token[req_pool_indices[i], start_offset[i]:end_offset[i]] = the i-th slice of out_cache_loc."""
    pos = 0
    for i in range(len(req_pool_indices)):
        a, b = int(start_offset[i]), int(end_offset[i])
        req_to_token[int(req_pool_indices[i]), a:b] = out_cache_loc[pos:pos + b - a].to(req_to_token.dtype)
        pos += b - a


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise NotImplementedError(f"sgl_kernel.{name} is a test stub (tests/sglang/shims): no CPU kernel "
                                  "wheel exists on PyPI")

    missing.__name__ = name
    return missing


__version__ = "0.0.0+stub"
_ = torch
