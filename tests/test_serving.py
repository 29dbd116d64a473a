"""The registered model served outside ``ipet``, as an ML engineer serves an MLflow 3 model: loaded with
``mlflow.pyfunc.load_model`` in a fresh process, and behind ``mlflow models serve`` (slow). Real MLflow
(SQLite store), a tiny two-field classifier registered as ``register_final_model`` registers (``stage`` + ``log_staged``); the answers are compared
with ``ipet predict``'s on the same rows."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.models import get_model_info
from mlflow.tracking import MlflowClient

from flows.predict import predict_file
from prompt_core import PVP, LearnerSpec, build_learner
from prompt_core.predictor import save_ensemble
from prompt_core.settings import PeftSettings, TrainConfig
from prompt_core.training import train
from tasks.registry import CHAMPION, log_staged, stage
from tasks.tracking import experiment_id
from tiny import save_classifier, save_tiny

NAME = "ipet-served"
URI = f"models:/{NAME}@{CHAMPION}"
BIN = Path(sys.executable).parent  # the environment's scripts: mlflow, uvicorn
ROWS = [{"title": "story one", "text": "great film"}, {"title": "story two", "text": "awful plot"},
        {"title": "news", "text": "the market was fine"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    """A store whose 'ipet-served' champion reads two fields (``{title} : {text}``), and a CSV of ``ROWS``."""
    root = tmp_path_factory.mktemp("served")
    model = save_classifier(root / "model", save_tiny("bert", root / "backbone"), template="{title} : {text}")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    version = log_staged(client, client.create_run(experiment_id(uri, "served")).info.run_id,
                         stage(str(model), root / "staged"), NAME, {})
    client.set_registered_model_alias(NAME, CHAMPION, version)
    pd.DataFrame(ROWS).to_csv(root / "rows.csv", index=False)
    return {"uri": uri, "root": root, "csv": root / "rows.csv"}


def user_env(tracking_uri: str | None) -> dict[str, str]:
    """A user's shell: this environment activated (its ``bin`` first on ``PATH``, where ``mlflow models
    serve`` finds ``uvicorn``), none of our code importable, MLflow's store ``tracking_uri`` if given."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env | ({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {})


