"""``ipet predict`` as a Prefect flow, for deployments and the UI: ``flows/prediction.py``'s
``predict_file`` with its summary as the result and as a markdown artifact."""

from __future__ import annotations

from prefect import flow

from prompt_core.settings import Precision

from .console import refused
from .prediction import PREDICT_ERRORS, predict_file, summary_text


@flow(name="predict", log_prints=True)
def predict(model: str, input: str, output: str, registered_model: str | None = None,
            tracking_uri: str | None = None, batch_size: int = 1024, device: str = "auto",
            precision: Precision = "auto") -> dict:
    """``predict_file`` as a Prefect flow (deployments, the UI); the summary is its result. A user
    mistake fails the run with its message (and re-raises it to a caller), without a traceback."""
    from prefect.artifacts import create_markdown_artifact

    try:
        summary = predict_file(model, input, output, registered_model, tracking_uri, batch_size, device, precision)
    except PREDICT_ERRORS as err:
        return refused(err)
    print(summary_text(summary))
    create_markdown_artifact(f"# Predictions\n\n{summary_text(summary)}", key="predict-summary")
    return summary
