"""Constitutional Classifiers (Sharma et al. 2025, arXiv 2501.18837): a constitution of restricted and
permitted content categories (spec), synthetic labelled examples written by a model for each
(data, data_steps), and the classifiers trained on them that guard a model."""
