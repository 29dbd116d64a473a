"""Asking a person in the Prefect UI, end to end: a real `prefect server`, the project's ipet
deployment (pointed at a toy task with ``ask.after: pet``) and a process worker. The run suspends
after PET, labels are submitted through Prefect's API as the UI submits its form, and the resumed
run finishes with the answers in its gold set and in the store, reusing everything before the pause.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from data.dataset_store import DatasetStore
from test_deploy import ROOT, TERMINAL, _cli, _client, _start, _stop, server  # noqa: F401 (server: a fixture)
from tiny import toy_run_config, toy_store

pytestmark = pytest.mark.slow
ASKED, GOLD = 4, 8
# The UI check needs Chromium (Debian's `chromium`, or IPET_CHROMIUM) and the `playwright` package (the `docs`
# extra); without them the test checks the form through the API only. IPET_ASK_SCREENSHOT=PATH also saves
# the form as a PNG: docs/ask-form.png, the README's picture, is made so.
BROWSER = os.environ.get("IPET_CHROMIUM") or shutil.which("chromium")
if BROWSER and importlib.util.find_spec("playwright") is None:
    BROWSER = None
SCREENSHOT = os.environ.get("IPET_ASK_SCREENSHOT")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A toy store (gold set + pool), a run config asking 4 rows after PET into that store, and the
    ipet deployment of prefect.yaml (no schedule, no trigger) running it."""
    root = tmp_path_factory.mktemp("ask-deploy")
    config = toy_run_config(root, steps=10, generations=1)
    store = toy_store(root, GOLD)
    config.update(data={"root": str(root), "labeled": store, "unlabeled": store, "test": {"path": "test.csv"}},
                  final={"mode": "ensemble"}, ask={"after": "pet", "rows": ASKED, "store": store})
    config["tracking"]["register"] = False
    (root / "toy.yaml").write_text(yaml.safe_dump(config))
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    ipet = next(d for d in deployments["deployments"] if d["entrypoint"] == "flows/ipet.py:ipet")
    ipet.update(parameters={"config": str(root / "toy.yaml"), "run_dir": str(root / "run")}, schedules=[], triggers=[])
    deployments["deployments"] = [ipet]
    (root / "prefect.yaml").write_text(yaml.safe_dump(deployments))
    return {"root": root, "mlflow_uri": config["tracking"]["mlflow_uri"]}


def test_the_run_suspends_for_answers_given_in_the_ui_and_finishes_with_them(server, project):
    env, root, run_dir = server["env"], project["root"], project["root"] / "run"
    _cli(["prefect", "work-pool", "create", "ipet-local", "--type", "process"], env)
    _cli(["prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(root / "prefect.yaml")], env)
    worker = _start(["prefect", "worker", "start", "--pool", "ipet-local"], env, server["home"] / "worker.log")
    try:
        started = _cli(["prefect", "deployment", "run", "ipet/agnews"], env).stdout
        run_id = started.split("UUID:")[1].split()[0]
        suspended = _wait_for(env, run_id, lambda s: s.type.value == "PAUSED", server["home"])
        assert suspended.name == "Suspended"
        request = json.loads(next((run_dir / "ask").glob("pet-*[0-9a-f].json")).read_text())
        assert len(request["rows"]) == ASKED
        assert BROWSER or not SCREENSHOT, "IPET_ASK_SCREENSHOT needs Chromium and playwright (pip install -e '.[docs]')"
        if BROWSER:  # the form as a person sees it: the server's own UI in headless Chromium
            _check_the_form_in_the_ui(env["PREFECT_API_URL"].removesuffix("/api"), run_id, request)

        with _client(env) as client:  # the form's schema is on the run: a dropdown per row, "skip" included
            keyset = suspended.state_details.run_input_keyset
            schema = json.loads(client.read_flow_run_input(run_id, keyset["schema"]))
            assert schema["properties"]["row_01"]["enum"] == ["skip", "neg", "pos"]
            assert "ensemble's guess" in client.read_flow_run_input(run_id, keyset["description"])
            pool = next(run_dir.glob("data/pool-*.parquet"))
            hidden = {r["id"]: r["hidden_label"] for r in pq.read_table(pool).to_pylist()}
            answers = {f"row_{i + 1:02d}": hidden[r["id"]] for i, r in enumerate(request["rows"][:ASKED - 1])}
            response = client.resume_flow_run(run_id, run_input=answers)  # what the UI's "Resume" sends
            assert response.status.value == "ACCEPT", response.details
        _wait_for(env, run_id, lambda s: s.type.value in TERMINAL, server["home"])

        results = json.loads((run_dir / "results.json").read_text())
        assert [s["stage"] for s in results["stages"]] == ["zero-shot", "pet", "ipet-1", "final"]
        assert results["tasks"] == {"trained": 2, "reused": 2}  # PET, before the pause, reused on resume
        labeled = {r["id"]: hidden[r["id"]] for r in request["rows"][:ASKED - 1]}
        for path in run_dir.glob("sets/g1-*.parquet"):
            gold = {r["id"]: r["label"] for r in pq.read_table(path).to_pylist() if r["source"] == "gold"}
            assert len(gold) == GOLD + ASKED - 1 and {i: gold[i] for i in labeled} == labeled
        store = DatasetStore(root / "stores", "toy")
        assert store.current() == 3 and store.version().read("labeled").num_rows == GOLD + ASKED - 1
        params = MlflowClient(project["mlflow_uri"]).get_run(results["mlflow_run_id"]).data.params
        assert params["ask.answered"] == str(ASKED - 1) and params["ask.skipped"] == "1"
    finally:
        _stop(worker)


def _wait_for(env: dict, run_id: str, reached, home, timeout: float = 420):
    """The flow run's state once ``reached`` says so; a terminal state must be COMPLETED."""
    deadline = time.time() + timeout
    with _client(env) as client:
        while time.time() < deadline:
            state = client.read_flow_run(run_id).state
            if state and reached(state):
                assert state.type.value not in TERMINAL - {"COMPLETED"}, \
                    f"{run_id}: {state}\n{(home / 'worker.log').read_text()[-4000:]}"
                return state
            if state and state.type.value in TERMINAL:
                pytest.fail(f"{run_id} ended {state} before the awaited state\n"
                            f"{(home / 'worker.log').read_text()[-4000:]}")
            time.sleep(2)
    pytest.fail(f"{run_id}: not there within {timeout} s\n{(home / 'worker.log').read_text()[-4000:]}")


def _check_the_form_in_the_ui(ui_url: str, run_id: str, request: dict) -> None:
    """The suspended run's page, its Resume button clicked: the dialog shows the explanation and one dropdown
    per asked row, titled with its text and the ensemble's guess; saved to IPET_ASK_SCREENSHOT when set."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{ui_url}/runs/flow-run/{run_id}")
            page.get_by_role("button", name="Resume").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text(f"Label {ASKED} examples after stage").wait_for(timeout=60_000)
            text = dialog.inner_text()
            dropdowns = dialog.locator(".p-select-button__control")  # Prefect UI's select; each starts at "skip"
            assert "disagree on most" in text and dropdowns.count() == ASKED, text
            assert dropdowns.all_inner_texts() == ["skip"] * ASKED
            for row in request["rows"]:
                assert f"guess: {row['guess']}" in text and str(row[request["fields"][0]])[:20] in text, (row, text)
            if SCREENSHOT:
                page.screenshot(path=SCREENSHOT)
        finally:
            browser.close()
