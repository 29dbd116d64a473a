"""Run directories and pools at an fsspec URL: an S3 bucket served by moto's S3 server over HTTP
(no AWS), read and written through s3fs exactly as a real bucket would be.

What must hold on an object store (no rename, no flock): outputs appear whole or not at all, a
second machine (an empty local mirror) resumes from the bucket alone, and one run holds the
run directory at a time."""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from data.location import COMPLETE, exists, local, mirror, names, remove
from data.lock import LOCK_FILE, RunDirBusy, run_dir_lock
from data.outputs import atomic_path, read_json, write_json, write_parquet
from flows.config import RunConfig
from flows.ipet import ipet
from flows.predict import predict_file
from tiny import toy_run_config

s3fs = pytest.importorskip("s3fs", reason="the s3 test extra is not installed")
moto_server = pytest.importorskip("moto.server", reason="the s3 test extra is not installed")

BUCKET = "ipet-test"


@pytest.fixture(scope="module")
def bucket() -> str:
    """A real S3 endpoint on loopback with one empty bucket; AWS_* point s3fs at it."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir(BUCKET)
    yield f"s3://{BUCKET}"
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """This test's machine: its own empty local mirror."""
    monkeypatch.setenv("IPET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fs() -> "s3fs.S3FileSystem":
    return s3fs.S3FileSystem()


def test_outputs_at_a_url_appear_whole_and_are_read_from_a_local_copy(bucket, cache, tmp_path, monkeypatch):
    run = f"{bucket}/whole"
    table = pa.table({"id": ["1", "2"], "text": ["a", "b"]})
    write_parquet(table, f"{run}/sets/a.parquet")
    assert fs().isfile(f"{BUCKET}/whole/sets/a.parquet")
    assert pq.read_table(local(f"{run}/sets/a.parquet")).equals(table)

    with atomic_path(f"{run}/models/m", directory=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"w" * 10)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "spec.json").write_text("{}")
    assert sorted(fs().find(f"{BUCKET}/whole/models/m")) == [
        f"{BUCKET}/whole/models/m/{COMPLETE}", f"{BUCKET}/whole/models/m/sub/spec.json",
        f"{BUCKET}/whole/models/m/weights.bin"]

    # another machine: nothing mirrored yet, everything comes from the bucket
    monkeypatch.setenv("IPET_CACHE", str(tmp_path / "other"))
    assert exists(f"{run}/models/m") and not (tmp_path / "other").exists()
    copy = local(f"{run}/models/m")
    assert copy == mirror(f"{run}/models/m") and (copy / "weights.bin").read_bytes() == b"w" * 10
    assert (copy / "sub" / "spec.json").read_text() == "{}"


def test_a_directory_killed_mid_upload_does_not_exist_and_is_redone(bucket, cache):
    run = f"{bucket}/killed"
    fs().pipe_file(f"{BUCKET}/killed/models/m/weights.bin", b"half")  # uploaded before the kill, no marker
    assert not exists(f"{run}/models/m")
    with atomic_path(f"{run}/models/m", directory=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"whole")
    assert exists(f"{run}/models/m")
    assert fs().cat_file(f"{BUCKET}/killed/models/m/weights.bin") == b"whole"


def test_a_failed_write_leaves_nothing_at_the_url(bucket, cache):
    with pytest.raises(RuntimeError):
        with atomic_path(f"{bucket}/failed/results.json") as tmp:
            tmp.write_text("{half")
            raise RuntimeError("disk gone")
    assert not fs().exists(f"{BUCKET}/failed/results.json")
    assert names(f"{bucket}/failed") is None


def test_results_that_change_are_read_fresh(bucket, cache):
    path = f"{bucket}/fresh/results.json"
    write_json({"n": 1}, path)
    fs().pipe_file(f"{BUCKET}/fresh/results.json", json.dumps({"n": 2}).encode())  # another machine's run
    assert read_json(path)["n"] == 1  # content-addressed readers trust the mirror
    assert read_json(path, fresh=True)["n"] == 2


