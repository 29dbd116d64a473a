"""``ipet suggest CONFIG``: propose the verbalizer (and optionally patterns) of a run config from its
data, print them ranked with their scores and as a YAML snippet, and with ``--out`` write a copy of
the config with them in place, which ``ipet validate`` accepts.

No Prefect and no MLflow: it reads the config's data the way a run does (``data.prepare.load_sets``)
and hands the rows to ``prompt_core.suggest``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from data.errors import DataError
from data.outputs import atomic_path, check_file_path
from data.prepare import load_sets
from data.splits import sample_rows

from .config import ConfigError, RunConfig, load_config, problem_lines

# how the printed score of a candidate was made, per learner (and without labels): said above the tables
SCORED = {
    "similarity": ("score: the mean log-probability of the right label on the labeled rows plus balance, with this "
                   "phrase in its label's place and the other labels' chosen ones"),
    "cloze": ("score: PETAL's likelihood ratio of the word for its label (its labeled rows against the pool "
              "sample); accuracy and balance with this word alone in its label's place"),
    None: "score: balance × margin on the pool sample, with this candidate in its label's place (no labels)",
}
COLUMNS = ("accuracy: on the labeled rows; balance: how evenly the pool sample is spread over the classes (1: "
           "evenly); margin: the mean gap between the two likeliest classes on the pool sample")
ZERO_LABEL_NOTE = ("no labeled examples: the candidates were chosen by the pool alone (how evenly they spread it "
                   "over the classes, and how confidently), a weaker signal than accuracy on labeled rows; read "
                   "them before running")


def add_parser(sub) -> None:
    """Register ``ipet suggest`` on the CLI's subcommands."""
    p = sub.add_parser("suggest", help="propose label words or phrases (and patterns) from the data")
    p.add_argument("config", help="YAML run configuration; its verbalizer names the labels (bare ids will do)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field for reading it (not written into --out), e.g. data.seed=1")
    p.add_argument("--top", type=int, default=3, metavar="N",
                   help="label words per label (cloze); candidates shown per label (similarity: at most the 3 "
                        "it shortlists per label) (default: %(default)s)")
    p.add_argument("--out", help="write the config with the suggested verbalizer and pvps here (atomically)")
    p.add_argument("--patterns", action="store_true",
                   help="also score a library of generic patterns and use the best instead of the config's")
    p.add_argument("--expand", type=int, default=0, metavar="N",
                   help="cloze: add up to N embedding neighbours of each label's best word (KPT-style; default: "
                        "%(default)s, none)")
    p.add_argument("--pool-sample", type=int, default=400, metavar="N",
                   help="pool rows every candidate is scored on (default: %(default)s)")


def command(args: argparse.Namespace) -> int:
    """Run ``ipet suggest``; 2 with one line naming the field or file on bad input, 1 if --out cannot be written.
    Ctrl-C or SIGTERM (while the model loads, scores or --out is written) stops it with one line, exit 130
    (143): --out is written whole or not at all (``atomic_path``), a previous file there kept."""
    from .interrupt import stop_on_signals

    stopped = f"{args.out} was not written (a previous file there is as it was)" if args.out else "nothing was written"
    with stop_on_signals("ipet suggest", lambda: None, stopped):
        return _suggested(args)


