"""Evaluation: revision likelihoods, AI-judged pairwise Elo, evasiveness, revision curves.

Modules: elo (Bradley-Terry Elo + bootstrap), judge (order-randomised pairwise judging from option
probabilities), likelihood (preference for revisions), evasive (refusal detector), refusal
(over-refusal), curves (score vs revision number), revision_scores (PM score by revision: the
paper's Fig. 5 and 7), tasks (the work as scheduler tasks), stages (`eval`'s two stages), parts
(finished work saved: resume), result (the typed result, its schema and its one reader), suite
(`charter eval` -> eval.json).
"""
