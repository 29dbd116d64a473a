"""Every user mistake in docs/reliability.md, fed through the CLI: the documented exit code, the
message's key words, and never a traceback (stdout and stderr, captured at the file descriptors,
so a C extension's print counts too). The doc and this table are checked against each other: a
case documented without a test here, or tested without a line in the doc, fails."""

from __future__ import annotations

import contextlib
import gzip
import json
import re
from pathlib import Path
from typing import Callable

import pytest
import yaml

from flows.cli import main
from tiny import save_classifier, save_tiny, toy_run_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
FED = ("Bad config", "Bad data", "Bad command line")  # every row of these sections is a case below
Build = Callable[[dict, Path], list[str]]


def config(toy: dict, tmp: Path, **changes) -> str:
    """``toy`` with top-level ``changes`` (``data_*`` keys change ``data``) written as YAML; its path."""
    data = {**toy["data"], **{k.removeprefix("data_"): v for k, v in changes.items() if k.startswith("data_")}}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({**toy, **{k: v for k, v in changes.items() if not k.startswith("data_")},
                                    "data": data}))
    return str(path)


def validate(*overrides: str, **changes) -> Build:
    return lambda toy, tmp: ["validate", config(toy, tmp, **changes), *[a for o in overrides for a in ("--set", o)]]


def with_train(text: str | bytes, name: str = "bad.csv", **source) -> Build:
    def build(toy: dict, tmp: Path) -> list[str]:
        (tmp / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["validate", config(toy, tmp, data_train={"path": str(tmp / name), **source})]
    return build


def with_model(make: Callable[[Path], Path]) -> Build:
    return lambda toy, tmp: ["validate", config(toy, tmp, model=str(make(tmp)))]


def lines(n: int, make: Callable[[int], str], header: str = "text,label") -> str:
    return "\n".join([header, *(make(i) for i in range(n))]) + "\n"


def gpt2(tmp: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = save_tiny("bert", tmp / "gpt2")
    GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=1, n_head=2)).save_pretrained(directory)
    return directory


def pickled(tmp: Path) -> Path:
    import torch
    from transformers import AutoModelForMaskedLM

    directory = save_tiny("bert", tmp / "pickled")
    state = AutoModelForMaskedLM.from_pretrained(directory).state_dict()
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")
    return directory


def custom_code(tmp: Path) -> Path:
    directory = save_tiny("bert", tmp / "remote")
    settings = json.loads((directory / "config.json").read_text())
    settings.update(model_type="custom-evil", auto_map={"AutoConfig": "evil.EvilConfig"})
    (directory / "config.json").write_text(json.dumps(settings))
    return directory


def without_cuda(build: Build) -> Build:
    """``build``'s command, which asks for CUDA, where there is none (on a machine with CUDA there is nothing
    to refuse)."""
    def skipped(toy: dict, tmp: Path) -> list[str]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        return build(toy, tmp)
    return skipped


def on_ray(address: str) -> Build:
    """``validate`` of a run on Ray at ``address``, where no Ray cluster answers (skipped where Ray is not
    installed, or where this machine runs one that ``auto`` would join)."""
    def build(toy: dict, tmp: Path) -> list[str]:
        pytest.importorskip("ray", reason="the ray extra is not installed")
        from ray._private.services import canonicalize_bootstrap_address

        with contextlib.suppress(ConnectionError):  # raised where auto finds no cluster: the case
            if address == "auto" and canonicalize_bootstrap_address(address):
                pytest.skip("a Ray cluster runs on this machine")
        return validate("runner.kind=ray", f"runner.address={address}")(toy, tmp)
    return build


def adapt(*overrides: str) -> Build:
    return lambda toy, tmp: ["adapt", config(toy, tmp), "--run-dir", str(tmp / "run"),
                             *[a for o in ("adapt.steps=1", *overrides) for a in ("--set", o)]]


def a_file(tmp: Path) -> str:
    (tmp / "a-file").write_text("x")
    return str(tmp / "a-file")


def gzipped(tmp: Path) -> str:
    (tmp / "data.csv").write_bytes(gzip.compress(b"text,label\nfine,pos\n" * 50))
    return str(tmp / "data.csv")


