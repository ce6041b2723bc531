# Two entry points on a fresh machine: `make demo` (set up + generate end to end on the embedded
# model) and `make test` (set up + the test suite). Both create .venv on first use.
VENV := .venv/.charter-setup
DEMO := runs/demo

.PHONY: demo test setup
setup: $(VENV)
$(VENV): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

demo: $(VENV)
	.venv/bin/charter generate --limit 6 --rounds 2 --max-tokens 128 --out $(DEMO)
	.venv/bin/charter export $(DEMO) --format sft --out $(DEMO)/sft.jsonl
	.venv/bin/charter export $(DEMO) --format dpo --out $(DEMO)/dpo.jsonl

test: $(VENV)
	.venv/bin/python -m pytest -q
