"""Fine-tuning, thin TRL wrappers: `sft` (SL-CAI), `dpo` (preference pairs), `pm` (preference model
on soft AI labels) and `rl` (RL-CAI: RLOO against the PM). `common` holds what they share.

Nothing heavy is imported here; torch / trl load when a trainer is built.
"""
