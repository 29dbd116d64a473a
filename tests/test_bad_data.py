"""Bad data, bad models and untrusted inputs, through ``ipet validate``: one line per problem naming
the file and row (or the field), exit 2, no traceback, nothing written. Good variants of the same
inputs are accepted, so each check is shown to tell bad from good."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from flows.cli import main
from tiny import save_tiny, toy_run_config


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return toy_run_config(tmp_path_factory.mktemp("bad-data-toy"))


@pytest.fixture(scope="module")
def rows(toy: dict) -> list[tuple[str, str]]:
    lines = (Path(toy["data"]["root"]) / "train.csv").read_text().splitlines()[1:]
    return [tuple(line.rsplit(",", 1)) for line in lines]


def validate(config: dict, tmp_path: Path, capsys: pytest.CaptureFixture, *overrides: str) -> tuple[int, str, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["validate", str(path), *[a for o in overrides for a in ("--set", o)]])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "validate writes nothing"
    return code, out, err


def with_train(toy: dict, path: Path, test: Path | None = None, **source) -> dict:
    data = {**toy["data"], "train": {"path": str(path), **source}}
    if test is not None:
        data["test"] = {"path": str(test)}
    return {**toy, "data": data}


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- files and columns ----------------------------------------------------------------------------

def test_missing_text_column(toy, rows, tmp_path, capsys):
    path = jsonl(tmp_path / "review.jsonl", [{"review": t, "label": lab} for t, lab in rows])
    code, _, err = validate(with_train(toy, path), tmp_path, capsys)
    assert code == 2 and "review.jsonl: missing column(s) ['text'] that the patterns use" in err
    assert "(columns: ['review', 'label'])" in err
    code, _, _ = validate(with_train(toy, path, rename={"review": "text"}), tmp_path, capsys)
    assert code == 0


def test_missing_label_column(toy, rows, tmp_path, capsys):
    path = jsonl(tmp_path / "nolabel.jsonl", [{"text": t, "y": lab} for t, lab in rows])
    code, _, err = validate(with_train(toy, path), tmp_path, capsys)
    assert code == 2 and "nolabel.jsonl: no 'label' column (columns: ['text', 'y']; set label_column: or rename:)" in err
    assert validate(with_train(toy, path, label_column="y"), tmp_path, capsys)[0] == 0


@pytest.mark.parametrize("header", ["Label", " label", "labels"])
def test_a_label_column_named_nearly_label_is_named_with_the_setting_that_reads_it(toy, rows, tmp_path, capsys,
                                                                                   header):
    """``Label`` from a spreadsheet, `` label`` after a ``, `` separator: the message said only that there is
    no 'label' column; it names the column meant and the setting, which then reads the file."""
    path = tmp_path / "near.csv"
    path.write_text(f"text,{header}\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    code, _, err = validate(with_train(toy, path), tmp_path, capsys)
    assert code == 2 and f"near.csv: no 'label' column (columns: ['text', {header!r}]; set label_column: {header!r})" \
        in err, err
    assert validate(with_train(toy, path, label_column=header), tmp_path, capsys)[0] == 0


def test_wrong_delimiter_names_the_columns_it_found(toy, rows, tmp_path, capsys):
    path = tmp_path / "tabs.csv"
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows))
    code, _, err = validate(with_train(toy, path), tmp_path, capsys)
    assert code == 2 and "tabs.csv: missing column(s) ['text']" in err and "'text\\tlabel'" in err
    assert "delimiter" in err
    assert validate(with_train(toy, path, format="tsv"), tmp_path, capsys)[0] == 0


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_file_is_named_as_such_not_as_binary(toy, rows, tmp_path, capsys, encoding):
    """Excel's "Unicode Text" export is a UTF-16 TSV: it was refused as "a NUL byte, so a binary file"."""
    path = tmp_path / "excel.tsv"
    text = "text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows)
    path.write_bytes(("\ufeff" if encoding == "utf-16-be" else "").encode(encoding) + text.encode(encoding))
    code, _, err = validate(with_train(toy, path), tmp_path, capsys)
    wide = encoding[:6].upper()
    assert code == 2 and err.endswith(f"excel.tsv: {wide} text, not UTF-8 (Excel's \"Unicode Text\" is UTF-16); save "
                                      "the file as UTF-8 (Excel: CSV UTF-8)\n"), err
    path.write_text(text)
    assert validate(with_train(toy, path), tmp_path, capsys)[0] == 0


