"""``ipet suggest``: the scores find a planted label word, the config it writes validates, and with no
labeled examples it still ranks candidates from the pool (and says that this is weaker)."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from flows.cli import main
from flows.suggest import SCORED, ZERO_LABEL_NOTE
from prompt_core.choice import (Candidate, Scores, SuggestError, centroid_offsets, choose, folds, likelihood_ratios,
                                principal_axes, shortlist, top_words)
from prompt_core.terms import terms
from tiny import save_tiny, toy_run_config


def test_likelihood_ratio_ranks_a_planted_separating_word_first() -> None:
    """Word 7 is likely at the mask for label 1's rows only; PETAL's ratio puts it first for label 1,
    though word 3 is likelier still for every row (the pool background keeps it off the shortlist)."""
    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1, 2], 10)

    def log_probs(rows_targets: np.ndarray) -> np.ndarray:
        logits = rng.normal(size=(len(rows_targets), 50))
        logits[:, 3] += 4.0
        logits[rows_targets == 1, 7] += 3.0
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    pool_targets = rng.integers(0, 3, 200)
    ratios = likelihood_ratios(log_probs(targets), targets, 3, log_probs(pool_targets), shortlist=10)
    assert int(np.argmax(ratios[1])) == 7
    assert top_words(ratios, 3)[1][0] == 7
    assert 7 not in top_words(ratios, 3)[0] + top_words(ratios, 3)[2]  # a word stands for one label only
    assert 7 not in top_words(ratios, 3, excluded=frozenset({7}))[1]


def test_the_shortlist_puts_a_planted_phrase_along_a_labels_direction_first() -> None:
    """Label 1's rows lean along dimension 7; the phrase pointing there (candidate 3) heads label 1's
    shortlist, is kept from label 0's, and the terms a phrase is made of are content words."""
    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1], 10)
    rows = rng.normal(size=(20, 16))
    rows[targets == 1, 7] += 3.0
    phrases = rng.normal(size=(6, 16)) * 0.3
    phrases[3, 7] = 2.0
    association = centroid_offsets(rows, [np.flatnonzero(targets == l) for l in (0, 1)]) @ phrases.T
    short = shortlist(association, 2)
    assert short[1][0] == 3 and 3 not in short[0]
    assert 3 not in shortlist(association, 2, excluded=frozenset({3}))[1]
    pool = rng.normal(size=(100, 16)) * 0.1  # the pool varies along dimension 7 above all: its first axis
    pool[:, 7] += rng.normal(size=100) * 3.0
    axes = principal_axes(pool, 1)
    assert abs(axes[0, 7]) > 0.9
    along = centroid_offsets(rows, [np.flatnonzero(targets == l) for l in (0, 1)]) @ axes.T @ axes
    assert shortlist(along @ phrases.T, 2)[1][0] == 3
    assert terms("The world cup of the year", 2) == {"world", "cup", "year", "world cup"}


def test_folds_hold_every_label_in_turn() -> None:
    targets = [0, 1, 1, 0, 0, 1, 0, 1, 0, 1]
    found = folds(targets, 5)
    assert sorted(np.concatenate(found).tolist()) == list(range(10))
    assert all(sorted(targets[i] for i in f) == [0, 1] for f in found)


