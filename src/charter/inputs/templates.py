"""Pure builders of what the model sees at each step, in chat and text (transcript) formats.

Chat requests are message lists (the backend applies the chat template); text requests are the
paper's raw transcripts. Few-shot demonstrations always come first, so the shared prefix of every
critique/revision call is identical and engines can cache it.
"""
from __future__ import annotations

from typing import Sequence

from charter.inputs.transcripts import render as transcript, turn
from charter.types import FewShot, FewShotRound, Message, Principle

TEXT_STOPS = ("\n\nHuman:", "\n\nAssistant:", "\n\nCritiqueRequest:", "\n\nCritique:",
              "\n\nRevisionRequest:", "\n\nRevision:", "\n\n-----")
EXAMPLE_SEPARATOR = "\n\n-----"


def round_messages(rounds: Sequence[FewShotRound], critique: bool = True) -> list[Message]:
    """Critique/revision rounds as turns: a demonstration's, or the running conversation's earlier ones."""
    msgs: list[Message] = []
    for r in rounds:
        if critique:
            msgs += [{"role": "user", "content": r.critique_request}, {"role": "assistant", "content": r.critique}]
        msgs += [{"role": "user", "content": r.revision_request}, {"role": "assistant", "content": r.revision}]
    return msgs


def few_shot_messages(shots: Sequence[FewShot], critique: bool = True) -> list[Message]:
    msgs: list[Message] = []
    for shot in shots:
        msgs += list(shot.conversation) + round_messages(shot.rounds, critique)
    return msgs


def chat_initial(prompt: Sequence[Message]) -> list[Message]:
    return list(prompt)


def chat_critique(shots: Sequence[FewShot], prompt: Sequence[Message], answer: str, p: Principle,
                  past: Sequence[FewShotRound] = ()) -> list[Message]:
    """Few-shots, the prompt, the answer and any earlier rounds, then this round's critique request."""
    return few_shot_messages(shots) + list(prompt) + [{"role": "assistant", "content": answer}] + round_messages(past) + [
        {"role": "user", "content": p.critique}]


def chat_revision(shots: Sequence[FewShot], prompt: Sequence[Message], answer: str, p: Principle,
                  critique: str | None, past: Sequence[FewShotRound] = ()) -> list[Message]:
    """With a critique: continue the critique conversation. Without (ablation): revise directly."""
    if critique is None:
        return few_shot_messages(shots, critique=False) + list(prompt) + [
            {"role": "assistant", "content": answer}] + round_messages(past, critique=False) + [
            {"role": "user", "content": p.revision}]
    return chat_critique(shots, prompt, answer, p, past) + [
        {"role": "assistant", "content": critique}, {"role": "user", "content": p.revision}]


# ---- text (transcript) format -----------------------------------------------------------------


def round_text(rounds: Sequence[FewShotRound], critique: bool = True) -> str:
    text = ""
    for r in rounds:
        if critique:
            text += turn("CritiqueRequest", r.critique_request) + turn("Critique", r.critique)
        text += turn("RevisionRequest", r.revision_request) + turn("Revision", r.revision)
    return text


def few_shot_text(shots: Sequence[FewShot], critique: bool = True) -> str:
    return "".join(transcript(s.conversation) + round_text(s.rounds, critique) + EXAMPLE_SEPARATOR for s in shots)


def text_initial(prompt: Sequence[Message]) -> str:
    return transcript(prompt) + "\n\nAssistant:"


def text_critique(shots: Sequence[FewShot], prompt: Sequence[Message], answer: str, p: Principle,
                  past: Sequence[FewShotRound] = ()) -> str:
    return (few_shot_text(shots) + transcript(prompt) + f"\n\nAssistant: {answer}" + round_text(past)
            + f"\n\nCritiqueRequest: {p.critique}\n\nCritique:")


def text_revision(shots: Sequence[FewShot], prompt: Sequence[Message], answer: str, p: Principle,
                  critique: str | None, past: Sequence[FewShotRound] = ()) -> str:
    if critique is None:
        return (few_shot_text(shots, critique=False) + transcript(prompt) + f"\n\nAssistant: {answer}"
                + round_text(past, critique=False) + f"\n\nRevisionRequest: {p.revision}\n\nRevision:")
    return text_critique(shots, prompt, answer, p, past) + f" {critique}\n\nRevisionRequest: {p.revision}\n\nRevision:"
