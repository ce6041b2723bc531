"""The run store and its pieces: run directories (store, runread), the lock, JSONL with fsynced appends and
torn-line handling, the id set, the one output guard (files) and the run-cost summary."""