def other_test_set(toy: dict, tmp: Path) -> list[str]:
    """A second ingest into a dataset whose ``--config`` names another test set than its first ingest's."""
    train, store = str(Path(toy["data"]["root"]) / "train.csv"), str(tmp / "s")
    main(["ingest", train, "--dataset", "d", "--store", store, "--config", config(toy, tmp), "--read", "rows=[0,5]"])
    (tmp / "other.csv").write_text("text,label\nsomething else,pos\n")
    return ["ingest", train, "--dataset", "d", "--store", store, "--config",
            config(toy, tmp, data_test={"path": str(tmp / "other.csv")}), "--read", "rows=[5,10]"]


def gold_and_pool(gold: str, pool: str, **changes) -> Build:
    """``validate`` of a labeled file ``gold`` and an unlabeled file ``pool`` (no ``train`` draw)."""
    def build(toy: dict, tmp: Path) -> list[str]:
        (tmp / "gold.csv").write_text(gold)
        (tmp / "pool.csv").write_text(pool)
        return ["validate", config(toy, tmp, data_train=None, data_labeled_per_class=None, data_pool_size=None,
                                   data_labeled={"path": str(tmp / "gold.csv")},
                                   data_unlabeled={"path": str(tmp / "pool.csv")}, **changes)]
    return build


def foreign_results(command: str) -> Build:
    """``command`` (gc, predict) on a folder whose results.json is another tool's, not a run's."""
    def build(toy: dict, tmp: Path) -> list[str]:
        (tmp / "other").mkdir()
        (tmp / "other" / "results.json").write_text('{"accuracy": 0.9}')
        return (["gc", str(tmp / "other")] if command == "gc" else
                ["predict", "--model", str(tmp / "other"), "--input", str(Path(toy["data"]["root"]) / "test.csv"),
                 "--output", str(tmp / "o.parquet")])
    return build


def predicting(text: str, name: str = "new.csv") -> Build:
    """``ipet predict`` of ``text`` (written as ``name``) with a tiny classifier."""
    def build(toy: dict, tmp: Path) -> list[str]:
        (tmp / name).write_text(text)
        model = save_classifier(tmp / "classifier", save_tiny("bert", tmp / "backbone"))
        return ["predict", "--model", str(model), "--input", str(tmp / name), "--output", str(tmp / "o.parquet")]
    return build


def answered(*answers: tuple[str, str]) -> Build:
    """``ipet answer`` of a sheet with ``answers`` (id, label) to a run that asked about rows 1 and 2."""
    def build(toy: dict, tmp: Path) -> list[str]:
        from data.answers import write_request

        write_request({"stage": "pet", "key": "k", "asked_at": "2026-01-01T00:00:00+00:00", "fields": ["text"],
                       "labels": ["neg", "pos"], "rows": [{"id": "1", "text": "a"}, {"id": "2", "text": "b"}]},
                      str(tmp / "run"))
        (tmp / "sheet.csv").write_text("id,text,label\n" + "".join(f"{i},x,{label}\n" for i, label in answers))
        return ["answer", str(tmp / "run"), str(tmp / "sheet.csv")]
    return build


def answered_earlier(toy: dict, tmp: Path) -> list[str]:
    """``ipet answer`` of a sheet for rows 1 and 2 to a run that then asked rows 3 and 4 instead (its
    settings changed): the sheet it stopped with last, ``ask/pet.csv``, holds those."""
    from data.answers import write_request, write_sheet

    argv = answered(("1", "pos"), ("2", "neg"))(toy, tmp)
    later = {"stage": "pet", "key": "k2", "asked_at": "2026-01-02T00:00:00+00:00", "fields": ["text"],
             "labels": ["neg", "pos"], "rows": [{"id": "3", "text": "c"}, {"id": "4", "text": "d"}]}
    write_request(later, str(tmp / "run"))
    write_sheet(later, str(tmp / "run"))
    return argv


