"""Evaluation: revision likelihoods, AI-judged pairwise Elo, evasiveness, revision curves.

Modules: elo (Bradley-Terry Elo + bootstrap), judge (order-randomised pairwise judging from option
probabilities), likelihood (preference for revisions), evasive (refusal detector), curves (score
vs revision number), revision_scores (PM score by revision: the paper's Fig. 5 and 7), suite (`charter eval` -> eval.json; the schema is in its docstring).
"""