def test_list_valued_text_is_refused_not_crashed(toy, rows, tmp_path, capsys):
    path = jsonl(tmp_path / "lists.jsonl", [{"text": [t], "label": lab} for t, lab in rows])
    code, _, err = validate(with_train(toy, path), tmp_path, capsys)
    assert code == 2 and "lists.jsonl: column 'text' holds list<item: string> values, not text" in err


def test_mixed_types_in_a_column_name_the_row(toy, rows, tmp_path, capsys):
    records = [{"text": t, "label": lab} for t, lab in rows]
    records[3]["text"] = 5
    path = jsonl(tmp_path / "mixed.jsonl", records)
    code, _, err = validate(with_train(toy, path), tmp_path, capsys)
    assert code == 2 and ("mixed.jsonl: line 4: cannot read as jsonl: column 'text' holds a number here but a string "
                          "on line 1") in err


@pytest.mark.parametrize("slot", ["labeled", "unlabeled"])
def test_a_jsonl_key_given_twice_is_refused_in_the_labeled_set_and_the_pool(toy, rows, tmp_path, capsys, slot):
    """``{"text": "a", "text": "b"}`` was read as the text "b", its "a" dropped without a word: both sets
    are read by one reader, which names the file, the line and the key; the same files without it pass."""
    records = {"labeled": [{"text": t, "label": lab} for t, lab in rows[:8]],
               "unlabeled": [{"text": t} for t, _ in rows[8:]]}
    paths = {name: jsonl(tmp_path / f"{name}.jsonl", found) for name, found in records.items()}
    config = {**toy, "data": {"root": toy["data"]["root"], "test": {"path": "test.csv"},
                              **{name: {"path": str(path)} for name, path in paths.items()}}}
    assert validate(config, tmp_path, capsys)[0] == 0
    lines = paths[slot].read_text().splitlines()
    lines[2] = lines[2][:-1] + ', "text": "another film"}'
    paths[slot].write_text("\n".join(lines) + "\n")
    code, _, err = validate(config, tmp_path, capsys)
    assert code == 2 and err == (f"{tmp_path / 'config.yaml'}: {paths[slot]}: line 3: key 'text' given twice in one "
                                 "object, so one of its values would be dropped without a word; keep one\n"), err


# --- labels: what types are accepted --------------------------------------------------------------

@pytest.mark.parametrize(("value", "verbalizer"), [
    (lambda pos: int(pos), {0: "bad", 1: "great"}),            # ints, YAML int keys
    (lambda pos: float(pos), {0: "bad", 1: "great"}),          # 1.0 in the data is the label 1
    (lambda pos: float(pos), {0.0: "bad", 1.0: "great"}),      # and so is a YAML key 1.0
    (lambda pos: str(int(pos)), {0: "bad", 1: "great"}),       # strings "0"/"1" against int keys
    (lambda pos: bool(pos), {False: "bad", True: "great"}),    # booleans on both sides
], ids=["int", "float-data", "float-keys", "string-data", "bool"])
def test_typed_labels_match_by_their_text(toy, rows, tmp_path, capsys, value, verbalizer):
    records = [{"text": t, "label": value(lab == "pos")} for t, lab in rows]
    path = jsonl(tmp_path / "typed.jsonl", records)
    test = jsonl(tmp_path / "typed-test.jsonl", [{**r, "text": f"held out {r['text']}"} for r in records[:10]])
    code, out, err = validate({**with_train(toy, path, test=test), "verbalizer": verbalizer}, tmp_path, capsys)
    assert code == 0, err
    assert "'labeled': 8" in out