BALANCED = lines(40, lambda i: f"film number {i} was {'great' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}")
CASES: dict[str, tuple[Build, int, str]] = {
    # -- bad config
    "unknown key": (validate("colour=blue"), 2, "colour: Extra inputs are not permitted"),
    "cloze pattern with no `{mask}`, or two": (validate("pvps=[{pattern: '{text} no mask'}]"), 2, "exactly one {mask}"),
    "pattern reading `{label}` or `{id}`": (validate("pvps=[{pattern: '{id} {text} {mask}'}, {pattern: '{mask} {label}'}]"),
                                            2, "pvps.0.pattern: pattern '{id} {text} {mask}': slot {id} is the row id"),
    "pattern reading no input field": (validate("pvps=[{pattern: 'it was {mask} .'}, {pattern: '{mask} : {text}'}]"), 2,
                                       "pvps.0.pattern: pattern 'it was {mask} .' reads no input field"),
    "similarity pattern with a `{mask}`": (validate("learner=similarity"), 2, "which the similarity learner does not fill"),
    "`final.train.max_steps` (would cut the distillation short)": (validate("final.train.max_steps=3"), 2,
                                                                   "max_steps would cut the distillation short"),
    "pattern slot not in the data": (validate("pvps=[{pattern: '{review} {mask}'}, {pattern: '{mask} {review}'}]"), 2,
                                     "missing column(s) ['review'] that the patterns use"),
    "label in the data, not in the verbalizer": (validate("verbalizer={neg: bad, meh: fine}"), 2, "['pos'] not in the verb"),
    "label in the verbalizer, not in the data": (validate("verbalizer={neg: bad, pos: great, meh: fine}"), 2,
                                                 "label 'meh' has 0 examples"),
    "two labels with the same words": (validate("verbalizer={neg: great, pos: great}"), 2,
                                       "verbalizer: labels 'neg' and 'pos' have the same word(s) ['great']"),
    "two verbalizer keys that are one label as text (`1:` and `\"1\":`)": (
        validate("verbalizer={neg: bad, pos: great, 1: good, '1': fine}"), 2,
        "verbalizer: keys 1 and '1' are both the label '1'"),
    "empty verbalizer": (validate("verbalizer={}"), 2, "verbalizer is empty"),
    "a verbalizer of one label": (validate("verbalizer={neg: bad}"), 2, "verbalizer: one label ['neg']; a classifier"),
    "label word of several tokens": (validate("verbalizer={neg: bad, pos: goods}"), 2, "is 2 tokens"),
    "`labeled_per_class` larger than a class": (validate("data.labeled_per_class=500"), 2,
                                                "fewer than labeled_per_class=500"),
    "`pool_size` or `test_size` above the rows there are": (validate("data.pool_size=10000"), 0,
                                                             "warning: data.pool_size: 10000 rows asked for"),
    "`labeled_per_class` beside a `labeled` file": (validate(data_train=None, data_labeled={"path": "train.csv"},
                                                             data_unlabeled={"path": "train.csv"}), 2,
                                                    "data: 'labeled_per_class: 4' draws the gold set from 'train'"),
    "`test_size` without a `test` source": (validate(data_test=None, data_test_size=50), 2,
                                            "data: 'test_size: 50' samples the test set, and there is no 'test' source"),
    "an MLM mask share below 0.01 (`train.mlm_probability`, `adapt.mlm_probability`)": (
        validate("train.mlm_probability=1e-9"), 2, "train.mlm_probability: Input should be greater than or equal to 0.01"),
    "growth/generations exceed the pool": (validate("ipet.growth=10"), 2, "but the pool has 200"),
    "a seed given twice": (validate("seeds=[1, 1]"), 2, "seeds: seed(s) [1] given more than once"),
    "fewer than two models per generation": (validate("pvps=[{pattern: '{text} it was {mask} .'}]", "ipet.generations=1"),
                                             2, "iPET needs at least two models per generation"),
    "model path does not exist": (validate("model=/nonexistent/model"), 2, "'/nonexistent/model' does not exist"),
    "model path is a file": (lambda toy, tmp: ["validate", config(toy, tmp, model=a_file(tmp))], 2,
                             "is a file, not a model directory"),
    "model directory holds no model": (lambda toy, tmp: ["validate", config(toy, tmp, model=str(tmp))], 2,
                                       "model: cannot load a tokenizer from"),
    "model is not a masked LM (e.g. GPT-2)": (with_model(gpt2), 2, "is a 'gpt2' model, not a masked LM"),
    "`max_length` past the model's position embeddings": (validate("max_length=4096"), 2,
                                                            "max_length: 4096 tokens, but"),
    "a pattern's own words fill `max_length`": (validate("max_length=8", "pvps=[{pattern: 'the movie was really very "
                                                         "good {text} it was {mask} .'}, {pattern: '{mask} {text}'}]"),
                                                2, "pvps.0.pattern: its own words (and special tokens) are 12 tokens"),
    "`train.device: cuda` on a machine without CUDA (local runner)": (
        without_cuda(validate("train.device=cuda")), 2,
        "train.device: device 'cuda' was asked for, but CUDA is not available here"),
    "`ipet adapt` with `adapt.device: cuda` on a machine without CUDA": (
        without_cuda(adapt("adapt.device=cuda")), 2,
        "adapt.device: device 'cuda' was asked for, but CUDA is not available here"),
    "unknown device": (validate("train.device=tpu"), 2, "unknown device 'tpu'"),
    "run `name` with `../`, `/`": (validate("name=../escape"), 2, "name: String should match pattern"),
    "checkpoint needs its own code (unknown `model_type`)": (with_model(custom_code), 2, "trust_remote_code"),
    "weights only as `pytorch_model.bin` (pickle)": (with_model(pickled), 2, "has no safetensors weights"),
    # -- bad data
    "missing file": (validate(data_train={"path": "missing.csv"}), 2, "missing.csv: file not found"),
    "wrong delimiter": (with_train(BALANCED.replace(",", "\t")), 2, "is the delimiter right"),
    "non-UTF-8 bytes": (with_train("text,label\ncaf\xe9 great,pos\n".encode("latin-1")), 2, "line 2: not UTF-8 text"),
    "ragged CSV row": (with_train(BALANCED + "a film, it was great,pos\n"), 2, "1 malformed row(s)"),
    "a column named twice in a CSV header": (with_train(BALANCED.replace("text,label", "text,label,text")), 2,
                                             "bad.csv: column(s) ['text'] named more than once in the header"),
    "missing text column": (with_train(BALANCED.replace("text,label", "review,label")), 2, "missing column(s) ['text']"),
    "missing label column": (with_train(BALANCED.replace("text,label", "text,stars")), 2, "no 'label' column"),
    "empty or whitespace-only text": (with_train(BALANCED + '"   ",pos\n'), 2, "empty text in every input field"),
    "missing label (null, empty)": (with_train(BALANCED + "a fine film,\n"), 2, "no label at row id(s) ['41']"),
    "a column of lists/objects": (with_train(json.dumps({"text": ["a"], "label": "pos"}) + "\n", "lists.jsonl"), 2,
                                  "holds list<item: string> values, not text"),
    "a JSONL column changing type": (with_train('{"text": "a", "label": "pos"}\n{"text": 5, "label": "neg"}\n',
                                                "mixed.jsonl"), 2, "cannot read as jsonl"),
    "a JSONL row naming a key twice": (predicting('{"id": "r1", "text": "great"}\n{"id": "r2", "text": "bad", '
                                                  '"text": "fine"}\n', "new.jsonl"), 2,
                                       "new.jsonl: line 2: key 'text' given twice in one object"),
    "`ipet predict` input with column names and no rows": (predicting("id,text\n"), 2,
                                                            "new.csv: no rows to predict (column names only)"),
    "duplicate ids in an `ipet predict` input": (predicting("id,text\nr1,great\nr2,bad\nr3,fine\nr2,good\n"), 2,
                                                  "new.csv: rows 2 and 4 have the same id 'r2'; give each row its own id"),
    "empty unlabeled file": (lambda toy, tmp: (tmp / "empty.csv").write_text("text\n") and [
        "validate", config(toy, tmp, data_train=None, data_labeled_per_class=None, data_unlabeled={"path": str(
            tmp / "empty.csv")})], 2, "empty.csv: no rows"),
    "pool drawn empty": (validate(data_labeled_per_class=120, data_pool_size=None), 2,
                         "no rows left for the unlabeled pool"),
    "a pool mostly of the labeled set's own texts": (
        gold_and_pool(BALANCED, lines(48, lambda i: BALANCED.splitlines()[1 + i].rsplit(",", 1)[0]
                                      if i < 40 else f"another film {i}", "text"), ipet={"generations": 1, "growth": 2}),
        2, "needs 40 pseudo-labeled examples but the pool has 8 (48 rows, 40 of them texts of the labeled set"),
    "a row without an id (`id_column`)": (with_train(lines(4, lambda i: f"{'' if i == 2 else i},film {i},"
                                                             f"{'pos' if i % 2 else 'neg'}", "id,text,label"),
                                                       id_column="id"), 2, "bad.csv: no id in column 'id' at row(s) [3]"),
    "duplicate ids (`id_column`)": (with_train(lines(4, lambda i: f"dup,film {i},{'pos' if i % 2 else 'neg'}",
                                                     "id,text,label"), id_column="id"), 2, "duplicate id(s) ['dup']"),
    "`ipet suggest` (cloze) of labeled rows all of the same text": (
        lambda toy, tmp: ["suggest", with_train(lines(40, lambda i: f"the movie,{['neg', 'pos'][i % 2]}"))(toy, tmp)[1],
                          "--pool-sample", "20"], 2, "(the labeled rows' words at the mask do not set the labels apart)"),
    "`ipet suggest` (similarity) of a one-row pool": (
        lambda toy, tmp: (tmp / "pool.csv").write_text("text\nthe plot was great\n") and [
            "suggest", config(toy, tmp, learner="similarity", pvps=[{"pattern": "{text}"}] * 2, data_train=None,
                              data_labeled_per_class=None, data_pool_size=None,
                              data_unlabeled={"path": str(tmp / "pool.csv")},
                              data_labeled={"path": str(Path(toy["data"]["root"]) / "test.csv")})], 2,
        "2 candidate(s) for 2 labels (label names that are words, and terms in at least 2 of its rows); give a larger"),
    "a UTF-8 byte order mark, CRLF line ends": (with_train("\ufeff" + "".join(
        json.dumps({"text": f"film number {i} was {'great' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"})
        + "\r\n" for i in range(40)), name="bom.jsonl"), 0, "ok · labels"),
    "a 1 MB single text": (with_train(BALANCED + f"{'great film ' * 100_000},pos\n"), 0, "ok · labels"),
    "a UTF-16 file (Excel's \"Unicode Text\")": (with_train(BALANCED.encode("utf-16")), 2,
                                                "bad.csv: UTF-16 text, not UTF-8"),
    "a binary or compressed file as data": (with_train(gzip.compress(BALANCED.encode())), 2,
                                            "not csv text but a gzip-compressed file"),
    "a NUL byte in a text file": (with_train(BALANCED + "a \x00 film,pos\n"), 2, "line 42: a NUL byte"),
    # -- bad command line
    "config file not found": (lambda toy, tmp: ["validate", str(tmp / "nope.yaml")], 2, "config file not found"),
    "config file not YAML": (lambda toy, tmp: (tmp / "c.yaml").write_text("a: [") and ["validate", str(tmp / "c.yaml")],
                             2, "not valid YAML"),
    "config file empty (or only comments)": (lambda toy, tmp: (tmp / "c.yaml").write_text("# todo\n") and [
        "validate", str(tmp / "c.yaml")], 2, "c.yaml: the config file is empty (or only comments)"),
    "config file indented with a tab": (lambda toy, tmp: (tmp / "c.yaml").write_text("ipet:\n\tgenerations: 2\n") and [
        "validate", str(tmp / "c.yaml")], 2, "line 2, column 1: found character '\\t' that cannot start any token; "
                                             "indent with spaces"),
    "more arguments than the command takes": (lambda toy, tmp: ["validate", config(toy, tmp), "other.yaml"], 2,
                                              "ipet validate: error: unrecognized arguments: other.yaml"),
    "`--set` of a setting without a name (`data..root`)": (validate("data..root=x"), 2,
                                                            "--set data..root: a setting without a name between"),
    "a mistyped command or option": (lambda toy, tmp: ["run", config(toy, tmp), "--run_dir", str(tmp / "run")], 2,
                                     "ipet run: error: unknown option --run_dir; did you mean --run-dir?"),
    "unparsable `--set` value": (validate("pvps=[{"), 2, "--set 'pvps=[{': the value is not valid YAML"),
    "a key set twice (config or `--set`)": (lambda toy, tmp: (tmp / "c.yaml").write_text(
        Path(config(toy, tmp)).read_text() + "seeds: [2]\n") and ["validate", str(tmp / "c.yaml")], 2,
        "duplicate key 'seeds' (first set on line"),
    "a `--set` (or `--read`) key given twice": (validate("ipet.generations=1", "ipet.generations=2"), 2,
                                                 "--set ipet.generations: given twice ('ipet.generations=1', then "
                                                 "'ipet.generations=2'), and the last would silently replace"),
    "`--set` of a list item past the list's end": (validate("pvps.2.pattern='{mask} {text}'"), 2,
                                                    "--set pvps.2.pattern: '2' is not an index of a list of 2 item(s)"),
    "`--run-dir` naming a file": (lambda toy, tmp: ["run", config(toy, tmp), "--run-dir", a_file(tmp)], 2,
                                  "it is a file, not a directory"),
    "`ipet ingest` of a binary or compressed file": (lambda toy, tmp: ["ingest", gzipped(tmp), "--dataset", "d",
                                                                       "--store", str(tmp / "s"), "--config",
                                                                       config(toy, tmp)], 2, "gzip-compressed"),
    "`ipet ingest --store` naming a file, with `--config`": (
        lambda toy, tmp: ["ingest", str(Path(toy["data"]["root"]) / "train.csv"), "--dataset", "d", "--store",
                          a_file(tmp), "--config", config(toy, tmp)], 2, "is a file, not a directory"),
    "`ipet ingest --store` naming a file, without `--config`": (
        lambda toy, tmp: ["ingest", str(Path(toy["data"]["root"]) / "train.csv"), "--dataset", "d", "--store",
                          a_file(tmp)], 2, "is a file, not a directory"),
    "`ipet ingest --config` whose `data.test` holds other texts than the dataset's test set": (
        other_test_set, 2, "other.csv) is not the test set of dataset 'd' ("),
    "unparsable `--read` value": (lambda toy, tmp: ["ingest", "x.csv", "--dataset", "d", "--read", "rows=[0,"], 2,
                                  "--read 'rows=[0,': the value is not valid YAML"),
    "`ipet ingest --read path=…` (a second file)": (
        lambda toy, tmp: ["ingest", str(Path(toy["data"]["root"]) / "train.csv"), "--dataset", "d", "--store",
                          str(tmp / "s"), "--config", config(toy, tmp), "--read", "path=other.csv"], 2,
        "train.csv: read option path: the file to ingest is the FILE argument; drop --read path"),
    "`ipet ingest --read` option out of range": (
        lambda toy, tmp: ["ingest", str(Path(toy["data"]["root"]) / "train.csv"), "--dataset", "d", "--store",
                          str(tmp / "s"), "--config", config(toy, tmp), "--read", "rows=[5,2]"], 2,
        "train.csv: read option (all): rows must be [start, stop) with 0 <= start < stop, got [5, 2]"),
    "`ipet predict --output` naming a directory": (
        lambda toy, tmp: ["predict", "--model", toy["model"], "--input", str(Path(toy["data"]["root"]) / "test.csv"),
                          "--output", str(tmp)], 2, "is a directory; give a file name"),
    "`ipet predict --output` naming the `--input`": (
        lambda toy, tmp: ["predict", "--model", toy["model"], "--input", str(Path(toy["data"]["root"]) / "test.csv"),
                          "--output", str(Path(toy["data"]["root"]) / "test.csv")], 2, "is the input file"),
    "`ipet predict --output` named `.csv` (or `.tsv`, `.jsonl`)": (
        lambda toy, tmp: ["predict", "--model", toy["model"], "--input", str(Path(toy["data"]["root"]) / "test.csv"),
                          "--output", str(tmp / "preds.csv")], 2, "preds.csv: the file is written as parquet, not csv"),
    "`ipet predict --batch-size 0`": (lambda toy, tmp: ["predict", "--model", "m", "--input", "i.csv", "--output",
                                                        "o.parquet", "--batch-size", "0"], 2, "must be at least 1"),
    "`ipet predict --device` naming no device": (
        lambda toy, tmp: [*predicting("text\nit was great\n")(toy, tmp), "--device", "mps"], 2,
        "ipet predict: --device: unknown device 'mps': use auto, cpu, cuda or cuda:N"),
    "`ipet predict --input` missing": (lambda toy, tmp: ["predict", "--model", "m", "--input", str(tmp / "i.csv"),
                                                         "--output", str(tmp / "o.parquet")], 2, "file not found"),
    "`ipet predict --model champion` without an MLflow store": (
        lambda toy, tmp: ["predict", "--model", "champion", "--input", str(Path(toy["data"]["root"]) / "test.csv"),
                          "--output", str(tmp / "o.parquet"), "--tracking-uri", f"sqlite:///{tmp}/none.db"], 2,
        "no MLflow store at"),
    "`ipet predict --model` a `models:/` URI that names no version": (
        lambda toy, tmp: ["predict", "--model", "models:/ipet-toy/champion", "--input",
                          str(Path(toy["data"]["root"]) / "test.csv"), "--output", str(tmp / "o.parquet")], 2,
        "models:/ipet-toy/champion: 'champion' is not a version number, 'latest' or a stage; an alias is written "
        "models:/ipet-toy@champion"),
    "`ipet predict --model` misspelled": (
        lambda toy, tmp: ["predict", "--model", "model:/ipet-toy@champion", "--input",
                          str(Path(toy["data"]["root"]) / "test.csv"), "--output", str(tmp / "o.parquet")], 2,
        "did you mean models:/ipet-toy@champion?"),
    "`ipet predict --tracking-uri` of a server that does not answer": (
        lambda toy, tmp: ["predict", "--model", "champion", "--input", str(Path(toy["data"]["root"]) / "test.csv"),
                          "--output", str(tmp / "o.parquet"), "--tracking-uri", "http://127.0.0.1:9"], 2,
        "MLflow tracking server 'http://127.0.0.1:9' is not reachable"),
    "`ipet suggest --out` naming a directory, or `--expand` below 0": (
        lambda toy, tmp: ["suggest", config(toy, tmp), "--out", str(tmp)], 2, "is a directory; give a file name"),
    "`ipet suggest` of a config using one pattern in more PVPs than its words go round": (
        lambda toy, tmp: ["suggest", config(toy, tmp, pvps=[{"pattern": "{text} it was {mask} ."}] * 2), "--top", "12",
                          "--pool-sample", "20"], 2,
        # which labels run out of words depends on the tiny model's random weights; that pvps.1 is named does not
        "pvps.1: pattern '{text} it was {mask} .': no word scores best for label(s) ['"),
    "`ipet suggest --out` naming the config itself": (
        lambda toy, tmp: ["suggest", config(toy, tmp), "--out", str(tmp / "config.yaml")], 2,
        "config.yaml: is the config itself, which would lose its comments and verbalizer"),
    "`ipet suggest` of a config with `learner: classifier`": (
        lambda toy, tmp: ["suggest", config(toy, tmp, learner="classifier", data_train={"path": "missing.csv"})], 2,
        "ipet suggest: learner: classifier has no verbalizer to suggest; use similarity or cloze"),
    "`ipet suggest` of a config whose model does not exist": (
        lambda toy, tmp: ["suggest", config(toy, tmp, model="/nonexistent/model")], 2,
        "config.yaml: model: '/nonexistent/model' does not exist"),
    "`ipet answer` of the sheet as written (no label filled in)": (answered(("1", ""), ("2", "")), 2,
                                                                    "sheet.csv: no label filled in"),
    "`ipet answer` of a sheet answering a row twice": (answered(("1", "pos"), ("1", "neg")), 2,
                                                        "sheet.csv: duplicate id(s) ['1']; answer each asked row once"),
    "`ipet answer` of a sheet kept from an earlier question (`ask/<stage>-earlier-<hash>.csv`)": (
        answered_earlier, 2, "answers the question asked after pet at 2026-01-01T00:00:00+00:00, not the one the run "
                             "stopped with last (asked at 2026-01-02T00:00:00+00:00), so the next run would not use"),
    "`ipet answer` of a mistyped label": (answered(("1", "pso"), ("2", "pos")), 2,
                                          "label 'pso' is not one of ['neg', 'pos', 'skip']; did you mean 'pos'?"),
    "`ipet answer` of a run directory that asked nothing (or does not exist)": (
        lambda toy, tmp: [*answered(("1", "pos"))(toy, tmp)[:1], str(tmp / "elsewhere"), str(tmp / "sheet.csv")], 2,
        "elsewhere: no question was asked there"),
    "`ipet gc` of a folder with another tool's `results.json`": (
        foreign_results("gc"), 2, "other/results.json: no stages in it, so not the results of `ipet run`"),
    "`ipet predict --model` of a folder with another tool's `results.json`": (
        foreign_results("predict"), 2, "other/results.json: no stages in it, so not the results of `ipet run`"),
    # -- faults a user can cause
    "MLflow server unreachable (`http://127.0.0.1:9`)": (validate("tracking.mlflow_uri=http://127.0.0.1:9"), 2,
                                                         "is not reachable"),
    "`runner.address` where no Ray cluster answers (`ray://127.0.0.1:1`)": (
        on_ray("ray://127.0.0.1:1"), 2, "runner.address: ray://127.0.0.1:1: no Ray cluster answers at 127.0.0.1:1 ("),
    "`runner.address: auto` and no Ray cluster on this node": (
        on_ray("auto"), 2, "runner.address: auto: no Ray cluster runs on this node"),
    "SQLite store unusable": (lambda toy, tmp: validate(f"tracking.mlflow_uri=sqlite:///{a_file(tmp)}/m.db")(toy, tmp),
                              2, "cannot create files in"),
    "run directory not writable / not a directory": (
        lambda toy, tmp: ["run", config(toy, tmp), "--run-dir", f"{a_file(tmp)}/run"], 1, "Not a directory"),
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return toy_run_config(tmp_path_factory.mktemp("matrix-toy"))


@pytest.mark.parametrize("case", list(CASES))
def test_every_mistake_is_one_clear_line_never_a_traceback(toy, tmp_path, capfd, monkeypatch, case):
    build, code, says = CASES[case]
    monkeypatch.chdir(tmp_path)
    argv = build(toy, tmp_path)
    capfd.readouterr()
    try:
        exited = main(argv)
    except SystemExit as err:  # the command line's parser
        exited = err.code
    assert exited == code
    out, err = capfd.readouterr()
    assert says in (out if code == 0 else err) and "Traceback" not in out + err, err
    assert all(c.isprintable() or c in "\n\t" for c in err), "no raw bytes echoed"


def documented() -> dict[str, tuple[str, str]]:
    """Every table row of the doc: case -> (section, section heading's exit code, if it states one)."""
    rows, section, code = {}, "", ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:]
            found = re.search(r"exit (\d+)", section)
            code = found.group(1) if found else ""
        elif line.startswith("| ") and not line.startswith(("| case", "|---")):
            rows[line.split(" | ")[0].removeprefix("| ").strip()] = (section, code)
    return rows


def test_the_doc_lists_every_case_and_every_documented_mistake_is_fed():
    rows = documented()
    fed = {case for case, (section, _) in rows.items() if section.startswith(FED)}
    assert sorted(fed - set(CASES)) == [], "documented, not fed through the CLI here"
    assert sorted(set(CASES) - set(rows)) == [], "fed here, not in docs/reliability.md"
    wrong = {case: (code, CASES[case][1]) for case, (_, code) in rows.items()  # 0: a documented "accepted"
             if case in CASES and code and CASES[case][1] not in (0, int(code))}
    assert wrong == {}, "the exit code the doc's section states"
