"""The registered iPET model as an MLflow pyfunc ("models from code": MLflow copies this file into
the model and runs it on load; ``prompt_core`` travels with it as code, the saved learner
directory as the ``model`` artifact). So, for anyone with torch and transformers installed::

    mlflow.pyfunc.load_model("models:/ipet-agnews@champion").predict(pandas.DataFrame({"text": [...]}))

returns one row per input row, on the input's index: ``label``, ``prob_<label>`` per class (pandas'
nullable ``Float64``), and ``error`` (set where every input field is empty: that row's label is None and
its probabilities ``pd.NA``, which ``mlflow models serve`` answers as JSON ``null``). A frame without a column the model
reads, or with a list or dict where text belongs, is refused with an ``MlflowException`` of
``INVALID_PARAMETER_VALUE``: ``mlflow models serve`` answers that with a 400 carrying its message (any
other exception becomes a generic message and a stack trace). ``params={"precision": "fp32"}``
computes in float32 (the default ``auto`` is bf16 on CUDA and on CPUs with AMX). Our own code loads
the same model with ``Predictor``.
"""

from __future__ import annotations

from typing import get_args

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from prompt_core.predictor import PROB_PREFIX, Predictor
from prompt_core.settings import Precision


class IpetModel(PythonModel):
    def load_context(self, context) -> None:
        # ``Predictor`` predicts one request at a time: ``mlflow models serve`` runs each in a thread of its own
        self.predictor = Predictor.load(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """One output row per input row, on the input's index, so assigning or joining the output
        to the input frame puts each prediction on its own row."""
        frame = pd.DataFrame(model_input)
        refuse_nested(frame)
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        precision = (params or {}).get("precision", "auto")
        if precision not in get_args(Precision):
            raise MlflowException.invalid_parameter_value(
                f"params precision: {precision!r} is not one of {', '.join(get_args(Precision))}")
        result = self.predictor.predict(rows, precision=precision)
        # a row with no text has none of these: object columns keep None (pandas' own string columns
        # would make it NaN) and the probabilities are nullable floats (NA, not NaN), which a served
        # response writes as JSON null; NaN it writes as ``NaN``, no JSON (a strict client refused the
        # whole answer)
        out = pd.DataFrame({"label": pd.Series(result.labels, index=frame.index, dtype=object)})
        for i, label in enumerate(self.predictor.labels):
            out[PROB_PREFIX + label] = pd.Series(result.probabilities[:, i], index=frame.index).astype("Float64")
        out["error"] = pd.Series(result.errors, index=frame.index, dtype=object)
        return out


def refuse_nested(frame: pd.DataFrame) -> None:
    """A list or dict where text belongs is refused, as ``ipet predict`` refuses it: read as text it
    would be predicted as its printed form. MLflow's string schema lets such values through, and makes
    a dict of lists (``{"text": [...]}``) one row whose text is the whole list."""
    for column in frame.columns:
        nested = frame[column].map(lambda value: isinstance(value, (list, tuple, dict, set, np.ndarray))).to_numpy()
        if nested.any():
            at = int(nested.argmax())
            raise MlflowException.invalid_parameter_value(
                f"column {column!r} holds a {type(frame[column].iloc[at]).__name__} in row "
                f"{frame.index.tolist()[at]!r}, not text (one text per row)")


mlflow.models.set_model(IpetModel())
