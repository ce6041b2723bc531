"""Conversations through an engine: the CAI loop (cai), the scheduler every model-running job shares,
Ray scale-out, the job lifecycle (signals, progress) and the run's workload."""