def test_a_removed_file_leaves_the_bucket_and_the_mirror(bucket, cache):
    """What a finished adaptation does with its checkpoint: gone for every machine, and no error if already gone."""
    path = f"{bucket}/removed/backbones/.adapted-0.checkpoint.pt"
    write_json({"step": 3}, path)
    assert fs().isfile(f"{BUCKET}/removed/backbones/.adapted-0.checkpoint.pt") and mirror(path).is_file()
    remove(path)
    assert not fs().exists(f"{BUCKET}/removed/backbones/.adapted-0.checkpoint.pt") and not mirror(path).exists()
    assert not exists(path)
    remove(path)


def test_the_run_dir_lease_admits_one_holder_and_outlives_a_killed_one(bucket, cache):
    run = f"{bucket}/leased"
    with run_dir_lock(run):
        holder = json.loads(fs().cat_file(f"{BUCKET}/leased/{LOCK_FILE}"))
        assert holder["holder"].startswith(f"pid {os.getpid()} ")
        with run_dir_lock(run):  # re-entrant in one process (the CLI, then its flow)
            pass
        assert fs().isfile(f"{BUCKET}/leased/{LOCK_FILE}")
    assert not fs().exists(f"{BUCKET}/leased/{LOCK_FILE}")

    # another process holds it (a live lease): refused, naming the holder
    fs().pipe_file(f"{BUCKET}/leased/{LOCK_FILE}", json.dumps({"holder": "pid 7 on gpu-3",
                                                               "renewed": time.time()}).encode())
    with pytest.raises(RunDirBusy, match="pid 7 on gpu-3"):
        with run_dir_lock(run):
            pass
    # that process was killed: its lease is not renewed, and goes stale
    fs().pipe_file(f"{BUCKET}/leased/{LOCK_FILE}", json.dumps({"holder": "pid 7 on gpu-3",
                                                               "renewed": time.time() - 3600}).encode())
    with run_dir_lock(run):
        assert json.loads(fs().cat_file(f"{BUCKET}/leased/{LOCK_FILE}"))["holder"] != "pid 7 on gpu-3"


def test_the_flow_on_a_bucket_gives_the_local_results_and_resumes_on_another_machine(
        prefect_harness, bucket, cache, tmp_path, monkeypatch):
    (tmp_path / "toy").mkdir()
    config = toy_run_config(tmp_path / "toy", labeled_per_class=4, steps=20, generations=1, growth=2)
    config["final"] = {"mode": "distill", "train": {"min_steps": 1}}
    for name in ("train.csv", "test.csv"):  # the data root (its train and test files) in the bucket
        fs().put_file(str(tmp_path / "toy" / name), f"{BUCKET}/data/{name}")
    remote = RunConfig.model_validate({**config, "data": {**config["data"], "root": f"{bucket}/data"}})

    on_disk = ipet(config=remote, run_dir=str(tmp_path / "local"))
    run = f"{bucket}/run"
    on_bucket = ipet(config=remote, run_dir=run)

    for ours, theirs in zip(on_bucket["stages"], on_disk["stages"], strict=True):
        assert ours["test_accuracy"] == theirs["test_accuracy"], ours["stage"]
        assert ours["pseudo_label_accuracy"] == theirs["pseudo_label_accuracy"], ours["stage"]
    assert on_bucket["tasks"] == {"trained": 2 + 2 + 1, "reused": 0}
    assert on_bucket["run_dir"] == run
    stored = read_json(f"{run}/results.json", fresh=True)
    assert stored["mlflow_run_id"] == on_bucket["mlflow_run_id"]
    final = on_bucket["stages"][-1]["model"]
    assert final.startswith(f"{run}/models/final-distilled-") and fs().isfile(f"{final}/{COMPLETE}")
    assert not fs().exists(f"{BUCKET}/run/{LOCK_FILE}")  # released

    # a second machine (an empty mirror) resumes from the bucket alone: nothing is trained again
    monkeypatch.setenv("IPET_CACHE", str(tmp_path / "second-machine"))
    again = ipet(config=remote, run_dir=run)
    assert again["tasks"] == {"trained": 0, "reused": 5}
    assert [s["test_accuracy"] for s in again["stages"]] == [s["test_accuracy"] for s in on_bucket["stages"]]

    # and a third predicts with the run's final model, input and output in the bucket too
    monkeypatch.setenv("IPET_CACHE", str(tmp_path / "third-machine"))
    summary = predict_file(run, f"{bucket}/data/test.csv", f"{bucket}/predicted.parquet")
    assert (summary["rows"], summary["model_version"]) == (40, final)
    predicted = pq.read_table(local(f"{bucket}/predicted.parquet"))["label"].to_pylist()
    with open(tmp_path / "toy" / "test.csv", newline="") as f:
        truth = [row["label"] for row in csv.DictReader(f)]
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    assert accuracy == pytest.approx(on_bucket["stages"][-1]["test_accuracy"])


