"""The method's errors that a caller catches before it computes anything, defined apart from the
modules that raise them (which import torch and transformers, seconds): ``flows/prediction.py`` names
them in what ``ipet predict`` and its Prefect flow refuse, and a flow module is imported again, torch
or not, to cancel a deployment's run."""


class BackboneError(ValueError):
    """A model path or name that cannot serve as a masked-LM backbone."""


class PredictorError(ValueError):
    """A directory that is not a saved final model, or members that do not agree on their labels."""
