"""What a run reads: prompts, constitutions and few-shots, the templates the model sees, transcripts."""