@pytest.mark.parametrize(("written", "verbalizer"), [
    (("0.0", "1.0"), {0: "bad", 1: "great"}),            # a CSV's 1.0 is the label 1
    (("0", "1e0"), {0.0: "bad", 1.0: "great"}),          # any way of writing the number
    (("False", "TRUE"), {False: "bad", True: "great"}),  # a boolean in any case
    (("neg", "pos"), {"neg": "bad", "pos": "great"}),    # words as they are
], ids=["float", "exponent", "bool", "words"])
def test_csv_labels_match_the_verbalizer_as_the_numbers_they_write(toy, rows, tmp_path, capsys, written, verbalizer):
    """A CSV's values are read as written (its texts and ids must be); its labels are matched to the
    verbalizer's as numbers or booleans where they are not one of its labels as written."""
    path = tmp_path / "numbers.csv"
    path.write_text("text,label\n" + "".join(f"{t},{written[lab == 'pos']}\n" for t, lab in rows))
    test = tmp_path / "numbers-test.csv"
    test.write_text("text,label\n" + "".join(f"held out {t},{written[lab == 'pos']}\n" for t, lab in rows[:10]))
    code, out, err = validate({**with_train(toy, path, test=test), "verbalizer": verbalizer}, tmp_path, capsys)
    assert code == 0 and "'labeled': 8" in out, err


def test_labels_with_surrounding_spaces_are_the_labels(toy, rows, tmp_path, capsys):
    """A sheet saved with ", " between its cells (``great film, pos``): every label was refused as
    `label(s) [' neg', ' pos'] not in the verbalizer`; trimmed, each is its label, and so is ``1 `` a number."""
    from data.prepare import DataConfig, load_sets

    path = tmp_path / "spaced.csv"
    path.write_text("text, label\n" + "".join(f"{t}, {lab}\n" for t, lab in rows))
    test = tmp_path / "spaced-test.csv"
    test.write_text("text,label\n" + "".join(f"held out {t},{'1 ' if lab == 'pos' else ' 0'}\n" for t, lab in rows[:10]))
    config = with_train(toy, path, label_column=" label")
    code, out, err = validate(config, tmp_path, capsys)
    assert code == 0 and "'labeled': 8" in out, err
    sets, _ = load_sets(DataConfig.model_validate(config["data"]), ["text"], ["neg", "pos"])
    assert sorted(sets["labeled"]["label"].to_pylist()) == ["neg"] * 4 + ["pos"] * 4
    assert set(sets["pool"]["hidden_label"].to_pylist()) == {"neg", "pos"}
    numbers = DataConfig(train={"path": str(test)}, labeled_per_class=4)
    assert sorted(load_sets(numbers, ["text"], ["0", "1"])[0]["labeled"]["label"].to_pylist()) == ["0"] * 4 + ["1"] * 4


def test_a_label_two_verbalizer_keys_could_mean_is_named(toy, rows, tmp_path, capsys):
    """``1.00`` is the number of both ``1`` and ``1.0``: which label it means is not ours to guess."""
    path = tmp_path / "two.csv"
    path.write_text("text,label\n" + "".join(f"{t},{'1.00' if lab == 'pos' else '1'}\n" for t, lab in rows))
    code, _, err = validate({**with_train(toy, path), "verbalizer": {"1": "bad", "1.0": "great"}}, tmp_path, capsys)
    assert code == 2 and "two.csv: label(s) ['1.00'] not in the verbalizer (labels: ['1', '1.0']) at row id(s) " \
                          "['2', '4', " in err, err


def test_labels_that_match_no_verbalizer_key_are_named(toy, rows, tmp_path, capsys):
    records = [{"text": t, "label": 1.5 if lab == "pos" else 0} for t, lab in rows]
    path = jsonl(tmp_path / "half.jsonl", records)
    config = {**with_train(toy, path), "verbalizer": {0: "bad", 1: "great"}}
    code, _, err = validate(config, tmp_path, capsys)
    assert code == 2 and "half.jsonl: label(s) ['1.5'] not in the verbalizer (labels: ['0', '1'])" in err
    assert "at row id(s) ['2', '4'," in err