def test_a_missing_file_at_a_url_is_named(bucket, cache):
    from data.errors import DataError
    from data.sources import Source, read_source

    with pytest.raises(DataError, match=f"nope.csv: file not found .*{BUCKET}/data/nope.csv"):
        read_source(Source(path="nope.csv"), f"{bucket}/data")



@pytest.mark.slow  # starting Ray and its worker processes
def test_ray_workers_on_other_mirrors_share_the_run_through_the_bucket(prefect_harness, bucket, cache, tmp_path):
    """Workers with a mirror of their own (another machine's disk) write to the bucket; the flow
    reads what they wrote from there; the results equal the local runner's on a local run dir."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    (tmp_path / "toy").mkdir()
    config = toy_run_config(tmp_path / "toy", labeled_per_class=4, steps=20, generations=1, growth=2)
    for name in ("train.csv", "test.csv"):
        fs().put_file(str(tmp_path / "toy" / name), f"{BUCKET}/ray-data/{name}")
    config = {**config, "data": {**config["data"], "root": f"{bucket}/ray-data"}, "labeling": {"shard_rows": 64}}

    on_threads = ipet(config=RunConfig.model_validate({**config, "runner": {"kind": "local"}}),
                      run_dir=str(tmp_path / "local"))
    workers = tmp_path / "workers-mirror"
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"IPET_CACHE": str(workers)}})
    try:
        on_ray = ipet(config=RunConfig.model_validate({**config, "runner": {"kind": "ray", "cpus_per_task": 1}}),
                      run_dir=f"{bucket}/ray-run")
    finally:
        ray.shutdown()

    for ours, theirs in zip(on_ray["stages"], on_threads["stages"], strict=True):
        assert ours["test_accuracy"] == theirs["test_accuracy"], ours["stage"]
        assert ours["pseudo_label_accuracy"] == theirs["pseudo_label_accuracy"], ours["stage"]
    assert on_ray["tasks"] == on_threads["tasks"] == {"trained": 2 + 2 + 1, "reused": 0}
    shards = fs().glob(f"{BUCKET}/ray-run/logits/g0-p0-s1--pool-*/*")
    assert [Path(s).name for s in sorted(shards)] == [f"shard-{i:05d}-of-00004.parquet" for i in range(4)]
    trained_here = list((cache / "s3" / BUCKET / "ray-run" / "models").glob("g0-*/*.safetensors"))
    trained_there = list((workers / "s3" / BUCKET / "ray-run" / "models").glob("g0-*/*.safetensors"))
    assert not trained_here and len(trained_there) == 2  # the flow's machine never held those weights


def test_unusable_storage_is_one_line_and_exit_2(bucket, cache, tmp_path, capsys):
    """No such bucket (run dir) and no fsspec backend for a protocol (data root): a message naming
    it, exit 2, nothing started."""
    from flows.cli import main

    (tmp_path / "toy").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(toy_run_config(tmp_path / "toy")))
    assert main(["run", str(config), "--run-dir", "s3://no-such-bucket/run"]) == 2
    err = capsys.readouterr().err
    assert "run directory s3://no-such-bucket/run is not usable: FileNotFoundError" in err
    assert "Traceback" not in err

    assert main(["validate", str(config), "--set", "data.root=nosuch://bucket/data"]) == 2
    err = capsys.readouterr().err
    assert "train.csv: cannot read from nosuch://bucket/data: ValueError: Unsupported filesystem: 'nosuch'" in err


def test_a_dataset_store_at_a_url_is_refused():
    """The store moves its CURRENT pointer by rename under a flock: it stays a local directory."""
    from pydantic import ValidationError

    from data.errors import DataError
    from data.sources import Source
    from data.dataset_store import dataset_dir

    with pytest.raises(ValidationError, match="a dataset store is a local .* not a URL"):
        Source(store="s3://bucket/stores", dataset="agnews")
    with pytest.raises(DataError, match="a store is a local .* not a URL"):
        dataset_dir("s3://bucket/stores", "agnews")


def test_ingest_reads_its_file_from_a_url(bucket, cache, tmp_path, capsys):
    """New data lands in a bucket: `ipet ingest s3://…` reads it there (the store itself stays local);
    the manifest names the URL and the file's sha256. A missing object: one line, exit 2."""
    import hashlib

    from data.dataset_store import DatasetStore
    from flows.cli import main

    (tmp_path / "toy").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(toy_run_config(tmp_path / "toy")))
    body = b"text,label\nfresh words here,pos\nmore new words,neg\n"
    fs().pipe_file(f"{BUCKET}/landing/new.csv", body)
    store = str(tmp_path / "stores")
    assert main(["ingest", f"{bucket}/landing/new.csv", "--dataset", "toy", "--store", store,
                 "--config", str(config)]) == 0
    version = DatasetStore(store, "toy").version()
    assert version.read("unlabeled")["text"].to_pylist() == ["fresh words here", "more new words"]
    assert version.manifest["ingest"]["source"] == {"path": f"{bucket}/landing/new.csv",
                                                    "sha256": hashlib.sha256(body).hexdigest(), "rows": 2}
    capsys.readouterr()
    assert main(["ingest", f"{bucket}/landing/nope.csv", "--dataset", "toy", "--store", store]) == 2
    err = capsys.readouterr().err
    assert err == f"{bucket}/landing/nope.csv: file not found (looked at {bucket}/landing/nope.csv)\n"