def fresh_process(served: dict, body: str) -> dict:
    """Run ``body`` in a new Python process that has loaded the champion as ``model`` (no code of ours
    imported); what it prints as JSON."""
    script = textwrap.dedent("""
        import io, json, sys
        import mlflow, numpy as np, pandas as pd
        from mlflow.pyfunc.scoring_server import predictions_to_json
        mlflow.set_tracking_uri(sys.argv[1])
        model = mlflow.pyfunc.load_model(sys.argv[2])
        def outcome(call):
            try:
                out = call()
            except Exception as err:
                return {"raised": type(err).__name__, "code": getattr(err, "error_code", None), "message": str(err)}
            served = io.StringIO()  # the body ``mlflow models serve`` answers with
            predictions_to_json(out, served)
            return {"columns": list(out.columns), "dtypes": [str(t) for t in out.dtypes],
                    "rows": json.loads(out.to_json(orient="records")), "as_records": out.to_dict("records"),
                    "served": served.getvalue()}
        """) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script, served["uri"], URI], capture_output=True, text=True,
                          env=user_env(None), cwd=served["root"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def outcomes(served) -> dict:
    """Every call a user makes of the champion loaded in a fresh process, in one process."""
    return fresh_process(served, f"""
        rows = {ROWS!r}
        frame = pd.DataFrame(rows)
        print(json.dumps({{
            "frame": outcome(lambda: model.predict(frame)),
            "records": outcome(lambda: model.predict(rows)),
            "extra": outcome(lambda: model.predict(frame.assign(id=[7, 8, 9], score=1.5))),
            "missing": outcome(lambda: model.predict(frame[["text"]])),
            "empty": outcome(lambda: model.predict(frame.iloc[:0])),
            "nulls": outcome(lambda: model.predict(pd.DataFrame({{"title": ["story", None, np.nan],
                                                                  "text": [None, None, "great"]}}))),
            "all-nan-column": outcome(lambda: model.predict(frame.assign(title=np.nan))),
            "ints": outcome(lambda: model.predict(frame.assign(title=[1, 2, 3]))),
            "nested": outcome(lambda: model.predict(frame.assign(text=["a", ["b"], "c"]))),
            "precision": outcome(lambda: model.predict(frame, params={{"precision": "fp16"}})),
        }}, default=str))
        """)


def test_a_fresh_process_predicts_as_ipet_predict(served, outcomes, tmp_path):
    """A frame and a list of dicts give the same answers, and those are ``ipet predict``'s on the same rows;
    columns a frame has beyond the model's fields are ignored."""
    summary = predict_file(URI, str(served["csv"]), str(tmp_path / "p.parquet"), tracking_uri=served["uri"])
    ours = pq.read_table(tmp_path / "p.parquet").to_pandas()
    frame = outcomes["frame"]
    assert frame["columns"] == ["label", "prob_neg", "prob_pos", "error"] and summary["errors"] == 0
    assert [r["label"] for r in frame["rows"]] == list(ours["label"])
    assert np.allclose([[r["prob_neg"], r["prob_pos"]] for r in frame["rows"]], ours[["prob_neg", "prob_pos"]])
    assert outcomes["records"]["rows"] == outcomes["extra"]["rows"] == frame["rows"]


def test_a_fresh_process_refuses_what_is_not_the_models_input(outcomes):
    """Each bad input is an MlflowException with INVALID_PARAMETER_VALUE (what ``mlflow models serve`` turns
    into a 400 carrying the message) naming the field; an empty frame gives an empty answer."""
    for case, says in [("missing", "missing inputs ['title']"), ("ints", "column title"),
                       ("all-nan-column", "column title"),
                       ("nested", "column 'text' holds a list in row 1, not text"),
                       ("precision", "precision: 'fp16' is not one of auto, bf16, fp32")]:
        got = outcomes[case]
        assert (got.get("raised"), got.get("code")) == ("MlflowException", "INVALID_PARAMETER_VALUE"), (case, got)
        assert says in got["message"], (case, got["message"])
    assert outcomes["empty"]["rows"] == [] and outcomes["empty"]["columns"] == outcomes["frame"]["columns"]


def test_a_row_without_text_is_null_not_nan(outcomes):
    """A row with no text in any field: no label, no probabilities and the reason, as None and ``pd.NA``
    (JSON null) rather than NaN, which a served response wrote as ``NaN``, no JSON: a strict parser
    (JavaScript's ``JSON.parse``) refused the whole answer. A row with one of its fields empty is predicted."""
    nulls = outcomes["nulls"]
    assert nulls["dtypes"] == ["object", "Float64", "Float64", "object"]
    served = strict_json(nulls["served"])["predictions"]
    for rows in (nulls["as_records"], served):
        first, second, third = rows
        assert first["label"] in ("neg", "pos") and first["error"] is None
        assert second["label"] is None and second["error"].startswith("empty text in every input field")
        assert second["prob_neg"] is None and second["prob_pos"] is None, second
        assert third["label"] in ("neg", "pos") and third["error"] is None
        for row in (first, third):
            assert isinstance(row["prob_neg"], float) and abs(row["prob_neg"] + row["prob_pos"] - 1) < 1e-6, row


def strict_json(text: str):
    """``text`` read as a strict JSON parser reads it: ``NaN`` and ``Infinity`` are no JSON."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_the_logged_model_describes_its_input_and_output(served):
    """The signature: each field a required string, the output's columns (``label`` and the probabilities
    null where ``error`` says why); an input example of the model's fields, saved as a request ``mlflow models serve`` takes."""
    with tracking(served["uri"]):
        info = get_model_info(URI)
        model_dir = Path(mlflow.artifacts.download_artifacts(URI, dst_path=str(served["root"] / "downloaded")))
    assert info.signature.inputs.to_dict() == [{"type": "string", "name": "title", "required": True},
                                               {"type": "string", "name": "text", "required": True}]
    assert [(c["name"], c["type"], c["required"]) for c in info.signature.outputs.to_dict()] == [
        ("label", "string", False), ("prob_neg", "double", False), ("prob_pos", "double", False),
        ("error", "string", False)]
    assert info.saved_input_example_info is not None
    request = json.loads((model_dir / "serving_input_example.json").read_text())
    assert request["dataframe_split"]["columns"] == ["title", "text"]