def test_labels_written_in_other_capitals_are_named_with_why(toy, rows, tmp_path, capsys):
    """``NEG``/``POS`` against a verbalizer of ``neg``/``pos``: refused (two labels may differ only by case), and
    the line says that the case is the difference, which the bare list of labels left to the eye."""
    path = tmp_path / "caps.csv"
    path.write_text("text,label\n" + "".join(f"{t},{lab.upper()}\n" for t, lab in rows))
    code, _, err = validate(with_train(toy, path), tmp_path, capsys)
    assert code == 2 and ("caps.csv: label(s) ['NEG', 'POS'] not in the verbalizer (labels: ['neg', 'pos']; labels are "
                          "matched with their case: 'NEG' is not 'neg') at row id(s) ['1', '2',") in err, err
    test = tmp_path / "caps-test.csv"
    test.write_text("text,label\n" + "".join(f"held out {t},{lab.upper()}\n" for t, lab in rows[:10]))
    config = {**with_train(toy, path, test=test), "verbalizer": {"NEG": "bad", "POS": "great"}}
    assert validate(config, tmp_path, capsys)[0] == 0


def test_missing_labels_are_named(toy, rows, tmp_path, capsys):
    records = [{"text": t, "label": None if i in (3, 9) else lab} for i, (t, lab) in enumerate(rows)]
    path = jsonl(tmp_path / "nulls.jsonl", records)
    code, _, err = validate(with_train(toy, path), tmp_path, capsys)
    assert code == 2 and "nulls.jsonl: no label at row id(s) ['4', '10']" in err
    assert "not in the verbalizer" not in err


def test_verbalizer_label_absent_from_the_data(toy, rows, tmp_path, capsys):
    extra = {"verbalizer": {"neg": "bad", "pos": "great", "meh": "fine"}}
    code, _, err = validate({**toy, **extra}, tmp_path, capsys)
    assert code == 2 and "train.csv: label 'meh' has 0 examples, fewer than labeled_per_class=4" in err
    (tmp_path / "few.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows[:8]))
    config = {**toy, **extra, "data": {"labeled": {"path": str(tmp_path / "few.csv")},
                                       "unlabeled": {"path": str(Path(toy["data"]["root"]) / "train.csv")}}}
    code, _, err = validate(config, tmp_path, capsys)
    assert code == 2 and "few.csv: no examples of label(s) ['meh']" in err


def test_a_file_of_one_class_is_refused_with_either_verbalizer(toy, rows, tmp_path, capsys):
    """A labeled file of one class: with both labels in the verbalizer the other is named; with only its
    own label the run was accepted, every prediction that label at probability 1."""
    path = tmp_path / "neg.csv"
    path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows if lab == "neg"))
    code, _, err = validate(with_train(toy, path), tmp_path, capsys)
    assert code == 2 and "neg.csv: label 'pos' has 0 examples, fewer than labeled_per_class=4" in err
    code, _, err = validate({**with_train(toy, path), "verbalizer": {"neg": "bad"}}, tmp_path, capsys)
    assert code == 2 and err.endswith("verbalizer: one label ['neg']; a classifier chooses between labels, so give "
                                      "at least two\n"), err