def test_choose_prefers_the_separating_phrase_and_breaks_ties_by_balance() -> None:
    """Two labels; candidate 1 separates the labeled rows perfectly, candidate 0 does not; on a tie
    in accuracy (candidates 2 and 3), the one that spreads the pool over both classes wins."""
    targets = [0, 0, 1, 1]
    labeled = np.array([[0.1, 0.9, 0.5, 0.5], [0.9, 0.8, 0.5, 0.5], [0.5, 0.2, 0.1, 0.1], [0.5, 0.1, 0.1, 0.1]])
    pool = np.array([[0.5, 0.6, 0.9, 0.1], [0.5, 0.4, 0.1, 0.1], [0.5, 0.9, 0.9, 0.1], [0.5, 0.1, 0.1, 0.1]])
    candidates = [Candidate(0, "a", "term"), Candidate(0, "b", "term"), Candidate(1, "c", "term"),
                  Candidate(1, "d", "term")]
    labeled[:, 2:] = 0.5  # label 1's candidates: the same on the labeled rows (a tie)...
    pool[:, 2] = 0.5  # ...but c gives the pool's second half to label 1, d none of it
    choice, fits = choose(Scores(labeled, pool), candidates, targets, 2)
    assert choice == [1, 2]
    assert fits[1].accuracy == 1.0 and fits[0].accuracy < 1.0
    assert fits[2].accuracy == fits[3].accuracy and fits[2].balance > fits[3].balance
    with pytest.raises(SuggestError, match=r"no candidates left for label\(s\) \['pos'\]$"):  # named, not index 1
        choose(Scores(labeled, pool), candidates[:2], targets, 2, names=("neg", "pos"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return toy_run_config(tmp_path_factory.mktemp("suggest-toy"))


def write(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("learner", ["similarity", "cloze"])
def test_the_written_config_validates(toy: dict, tmp_path: Path, learner: str,
                                      capsys: pytest.CaptureFixture) -> None:
    pattern = "{text}" if learner == "similarity" else "{text} it was {mask} ."
    config = write({**toy, "learner": learner, "pvps": [{"pattern": pattern}, {"pattern": pattern}],
                    "verbalizer": {"neg": "neg", "pos": "pos"}}, tmp_path / "bare.yaml")
    out = tmp_path / "new" / "suggested.yaml"  # a folder not made yet: made
    assert main(["suggest", str(config), "--out", str(out), "--pool-sample", "60", "--set", "data.seed=0"]) == 0
    printed = capsys.readouterr().out
    assert "pvps.0:" in printed and "pvps.1:" in printed and "# suggested, for the config:" in printed
    assert SCORED[learner] in printed  # how each candidate was scored; and what --out holds and lacks:
    assert "its comments not kept; --set data.seed=0 is not in it: give it to `ipet run` too" in printed
    written = yaml.safe_load(out.read_text())
    assert [p["pattern"] for p in written["pvps"]] == [pattern, pattern]
    first, second = (p["verbalizer"] for p in written["pvps"])
    assert set(first) == set(second) == {"neg", "pos"} and first != second  # one pattern twice: other words
    assert written["verbalizer"] == first
    assert {k: v for k, v in written.items() if k not in ("verbalizer", "pvps")} == {
        k: v for k, v in yaml.safe_load(config.read_text()).items() if k not in ("verbalizer", "pvps")}
    assert main(["validate", str(out)]) == 0
    if learner == "cloze":  # seconds: the same command again replaces --out with the same file, nothing beside it
        suggested = out.read_text()
        assert main(["suggest", str(config), "--out", str(out), "--pool-sample", "60", "--set", "data.seed=0"]) == 0
        assert out.read_text() == suggested and [p.name for p in out.parent.iterdir()] == ["suggested.yaml"]


def test_zero_label_mode_ranks_candidates_from_the_pool(toy: dict, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    config = write({**toy, "learner": "similarity", "pvps": [{"pattern": "{text}"}, {"pattern": "{text}"}],
                    "verbalizer": {"neg": "bad", "pos": "great"}}, tmp_path / "zero.yaml")
    assert main(["suggest", str(config), "--set", "data.labeled_per_class=0", "--pool-sample", "60"]) == 0
    printed = capsys.readouterr().out
    assert ZERO_LABEL_NOTE in printed and SCORED[None] in printed  # weaker, and scored by the pool alone
    assert main(["suggest", str(config), "--set", "data.labeled_per_class=0", "--pool-sample", "60"]) == 0
    assert capsys.readouterr().out == printed  # the same command, the same suggestion
    first = printed[printed.index("pvps.0:"):printed.index("pvps.1:")]
    rows = [line.split() for line in first.splitlines() if line.startswith(("  neg ", "  pos "))]
    assert len(rows) >= 4 and all(r[2] == "–" for r in rows)  # scored, with no accuracy to show
    scores = [float(r[1]) for r in rows if r[0] == "neg"]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(("change", "args", "expected"), [
    ({"learner": "classifier"}, [], "learner: classifier has no verbalizer to suggest"),
    ({"learner": "classifier"}, ["--set", "data.train.path=missing.csv"],  # said before the data is read
     "ipet suggest: learner: classifier has no verbalizer to suggest"),
    ({}, ["--set", "data.labeled_per_class=0"], "label(s) ['neg', 'pos'] have no one-token word of the model to start"),
    ({}, ["--top", "0"], "ipet suggest: --top: must be at least 1"),
    ({}, ["--set", "data.train.path=missing.csv"], "missing.csv: file not found"),
    ({"model": "HEADLESS"}, [], "has no pretrained MLM head, so its scores at the mask are random"),
    ({}, ["--expand", "-1"], "ipet suggest: --expand: must be at least 0"),
    ({}, ["--out", "/"], "ipet suggest: --out /: is a directory; give a file name (e.g. /config.yaml)"),
    ({"pvps": [{"pattern": "{text} it was {mask} ."}] * 2}, ["--top", "12", "--pool-sample", "20"],
     # which labels run out depends on the tiny model's random weights; that pvps.1 is named does not
     "ipet suggest: pvps.1: pattern '{text} it was {mask} .': no word scores best for label(s) ['"),
    ({}, ["--set", "learner=similarity", "--set", "pvps=[{pattern: '{text}'}]", "--pool-sample", "20"],
     "pvps.0.pattern: pattern '{text}' must contain exactly one {mask}, found 0 (learner: cloze); --set "
     "learner=similarity pvps=[{pattern: '{text}'}] is not written into it: put that in "),
    ({"learner": "similarity", "pvps": [{"pattern": "{text}"}]}, ["--expand", "2"],
     "ipet suggest: --expand: adds neighbours of cloze label words; learner: similarity chooses one phrase per label"),
    ({"model": "/no/such/model"}, [], "config.yaml: model: '/no/such/model' does not exist (a local model directory"),
    ({}, ["--out", "CONFIG"], "config.yaml: is the config itself, which would lose its comments and verbalizer"),
], ids=["classifier", "classifier-before-the-data", "zero-label-cloze-without-word-names", "top-zero", "missing-data",
        "cloze-without-mlm-head",
        "negative-expand", "out-a-directory", "one-pattern-twice-runs-out-of-words", "set-learner-not-written",
        "expand-on-similarity", "no-such-model", "out-the-config-itself"])
def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(toy: dict, tmp_path: Path, capsys, change: dict,
                                                              args: list[str], expected: str) -> None:
    if change.get("model") == "HEADLESS":  # a sentence encoder's checkpoint: no MLM head to rank words with
        change = {"model": str(save_tiny("bert", tmp_path / "headless", headless=True))}
        capsys.readouterr()  # saving prints a progress bar
    config = write({**toy, **change}, tmp_path / "config.yaml")
    written = config.read_text()
    out = tmp_path / "out.yaml"
    args = [str(config) if a == "CONFIG" else a for a in args]
    assert main(["suggest", str(config), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob(".out.yaml*")) and config.read_text() == written


def test_a_failed_write_of_out_names_out_not_its_temporary(toy: dict, tmp_path: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk (or an unwritable place) fails at the write, after the model ran: the one line names
    the --out the user gave, not the hidden temporary beside it, and leaves neither behind."""
    config, out = write(toy, tmp_path / "config.yaml"), tmp_path / "out.yaml"
    write_text = Path.write_text

    def full_disk(self: Path, *args, **kwargs):
        if self.name.startswith(".out.yaml"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    assert main(["suggest", str(config), "--out", str(out), "--pool-sample", "20"]) == 1  # a write failed
    err = capsys.readouterr().err
    assert err == f"ipet suggest: cannot write {out}: No space left on device\n"
    assert not out.exists() and not list(tmp_path.glob(".out.yaml*"))


def test_a_config_with_adapt_says_its_suggestions_score_the_unadapted_model(toy: dict, tmp_path: Path, capsys) -> None:
    """The run trains on the adapted backbone; suggest scores `model` as it is. It says so, and a checkpoint
    refused for having no MLM head is pointed at `ipet adapt`, which trains one."""
    config = write({**toy, "adapt": {"steps": 5}}, tmp_path / "adapt.yaml")
    assert main(["suggest", str(config), "--pool-sample", "20"]) == 0
    assert f"run `ipet adapt {config}` and suggest again with --set model=" in capsys.readouterr().out
    headless = save_tiny("bert", tmp_path / "headless", headless=True)
    capsys.readouterr()
    assert main(["suggest", str(config), "--set", f"model={headless}", "--pool-sample", "20"]) == 2
    err = capsys.readouterr().err
    assert "has no pretrained MLM head" in err and f"run `ipet adapt {config}`" in err and len(err.splitlines()) == 1


INTERRUPTING = """
import os, signal, sys, time
from pathlib import Path
import prompt_core.suggest
from flows.cli import main

def interrupt(*args, **kwargs):  # the signal a terminal's Ctrl-C (or a `kill`) sends, mid-way
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(60)

if sys.argv[2] == "writing":  # half the config in the temporary beside --out, then the signal
    write_text = Path.write_text
    Path.write_text = lambda self, text, *a, **k: (write_text(self, text[: len(text) // 2]), interrupt())
else:
    prompt_core.suggest.WordScorer.suggest = interrupt
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow  # a fresh interpreter importing torch: 20 s on 2 loaded cores
@pytest.mark.parametrize(("sig", "code", "when"), [("SIGINT", 130, "writing"), ("SIGTERM", 143, "scoring")])
def test_a_signal_stops_it_with_one_line_and_leaves_out_as_it_was(toy: dict, tmp_path: Path, sig: str, code: int,
                                                                  when: str) -> None:
    """Ctrl-C or SIGTERM while it scores or writes --out: exit 130 (143) with one line, no traceback, no
    temporary beside --out, and a previous file there as it was (a KeyboardInterrupt's traceback)."""
    config, out = write(toy, tmp_path / "config.yaml"), tmp_path / "out.yaml"
    out.write_text("the previous output")
    repo = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, "-c", INTERRUPTING, sig, when, "suggest", str(config), "--out", str(out),
                           "--pool-sample", "20"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'tests'}"})
    assert done.returncode == code and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [f"ipet: {sig}: ipet suggest stopped; {out} was not written "
                                                "(a previous file there is as it was)"]
    assert out.read_text() == "the previous output" and [p.name for p in tmp_path.glob(".out*")] == []


def test_a_pattern_search_skips_a_pattern_that_leaves_a_label_without_a_word(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --patterns, one pattern of the library (or the config's) that gives some label no word is shown
    skipped and the PVPs take the others (one such pattern refused the whole search); without the search,
    or when every pattern fails, it is refused."""
    from prompt_core.choice import Fit
    from prompt_core.suggest import SCORERS, PVPSuggestion, SuggestSettings, Task, library, suggest

    failing = "{text} It was {mask} ."

    class Planted:  # a scorer whose fits are known: longer patterns fit better, one pattern fails
        def __init__(self, task: Task, settings: SuggestSettings):
            self.settings = settings

        def suggest(self, pattern: str, excluded: frozenset[str]) -> PVPSuggestion:
            if pattern == failing or self.settings.top == 0:
                raise SuggestError(f"pattern {pattern!r}: no word scores best for label(s) ['pos']")
            words = {"neg": (f"n{len(excluded)}",), "pos": (f"p{len(excluded)}",)}
            return PVPSuggestion(pattern, words, Fit(0.5, len(pattern) / 100, 0.5, 0.1), ())

    monkeypatch.setitem(SCORERS, "cloze", Planted)
    task = Task(("neg", "pos"), ("text",), (), (), (), ())
    mine = "{text} it was {mask} ."
    out, ranking = suggest(task, SuggestSettings("m", "cloze"), [failing, mine], search=True)
    tried = library("cloze", ["text"])
    assert ranking[-1] == (failing, None) and len(ranking) == len(set([mine, *tried]))
    best = max((p for p in tried if p != failing), key=len)
    assert [s.pattern for s in out] == [best, sorted(tried, key=len)[-2]]
    with pytest.raises(SuggestError, match=r"^pattern '\{text\} It was \{mask\} \.': no word"):
        suggest(task, SuggestSettings("m", "cloze"), [failing, mine])
    with pytest.raises(SuggestError, match="none of the 6 patterns tried, the config's and the library's, gives"):
        suggest(task, SuggestSettings("m", "cloze", top=0), [failing, mine], search=True)


def test_identical_texts_are_refused_in_one_line_saying_what_helps(toy: dict, tmp_path: Path, capsys) -> None:
    """Every row the same text: no word at the mask tells the labels apart. One line, exit 2, --out not
    written, with or without the pattern search (it named no cause)."""
    (tmp_path / "same.csv").write_text("text,label\n" + "the movie was it,neg\nthe movie was it,pos\n" * 30)
    config = write({**toy, "data": {**toy["data"], "root": str(tmp_path), "train": {"path": "same.csv"}, "test": None,
                                    "pool_size": None}}, tmp_path / "config.yaml")
    for search in ([], ["--patterns"]):
        assert main(["suggest", str(config), "--out", str(tmp_path / "out.yaml"), "--pool-sample", "20", *search]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "do not set the labels apart); give them more or more typical" in err, err
    assert not (tmp_path / "out.yaml").exists()


def test_without_labels_a_label_that_is_no_word_starts_from_its_verbalizer_word(toy: dict, tmp_path: Path,
                                                                              capsys) -> None:
    """Labels 1 and 2 (no words) and no labeled rows: the search starts from the verbalizer's words, as the
    README's bare-verbalizer start suggests (it refused, telling the user to put words in the verbalizer,
    which it then ignored); with bare ids there, one line says what to give."""
    rows = Path(toy["data"]["root"], "train.csv").read_text().replace(",neg\n", ",1\n").replace(",pos\n", ",2\n")
    (tmp_path / "train.csv").write_text(rows)
    numbered = {**toy, "learner": "similarity", "pvps": [{"pattern": "{text}"}] * 2, "verbalizer": {1: "bad", 2: "great"},
                "data": {"root": str(tmp_path), "train": {"path": "train.csv"}, "labeled_per_class": 0}}
    config = write(numbered, tmp_path / "config.yaml")
    assert main(["suggest", str(config), "--pool-sample", "40", "--out", str(tmp_path / "out.yaml")]) == 0
    printed = capsys.readouterr().out
    assert ZERO_LABEL_NOTE in printed and "(verbalizer word)" in printed and "(label name)" not in printed
    assert set(yaml.safe_load((tmp_path / "out.yaml").read_text())["verbalizer"]) == {"1", "2"}
    write({**numbered, "verbalizer": {1: "1", 2: "2"}}, config)
    assert main(["suggest", str(config), "--pool-sample", "40"]) == 2
    assert capsys.readouterr().err == ("ipet suggest: no labeled examples, and label(s) ['1', '2'] have no word to start "
                                       "from (their name, else their first verbalizer word): give labeled examples, or a "
                                       "word in the verbalizer\n")


def test_a_pool_too_small_for_a_phrase_a_label_is_refused_saying_so(toy: dict, tmp_path: Path, capsys) -> None:
    """One pool row: no term is in two rows, so the label names are the only candidates, and one label is
    left without a phrase. One line naming it and the pool (it said `no candidates left for label(s)`)."""
    rows = Path(toy["data"]["root"], "train.csv").read_text().splitlines()
    (tmp_path / "labeled.csv").write_text("\n".join(rows[:9]) + "\n")
    (tmp_path / "pool.csv").write_text("text\n" + rows[9].rsplit(",", 1)[0] + "\n")
    data = {"root": str(tmp_path), "labeled": {"path": "labeled.csv"}, "unlabeled": {"path": "pool.csv"}}
    config = write({**toy, "learner": "similarity", "pvps": [{"pattern": "{text}"}, {"pattern": "Text: {text}"}],
                    "verbalizer": {"neg": "neg", "pos": "pos"}, "data": data}, tmp_path / "config.yaml")
    assert main(["suggest", str(config), "--out", str(tmp_path / "out.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipet suggest: no candidate phrase for label(s) ['") and len(err.splitlines()) == 1, err
    assert err.endswith("the pool gives 2 candidate(s) for 2 labels (label names that are words, and terms in at "
                        "least 2 of its rows); give a larger pool\n") and not (tmp_path / "out.yaml").exists()


def test_the_candidate_terms_cut_at_a_tie_are_the_same_in_every_process() -> None:
    """The pool's most frequent terms are cut at ``phrases`` (500); terms tied at the cut were kept in
    the iteration order of a set of strings, which differs per process (PYTHONHASHSEED), so the same
    command could score other candidates. Now every process keeps the same ones."""
    probe = ("from prompt_core.terms import document_frequency; "
             "print(document_frequency(['alpha beta gamma delta epsilon zeta eta theta']).most_common(3))")
    repo = Path(__file__).parents[1]
    kept = {subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=repo,
                           env={**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": str(repo)}).stdout
            for seed in range(1, 6)}
    assert kept == {"[('alpha', 1), ('alpha beta', 1), ('beta', 1)]\n"}