def test_requests_at_once_get_the_answers_each_gets_alone(served):
    """``mlflow models serve`` predicts each request in a thread of its own on one loaded model. The
    members of an adapter ensemble share one backbone and switch its active adapter in turn, so two
    requests at once read with each other's adapters unless the model predicts one request at a time."""
    root = served["root"] / "lora-ensemble"
    pvp = PVP.from_dict({"pattern": "{text} it was {mask} .", "verbalizer": {"pos": "great", "neg": "bad"}})
    backbone, texts = save_tiny("bert", root / "headless", headless=True), [r["text"] for r in ROWS]
    members = []
    for seed, labels in ((1, [0, 1, 0]), (2, [1, 0, 1])):  # two adapters taught opposite answers
        learner = build_learner(LearnerSpec.cloze(str(backbone), pvp, max_length=32))
        train(learner, [{"text": t} for t in texts], labels, TrainConfig(
            min_steps=20, max_steps=20, batch_size=4, device="cpu", seed=seed, learning_rate=1e-2,
            peft=PeftSettings(method="lora")), progress=False)
        learner.save(root / f"member-{seed}")
        members.append(root / f"member-{seed}")
    save_ensemble(root, members, [0.9, 0.1])
    client = MlflowClient(served["uri"])
    version = log_staged(client, client.create_run(experiment_id(served["uri"], "served")).info.run_id,
                         stage(str(root), served["root"] / "staged-lora"), "ipet-lora-ensemble", {})
    with tracking(served["uri"]):
        model = mlflow.pyfunc.load_model(f"models:/ipet-lora-ensemble/{version}")
    frame = pd.DataFrame({"text": texts * 10})
    def probabilities() -> np.ndarray:
        return model.predict(frame, params={"precision": "fp32"})[["prob_neg", "prob_pos"]].to_numpy(float)

    alone = probabilities()
    with ThreadPoolExecutor(8) as pool:
        at_once = list(pool.map(lambda _: probabilities(), range(24)))
    differ = [i for i, got in enumerate(at_once) if not np.allclose(got, alone, atol=1e-6)]
    assert differ == [], f"{len(differ)} of {len(at_once)} answers given at once differ from the answer alone"


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLflow's process-global tracking URI set to ``uri`` for a block, as a user's script sets it."""
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


# --- behind `mlflow models serve` (slow: the server takes 10-40 s to start) ---------------------


@pytest.fixture(scope="module")
def server(served) -> Iterator[str]:
    """``mlflow models serve -m models:/ipet-served@champion --env-manager local`` on a free port, as the
    README says to run it; its URL. Stopped at the end by its process group (its own session)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (served["root"] / "serve.log").open("w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", URI,
                             "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
                            env=user_env(served["uri"]), cwd=served["root"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while not _answers(f"{url}/ping"):
            assert proc.poll() is None and time.monotonic() < deadline, \
                (served["root"] / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the CLI and the uvicorn it started
        proc.wait(timeout=30)
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def invoke(url: str, body: dict | str, content_type: str = "application/json") -> tuple[int, dict]:
    """POST ``body`` to ``/invocations``; the status and the JSON answer."""
    data = (body if isinstance(body, str) else json.dumps(body)).encode()
    request = urllib.request.Request(f"{url}/invocations", data, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, strict_json(response.read())
    except urllib.error.HTTPError as err:
        return err.code, strict_json(err.read())


@pytest.mark.slow
def test_the_served_model_answers_as_ipet_predict(served, server, tmp_path):
    """Every request format gives ``ipet predict``'s labels and probabilities on the same rows; a row with
    no text gets a null label, null probabilities and its reason. Every answer is strict JSON."""
    predict_file(URI, str(served["csv"]), str(tmp_path / "p.parquet"), tracking_uri=served["uri"])
    ours = pq.read_table(tmp_path / "p.parquet").to_pandas()
    columns = ["title", "text"]
    for body in ({"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in ROWS]}},
                 {"dataframe_records": ROWS}, {"inputs": {c: [r[c] for r in ROWS] for c in columns}},
                 {"inputs": ROWS}, {"dataframe_records": ROWS, "params": {"precision": "auto"}}):
        status, answer = invoke(server, body)
        assert status == 200, (body, answer)
        got = pd.DataFrame(answer["predictions"])
        assert list(got["label"]) == list(ours["label"]), body
        assert np.allclose(got[["prob_neg", "prob_pos"]], ours[["prob_neg", "prob_pos"]]), body
    status, answer = invoke(server, served["csv"].read_text(), "text/csv")
    assert status == 200 and [p["label"] for p in answer["predictions"]] == list(ours["label"])
    status, answer = invoke(server, {"dataframe_records": [{"title": None, "text": None}, ROWS[0]]})
    assert status == 200 and answer["predictions"][0]["label"] is None
    assert answer["predictions"][0]["prob_neg"] is None and answer["predictions"][0]["prob_pos"] is None
    assert answer["predictions"][0]["error"].startswith("empty text in every input field")
    assert answer["predictions"][1]["error"] is None and answer["predictions"][1]["label"] == ours["label"][0]


@pytest.mark.slow
@pytest.mark.parametrize(("body", "says"), [
    ({"dataframe_records": [{"text": "great film"}]}, "missing inputs ['title']"),
    ({"dataframe_split": {"columns": ["text"], "data": [["great film"]]}}, "missing inputs ['title']"),
    ({"dataframe_records": []}, "missing inputs ['title', 'text']"),
    ({"dataframe_records": [{"title": "a", "text": ["great", "film"]}]}, "column 'text' holds a list in row 0"),
    ({"dataframe_records": [{"title": "a", "text": {"x": 1}}]}, "column 'text' holds a dict in row 0"),
    ({"dataframe_records": ROWS, "params": {"precision": "fp16"}}, "precision: 'fp16' is not one of auto"),
    ({"dataframe_records": ROWS, "params": {"precision": 5}}, "Can not safely convert"),
    ({"rows": ROWS}, "exactly one of the input fields"),
    ("text\ngreat film\n", "missing inputs ['title']"),
], ids=["missing-field", "missing-field-split", "no-rows", "list", "dict", "precision", "precision-number",
        "unknown-key", "csv-missing-field"])
def test_a_bad_request_is_a_400_naming_the_field(server, body, says):
    status, answer = invoke(server, body, "text/csv" if isinstance(body, str) else "application/json")
    assert status == 400 and says in answer["message"], answer
    assert "stack_trace" not in answer, answer["stack_trace"][-500:]


@pytest.mark.slow
def test_a_request_without_rows_is_answered_with_none(server):
    assert invoke(server, {"dataframe_split": {"columns": ["title", "text"], "data": []}}) == (200, {"predictions": []})
    assert invoke(server, "title,text\n", "text/csv") == (200, {"predictions": []})


@pytest.mark.slow
def test_mlflow_models_predict_reads_a_csv_as_ipet_predict(served, tmp_path):
    """``mlflow models predict -i rows.csv -t csv --env-manager local``: ``ipet predict``'s labels."""
    done = subprocess.run([str(BIN / "mlflow"), "models", "predict", "-m", URI, "-i", str(served["csv"]),
                           "-t", "csv", "--env-manager", "local", "-o", str(tmp_path / "out.json")],
                          env=user_env(served["uri"]), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    predict_file(URI, str(served["csv"]), str(tmp_path / "p.parquet"), tracking_uri=served["uri"])
    got = pd.DataFrame(json.loads((tmp_path / "out.json").read_text())["predictions"])
    assert list(got["label"]) == pq.read_table(tmp_path / "p.parquet").to_pandas()["label"].tolist()