def test_a_first_ingest_keeps_a_test_set_at_a_url_out(bucket, cache, tmp_path):
    """A config whose data root is a bucket gives the dataset its test set there: a row of it in the
    ingested file is dropped as a test duplicate (the URL was read as a local path ``s3:/…``)."""
    from data.dataset_store import DatasetStore
    from data.ingest import ingest_file
    from flows.ingest import schema_of

    (tmp_path / "toy").mkdir()
    config = toy_run_config(tmp_path / "toy")
    fs().put_file(str(tmp_path / "toy" / "test.csv"), f"{BUCKET}/schema-data/test.csv")
    config["data"]["root"] = f"{bucket}/schema-data"
    schema = schema_of(RunConfig.model_validate(config))
    assert schema.test["path"] == f"{bucket}/schema-data/test.csv"
    with open(tmp_path / "toy" / "test.csv", newline="") as f:
        held_out = next(csv.DictReader(f))["text"]
    (tmp_path / "new.csv").write_text(f"text,label\n{held_out},pos\nsomething new,neg\n")
    result = ingest_file(tmp_path / "new.csv", "toy", tmp_path / "stores", schema=schema)
    assert result["added"] == 1 and result["duplicates_by_origin"]["test"] == 1
    assert DatasetStore(tmp_path / "stores", "toy").version().manifest["schema"]["test"] == schema.test


def test_missing_credentials_are_named_not_taken_for_a_missing_file(bucket, cache, tmp_path, monkeypatch, capsys):
    """fsspec's isfile answers False on any error: without credentials, `ipet ingest` said "file not
    found" and `ipet predict` "no such model directory" for objects that are there."""
    from flows.cli import main

    (tmp_path / "toy").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(toy_run_config(tmp_path / "toy")))
    fs().pipe_file(f"{BUCKET}/creds/new.csv", b"text\nhello there\n")
    fs().pipe_file(f"{BUCKET}/creds/run/results.json", b'{"stages": []}')
    capsys.readouterr()  # the tiny model's save
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for key in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(key, str(tmp_path / "none"))
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        assert main(["ingest", f"{bucket}/creds/new.csv", "--dataset", "toy", "--store", str(tmp_path / "stores"),
                     "--config", str(config)]) == 2
        assert capsys.readouterr().err == (f"{bucket}/creds/new.csv: cannot be read: NoCredentialsError: "
                                           "Unable to locate credentials\n")
        out = tmp_path / "out.parquet"
        assert main(["predict", "--model", f"{bucket}/creds/run", "--input", str(tmp_path / "toy" / "test.csv"),
                     "--output", str(out)]) == 2
        assert capsys.readouterr().err == (f"ipet predict: {bucket}/creds/run/results.json: cannot be read: "
                                           "NoCredentialsError: Unable to locate credentials\n")
        assert not out.exists() and not (tmp_path / "stores" / "toy").exists()
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
