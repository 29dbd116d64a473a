"""The PET method as plain Python: patterns, verbalizers, learners, training, backbone adaptation,
labeling, ensembling.

Nothing here imports Prefect or MLflow, so the method can be used and tested on its own.
"""

from .adapt import AdaptConfig, adapt
from .backbone import BackboneError, load_masked_lm
from .device import select_device
from .ensemble import accuracy, ensemble, softmax
from .label import predict_all, predict_logits
from .learners import (ClassifierLearner, ClozeLearner, Learner, LearnerSpec, build_learner, load_learner,
                       save_spec)
from .pattern import Pattern, PatternError, Template
from .predictor import Predictor, PredictorError, save_ensemble
from .pvp import PVP
from .train import TrainConfig, TrainResult, train
from .verbalizer import Verbalizer, VerbalizerError

__all__ = [
    "AdaptConfig", "BackboneError", "ClassifierLearner", "ClozeLearner", "Learner", "LearnerSpec", "PVP", "Pattern",
    "PatternError", "Predictor", "PredictorError", "Template", "TrainConfig", "TrainResult", "Verbalizer",
    "VerbalizerError", "accuracy", "adapt",
    "build_learner", "ensemble", "load_learner", "load_masked_lm", "predict_all", "predict_logits",
    "save_ensemble", "save_spec", "select_device", "softmax", "train",
]
