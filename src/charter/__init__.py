"""Charter: a toolkit for Constitutional AI (Bai et al. 2022).

The public API, imported lazily (PEP 562): `import charter` loads no engine, prints nothing and
leaves os.environ alone; each name imports its module on first use.

    import charter
    with charter.load_backend("auto", "embedded") as llm:
        records = charter.critique_revise(llm, ["How do I pick a lock?"], rounds=2)
    rows = charter.export.sft_rows(records)
"""
from __future__ import annotations

import importlib as _importlib
import sys as _sys
from types import ModuleType as _ModuleType

__version__ = "0.1.0"

# name -> "module:attribute" ("module" alone: the module itself).
EXPORTS = {
    "load_backend": "charter.api:load_backend",
    "critique_revise": "charter.api:critique_revise",
    "answer": "charter.api:answer",
    "run_cost": "charter.pipeline.cost:run_cost",
    "generate": "charter.generate:generate",
    "GenerateConfig": "charter.generate:GenerateConfig",
    "Sampling": "charter.types:Sampling",
    "Completion": "charter.types:Completion",
    "Record": "charter.types:Record",
    "Round": "charter.types:Round",
    "Principle": "charter.types:Principle",
    "Constitution": "charter.types:Constitution",
    "PromptItem": "charter.types:PromptItem",
    "load_constitution": "charter.inputs.constitution:load_constitution",
    "load_prompts": "charter.inputs.prompts:load_prompts",
    "export": "charter.export",
    "ExportConfig": "charter.export:ExportConfig",
    "export_run": "charter.export:export_run",
    "clean_records": "charter.export.clean:clean_records",
    "LabelConfig": "charter.rlcai.labels:LabelConfig",
    "label": "charter.rlcai.labels:label",
    "SFTConfig": "charter.train.sft:SFTConfig",
    "train_sft": "charter.train.sft:train_sft",
    "DPOConfig": "charter.train.dpo:DPOConfig",
    "train_dpo": "charter.train.dpo:train_dpo",
    "PMConfig": "charter.train.pm:PMConfig",
    "train_pm": "charter.train.pm:train_pm",
    "RLConfig": "charter.train.rl:RLConfig",
    "train_rl": "charter.train.rl:train_rl",
    "EvalConfig": "charter.evaluate.suite:EvalConfig",
    "evaluate": "charter.evaluate.suite:evaluate",
    "EvalResult": "charter.evaluate.result:EvalResult",
    "read_eval": "charter.evaluate.result:read_eval",
    "LabelerEvalConfig": "charter.rlcai.labeler_eval:LabelerEvalConfig",
    "evaluate_labeler": "charter.rlcai.labeler_eval:evaluate_labeler",
    "AuditConfig": "charter.rlcai.audit:AuditConfig",
    "audit": "charter.rlcai.audit:audit",
    "ClassifierDataConfig": "charter.classifier.data:ClassifierDataConfig",
    "classifier_data": "charter.classifier.data:classifier_data",
    "ClassifierTrainConfig": "charter.classifier.train:ClassifierTrainConfig",
    "train_classifier": "charter.classifier.train:train_classifier",
    "ClassifierEvalConfig": "charter.classifier.evaluate:ClassifierEvalConfig",
    "evaluate_classifier": "charter.classifier.evaluate:evaluate_classifier",
    "read_classifier_eval": "charter.classifier.evaluate:read_classifier_eval",
    "load_guard": "charter.guard.model:load_guard",
    "Guard": "charter.guard.screen:Guard",
    "read_marks": "charter.runs.reviews:read_marks",
    "write_report": "charter.report.html:write_report",
    "CharterError": "charter.errors:CharterError",
    "ConfigError": "charter.errors:ConfigError",
    "InputError": "charter.errors:InputError",
    "BackendError": "charter.errors:BackendError",
}

__all__ = sorted(EXPORTS) + ["__version__"]


def __getattr__(name: str):
    target = EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'charter' has no attribute '{name}'")
    module_name, _, attr = target.partition(":")
    value = _importlib.import_module(module_name)
    if attr:
        value = getattr(value, attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(EXPORTS))


class _Package(_ModuleType):
    """`charter.generate` and `charter.evaluate` name functions, yet are also submodules: importing
    a submodule sets it on its parent package, which would hide the function. That one setattr
    is dropped; `from charter.generate import ...` still reaches the module (through sys.modules).
    (Imports here take private names: a submodule such as charter.types would replace `types`.)"""

    def __setattr__(self, name: str, value) -> None:
        target = EXPORTS.get(name, "")
        if isinstance(value, _ModuleType) and ":" in target and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
