"""Fine-tuning on Charter's data: `sft` (SL-CAI) and `dpo` (preference pairs), thin TRL wrappers.

Nothing heavy is imported here; torch / trl load when a trainer is built.
"""