def _suggested(args: argparse.Namespace) -> int:
    from prompt_core import BackboneError
    from prompt_core.backbone import checked_tokenizer, has_mlm_head
    from prompt_core.choice import SuggestError
    from prompt_core.suggest import check_learner

    problem = _option_problem(args)
    if problem:
        print(f"ipet suggest: {problem}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, args.set)
        check_learner(config.learner)  # before the data and the model are read
        if args.expand and config.learner != "cloze":  # else silently ignored: one phrase per label
            raise ConfigError(f"--expand: adds neighbours of cloze label words; learner: {config.learner} "
                              "chooses one phrase per label")
        try:  # one line, not transformers' OSError minutes later
            checked_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
        except BackboneError as err:
            raise ConfigError(f"{args.config}: model: {err}") from None
        adapted = adapt_note(args.config) if config.adapt else None
        try:
            suggestions, ranking = run_suggest(config, args.top, args.pool_sample, args.patterns, args.expand)
        except BackboneError as err:  # a headless checkpoint: `ipet adapt` gives it the head it lacks
            headless = adapted and not has_mlm_head(config.model, trust_remote_code=config.trust_remote_code)
            raise BackboneError(f"{err}; {adapted}" if headless else str(err)) from None
        zero_label = suggestions[0].fit.accuracy is None
        print(report(suggestions, ranking, SCORED[None if zero_label else config.learner], zero_label, adapted))
        if args.out:
            try:
                write_config(args.config, suggestions, args.out, args.set)
            except OSError as err:  # a full disk, an unwritable place: exit 1, named by --out, not its temporary
                print(f"ipet suggest: cannot write {args.out}: {err.strerror}", file=sys.stderr)
                return 1
            unset = f"; --set {' '.join(args.set)} is not in it: give it to `ipet run` too" if args.set else ""
            print(f"\nwrote {args.out}: {args.config} with these pvps and verbalizers, every other setting as "
                  f"it was, its comments not kept{unset} (`ipet validate {args.out}`)")
    except (ConfigError, DataError, SuggestError, BackboneError) as err:
        print(f"ipet suggest: {err}", file=sys.stderr)
        return 2
    return 0


def _option_problem(args: argparse.Namespace) -> str | None:
    """A bad option, named before the data and the model are read (a minute on a real model)."""
    for option, least in (("top", 1), ("pool_sample", 1), ("expand", 0)):
        if getattr(args, option) < least:
            return f"--{option.replace('_', '-')}: must be at least {least}"
    if not args.out:
        return None
    try:
        check_file_path(args.out, "config.yaml")
    except DataError as err:
        return f"--out {err}"
    out, config = Path(args.out), Path(args.config)
    if out.exists() and config.exists() and out.samefile(config):  # its comments and bare verbalizer lost
        return (f"--out {args.out}: is the config itself, which would lose its comments and verbalizer; write the "
                "suggestions to another file")
    return None


def run_suggest(config: RunConfig, top: int = 3, pool_sample: int = 400, search: bool = False, expand: int = 0):
    """The config's data read as a run reads it, and ``prompt_core.suggest`` on it: one suggestion per
    PVP of the config (``search``: the best patterns of the library and the config), and the
    patterns ranked."""
    from prompt_core.suggest import SuggestSettings, Task, suggest
    from prompt_core.terms import join_fields, words

    sets, _ = load_sets(config.data, config.fields, config.labels)  # leaked test rows already left out of the pool
    fields = config.fields
    labeled = sets["labeled"].to_pylist()
    sample = sample_rows(sets["pool"], pool_sample, config.data.seed).to_pylist()
    task = Task(labels=config.labels, fields=fields, labeled=tuple({f: r[f] for f in fields} for r in labeled),
                targets=tuple(config.labels.index(r["label"]) for r in labeled),
                pool=tuple({f: r[f] for f in fields} for r in sample),
                background=tuple(join_fields(r, fields) for r in sets["pool"].select(list(fields)).to_pylist()),
                names=tuple(label if words(label) else config.pvp(0).verbalizer.words[label][0]
                            for label in config.labels))
    batch = config.labeling.batch_size
    settings = SuggestSettings(backbone=config.model, learner=config.learner, top=top, expand=expand,
                               temperature=config.similarity_temperature, max_length=config.max_length,
                               batch_size=batch if isinstance(batch, int) else 64, device=config.train.device,
                               trust_remote_code=config.trust_remote_code)
    return suggest(task, settings, [p.pattern for p in config.pvps], search)


def adapt_note(config: str) -> str:
    """Why suggestions for a config with ``adapt:`` may not fit its run: they score ``model`` as it is."""
    return (f"scored with `model` as it is, while the run adapts it first (adapt:); to score with the adapted "
            f"backbone, run `ipet adapt {config}` and suggest again with --set model=<the backbone it prints>")


def report(suggestions, ranking, scored: str, zero_label: bool, adapted: str | None = None) -> str:
    """The ranked table of every PVP's candidates, the patterns' ranking, and the YAML snippet; ``scored``:
    how a candidate's score was made (``SCORED``); ``adapted``: the note that the backbone scored is not the run's."""
    lines = ([ZERO_LABEL_NOTE, ""] if zero_label else []) + ([adapted, ""] if adapted else [])
    lines += [scored, COLUMNS, ""]
    if len(ranking) > 1:
        lines += ["patterns, by their best verbalizer (accuracy · balance · margin):"]
        lines += [f"  {_fit(f) if f else '(skipped: a label gets no word)':<21}  {p}" for p, f in ranking] + [""]
    for i, s in enumerate(suggestions):
        held_out = "" if s.held_out is None else f" · held-out accuracy {s.held_out:.3f} (chosen without each fold)"
        fitted = f"accuracy {_num(s.fit.accuracy)} · balance {s.fit.balance:.3f} · margin {s.fit.margin:.3f}"
        lines += [f"pvps.{i}: {s.pattern!r} · {fitted}{held_out}",
                  f"  {'label':<10} {'score':>8} {'accuracy':>8} {'balance':>7}  candidate (origin)"]
        lines += [f"  {r.label:<10} {r.score:>8.3f} {_num(r.fit.accuracy):>8} {r.fit.balance:>7.3f}  "
                  f"{r.text} ({r.origin})" for r in s.ranked]
        lines.append("")
    return "\n".join(lines + ["# suggested, for the config:", yaml_text(sections(suggestions))])


def _fit(fit) -> str:
    return f"{_num(fit.accuracy)} · {fit.balance:.3f} · {fit.margin:.3f}"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def sections(suggestions) -> dict[str, Any]:
    """``verbalizer:`` (the first PVP's) and ``pvps:``, each PVP with its own verbalizer."""
    def words(verbalizer: dict[str, tuple[str, ...]]) -> dict[str, Any]:
        return {label: ws[0] if len(ws) == 1 else list(ws) for label, ws in verbalizer.items()}

    return {"verbalizer": words(suggestions[0].verbalizer),
            "pvps": [{"pattern": s.pattern, "verbalizer": words(s.verbalizer)} for s in suggestions]}


def yaml_text(tree: dict[str, Any]) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=120)


def write_config(source: str | Path, suggestions, out: str | Path, overrides: Sequence[str] = ()) -> None:
    """``source`` as written (its ``--set`` overrides are not baked in) with ``verbalizer`` and ``pvps``
    replaced, validated as ``ipet validate`` reads it, then written atomically: on any problem
    ``out`` is left as it was. Suggestions made under an override the file lacks (``--set
    learner=similarity`` on a cloze config) may not fit it: then say that, naming the field."""
    raw = yaml.safe_load(Path(source).read_text()) or {}
    raw.update(sections(suggestions))
    try:
        RunConfig.model_validate(raw)
    except ValidationError as err:
        problem = "; ".join(problem_lines(err))
        cause = (f"; --set {' '.join(overrides)} is not written into it: put that in {source} and suggest again"
                 if overrides else "")
        raise ConfigError(f"--out {out}: {source} with these suggestions does not validate: {problem}{cause}") from None
    with atomic_path(out) as tmp:
        tmp.write_text(f"# {Path(source).name} with the verbalizer and pvps of `ipet suggest`\n" + yaml_text(raw))