def test_a_gold_text_under_two_labels_is_reported(toy, rows, tmp_path, capsys):
    """The same text labeled neg in one row and pos in another (annotators who disagreed): both were
    trained on without a word, as ``ipet ingest`` already reports them; now a warning names the rows."""
    gold = [f"{t},{lab}" for t, lab in rows[:8]] + [f"  {rows[0][0]},{'pos' if rows[0][1] == 'neg' else 'neg'}",
                                                     f"{rows[1][0]},{rows[1][1]}"]
    (tmp_path / "gold.csv").write_text("text,label\n" + "\n".join(gold) + "\n")
    config = {**toy, "data": {"root": toy["data"]["root"], "labeled": {"path": str(tmp_path / "gold.csv")},
                              "unlabeled": {"path": "train.csv"}}}
    code, out, err = validate(config, tmp_path, capsys)
    assert code == 0, err
    assert (f"{tmp_path / 'gold.csv'}: 1 text(s) of the labeled set stand under two labels or more, at row id(s) "
            "['1', '9']; every model trains on each of those rows: keep the right label") in out, out
    (tmp_path / "gold.csv").write_text("text,label\n" + "\n".join(gold[:8] + gold[9:]) + "\n")  # a repeat agrees
    assert "two labels" not in validate(config, tmp_path, capsys)[1]


# --- pool and ids ---------------------------------------------------------------------------------

def test_empty_unlabeled_pool_file(toy, rows, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("text\n")
    (tmp_path / "few.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows[:8]))
    config = {**toy, "data": {"labeled": {"path": str(tmp_path / "few.csv")},
                              "unlabeled": {"path": str(tmp_path / "empty.csv")}}}
    code, _, err = validate(config, tmp_path, capsys)
    assert code == 2 and "empty.csv: no rows" in err


def test_pool_drawn_empty(toy, tmp_path, capsys):
    code, _, err = validate(toy, tmp_path, capsys, "data.labeled_per_class=120")
    assert code == 2 and "train.csv: no rows left for the unlabeled pool after drawing labeled_per_class=120" in err


def test_pool_rows_that_are_gold_texts_do_not_count_toward_a_generation(toy, rows, tmp_path, capsys):
    """A gold text in the pool is never pseudo-labeled, so a pool of mostly the labeled file's own texts
    cannot fill a generation: the check counted them and passed, and the run trained on the gold set
    alone (its only sign a warning in the task's log)."""
    (tmp_path / "gold.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows[:12]))
    (tmp_path / "pool.csv").write_text("text\n" + "".join(f"{t}\n" for t, _ in rows[:18]))
    config = {**toy, "ipet": {"generations": 1, "growth": 2},
              "data": {"labeled": {"path": str(tmp_path / "gold.csv")}, "unlabeled": {"path": str(tmp_path / "pool.csv")}}}
    code, _, err = validate(config, tmp_path, capsys)
    assert code == 2 and ("ipet.growth/ipet.generations: generation 1 needs 12 pseudo-labeled examples but the pool "
                          "has 6 (18 rows, 12 of them texts of the labeled set, which are never pseudo-labeled)") in err
    (tmp_path / "pool.csv").write_text("text\n" + "".join(f"{t}\n" for t, _ in rows[:24]))
    assert validate(config, tmp_path, capsys)[0] == 0


def test_duplicate_ids(toy, rows, tmp_path, capsys):
    records = [{"id": f"r{i}", "text": t, "label": lab} for i, (t, lab) in enumerate(rows)]
    records[7]["id"] = records[2]["id"] = "dup"
    path = jsonl(tmp_path / "ids.jsonl", records)
    code, _, err = validate(with_train(toy, path, id_column="id"), tmp_path, capsys)
    assert code == 2 and "ids.jsonl: duplicate id(s) ['dup']" in err
    records[7]["id"] = "r7"
    assert validate(with_train(toy, jsonl(path, records), id_column="id"), tmp_path, capsys)[0] == 0


@pytest.mark.parametrize("blank", ['null', '""', '"  "'])
def test_a_row_without_an_id_is_named(toy, rows, tmp_path, capsys, blank):
    """An ``id_column`` cell left empty (or null) was accepted as the id ``''`` (None): leaks, asked rows and a
    person's answers name rows by id; a second such row was then reported as the "duplicate id ['']"."""
    records = [{"id": f"r{i}", "text": t, "label": lab} for i, (t, lab) in enumerate(rows)]
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps(r).replace('"r3"', blank).replace('"r9"', blank) + "\n" for r in records))
    code, _, err = validate(with_train(toy, path, id_column="id"), tmp_path, capsys)
    assert code == 2 and err.endswith("ids.jsonl: no id in column 'id' at row(s) [4, 10]; give every row an id, or "
                                      "leave out id_column to number the rows\n"), err
    assert validate(with_train(toy, path), tmp_path, capsys)[0] == 0


def test_megabyte_text_is_truncated_not_fatal(toy, rows, tmp_path, capsys):
    """A 1 MB text reads, validates, and labels as max_length tokens, in seconds."""
    from prompt_core import LearnerSpec, build_learner, predict_logits
    from flows.config import RunConfig

    huge = ("a really great film " * 60_000)[:1_000_000]
    lines = ["text,label", f"{huge},pos"] + [f"{t},{lab}" for t, lab in rows]
    path = tmp_path / "huge.csv"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = validate(with_train(toy, path), tmp_path, capsys)
    assert code == 0, err
    config = RunConfig.model_validate(toy)
    learner = build_learner(LearnerSpec.cloze(config.model, config.pvp(0), max_length=config.max_length))
    encoded = learner.featurize([{"text": huge}])[0]["input_ids"]
    assert len(encoded) == config.max_length
    started = time.perf_counter()
    logits = next(iter(predict_logits(learner, [{"text": huge}, {"text": "short"}], batch_size=2, device="cpu")))
    assert logits.shape == (2, 2) and torch.isfinite(torch.as_tensor(logits)).all()
    assert time.perf_counter() - started < 60


# --- models: not a masked LM, pickles, remote code --------------------------------------------------

def test_model_dir_without_config(toy, tmp_path, capsys):
    code, _, err = validate(toy, tmp_path, capsys, f"model={toy['data']['root']}")
    assert code == 2 and "model: cannot load a tokenizer from" in err


def test_model_that_is_not_a_masked_lm(toy, tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = save_tiny("bert", tmp_path / "gpt2")  # a tokenizer with a mask token, then a causal LM
    GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=1, n_head=2)).save_pretrained(directory)
    code, _, err = validate(toy, tmp_path, capsys, f"model={directory}")
    assert code == 2 and "is a 'gpt2' model, not a masked LM cloze scoring supports (bert, roberta" in err


