"""The PET method as plain Python: patterns, verbalizers, learners, training, backbone adaptation,
labeling, ensembling.

Nothing here imports Prefect or MLflow, so the method can be used and tested on its own. Names are
imported when first used (PEP 562): reading a config (patterns, verbalizers, settings) does not
import torch and transformers, which take seconds.
"""

from importlib import import_module

_WHERE = {
    ".adaptation": ["adapt"],
    ".backbone": ["load_masked_lm"],
    ".checkpoints": ["Checkpoints"],
    ".device": ["computed_on", "select_device"],
    ".ensembling": ["accuracy", "ensemble", "softmax"],
    ".errors": ["BackboneError", "PredictorError"],
    ".label": ["predict_all", "predict_logits"],
    ".learners": ["ClassifierLearner", "ClozeLearner", "KINDS", "Learner", "LearnerSpec", "SimilarityLearner",
                  "build_learner", "learner_class", "load_learner", "load_learners", "save_spec"],
    ".pattern": ["Pattern", "PatternError", "Template"],
    ".predictor": ["Predictor", "save_ensemble"],
    ".pvp": ["PVP"],
    ".settings": ["AdaptConfig", "IpetConfig", "LabelingConfig", "PeftSettings", "TrainConfig"],
    ".training": ["TrainResult", "train"],
    ".verbalizer": ["Verbalizer", "VerbalizerError"],
}
_MODULE = {name: module for module, names in _WHERE.items() for name in names}
__all__ = sorted(_MODULE)


def __getattr__(name: str):
    if name not in _MODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_MODULE[name], __name__), name)
    globals()[name] = value  # once found, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return __all__
