#!/usr/bin/env bash
# Build (or reuse) the SGLang conformance venv: the only way the real sgl.Engine runs on a CPU
# (docs/sglang.md, conformance tier). Not the project's [sglang] extra: that one is for GPU machines.
#   bash tests/sglang/install.sh            # prints the venv path on its last line
# Recipe: torch 2.13.0 CPU; sglang==0.5.23 with --no-deps; the dependency set in requirements.txt under
# constraints.txt; prefix-rft editable; then a .pth file that puts tests/sglang/shims on sys.path and
# installs the stub torchvision finder (reaching the engine's spawned processes too). ~2.5 GB.
# The venv (default ./.venv-sglang, gitignored; override with SGLANG_VENV) is reused as is while this
# script, requirements.txt and constraints.txt are unchanged; when they change, the same pip steps run
# again inside the existing venv (pip skips what is already satisfied). SGLANG_REBUILD=1 starts afresh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${SGLANG_VENV:-$root/.venv-sglang}"
SGLANG_VERSION=0.5.23
stamp_want="$(cat "$here/install.sh" "$here/requirements.txt" "$here/constraints.txt" | sha256sum | cut -c1-16)"
if [ -f "$venv/.prefix-rft-sglang-stamp" ] && [ "$(cat "$venv/.prefix-rft-sglang-stamp")" = "$stamp_want" ]; then
  echo "sglang tier: reusing $venv" >&2
  echo "$venv"
  exit 0
fi
t0=$(date +%s)
if [ "${SGLANG_REBUILD:-0}" = 1 ] || [ ! -x "$venv/bin/python" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
# torch 2.13.0 CPU: from a local wheel/find-links when there is one, else the PyTorch CPU index
if ! "$py" -m pip install -q "torch==2.13.0+cpu" 2>/dev/null; then
  "$py" -m pip install -q "torch==2.13.0+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
fi
"$py" -m pip install -q --no-deps "sglang==${SGLANG_VERSION}"
"$py" -m pip install -q -c "$here/constraints.txt" -r "$here/requirements.txt"
"$py" -m pip install -q -c "$here/constraints.txt" -e "$root"
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\nimport prefix_rft_torchvision_stub\n' "$here/shims" > "$site/prefix_rft_sglang_shims.pth"
"$py" - <<'PY'
import torch, sglang, transformers
print(f"sglang tier: torch {torch.__version__}, sglang {sglang.__version__}, transformers {transformers.__version__}")
PY
echo "$stamp_want" > "$venv/.prefix-rft-sglang-stamp"
echo "sglang tier: venv built in $(( $(date +%s) - t0 )) s, $(du -sh "$venv" | cut -f1)" >&2
echo "$venv"
