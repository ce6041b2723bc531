"""RL-CAI data (the paper's §4): AI feedback labels and how good a labeler is.

Modules: data (feedback principles and few-shot loaders), questions (the one feedback question),
labels (`charter label`: soft AI labels), labeler_eval (`charter eval-labeler`: accuracy and
calibration of a feedback model or a PM). The trainers (PM, RL) live in charter.train and the PM
scorer in charter.scorer. Nothing heavy is imported here.
"""