def test_pickle_weights_are_never_loaded(toy, tmp_path, capsys):
    from prompt_core import BackboneError
    from prompt_core.backbone import load_masked_lm
    from transformers import AutoModelForMaskedLM

    directory = save_tiny("bert", tmp_path / "pickled")
    state = AutoModelForMaskedLM.from_pretrained(directory).state_dict()
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")
    code, _, err = validate(toy, tmp_path, capsys, f"model={directory}")
    assert code == 2 and "has no safetensors weights, only pickle files ['pytorch_model.bin'], which are never loaded" in err
    with pytest.raises(BackboneError, match="no file named model.safetensors"):
        load_masked_lm(str(directory))  # the loader itself refuses, validate or not


@pytest.mark.parametrize("model_type", ["bert", "custom-evil"])
def test_remote_code_stays_inert(toy, tmp_path, capsys, model_type):
    """A checkpoint that ships code (``auto_map``) never runs it unless trust_remote_code is set."""
    directory = save_tiny("bert", tmp_path / "remote")
    marker = tmp_path / "code-ran"
    config = json.loads((directory / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "evil.EvilConfig",
                                                   "AutoModelForMaskedLM": "evil.EvilModel",
                                                   "AutoTokenizer": ["evil.EvilTokenizer", None]})
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    code, _, err = validate(toy, tmp_path, capsys, f"model={directory}")
    assert not marker.exists()
    if model_type == "bert":
        assert code == 0, err  # the built-in class is used; the shipped code is ignored
    else:
        assert code == 2 and "model:" in err and "trust_remote_code" in err
    from flows.config import RunConfig

    assert RunConfig.model_validate(toy).trust_remote_code is False  # off unless the config says so
