"""Checks a run can start: everything that would otherwise fail after minutes of compute."""

from __future__ import annotations

from dataclasses import dataclass, field

from data.prepare import key_before_reading, load_sets, pin_versions, write_prepared
from data.errors import DataError
from data.leaks import gold_texts_in_pool
from data.validate import label_conflicts
from prompt_core.selection import new_examples
from tasks import tracking

from .cluster import ray_problem
from .config import RunConfig


@dataclass(frozen=True)
class Checked:
    """What ``check_run`` found.

    Attributes:
        config: the config with every dataset-store source pinned to the version checked, so the run
            trains on exactly the data that was checked even if an ingest commits meanwhile.
        problems: one line each, naming the field or file; none means the run can start.
        rows: each set's row count, when the data loaded.
        warnings: test rows leaking into the training data, and dataset stores that kept another test set's
            texts out; a ``pool_size`` or ``test_size`` the data cannot fill; a learner that has no prior on this
            backbone.
    """

    config: RunConfig
    problems: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def check_run(config: RunConfig, adapting: bool = False, run_dir: str | None = None) -> Checked:
    """Every problem a run of ``config`` would meet (``adapting``: of ``ipet adapt``). The quick checks first;
    the model last, as it alone needs torch (seconds to import). With the ``run_dir`` the run will use, a run
    that can start finds there the sets read here (``write_prepared``): its flow's data step reuses them by
    key instead of reading every source again (seconds a read at a million rows)."""
    problems = _check_tracking(config) + _check_runner(config)
    try:
        pinned = pin_versions(config.data)
        config = config.model_copy(update={"data": pinned.config})
        keyed = key_before_reading(pinned, config.fields, config.labels) if run_dir else None
        sets, leaks = load_sets(pinned, config.fields, config.labels)
    except DataError as err:
        return Checked(config, problems + str(err).splitlines() + _check_model(config)
                       + _check_devices(config, adapting))
    problems += _check_model(config) + _check_devices(config, adapting)
    warnings = leaks.lines(config.data.test.name) if config.data.test else []
    warnings += label_conflicts(sets["labeled"], config.fields, (config.data.train or config.data.labeled or
                                                                 config.data.unlabeled).name)
    rows = {name: table.num_rows for name, table in sets.items()}
    warnings += _capped(config, rows)
    if not adapting and (unused := unused_adapt_device(config)):
        warnings.append(unused)
    gold, pool = rows["labeled"], rows["pool"]
    if not problems and not config.adapt and (why := _random_head(config)):
        if keeping := config.keeping_prior:
            problems.append(f"{keeping[0]}.prior_weight: no prior to keep: {why}; remove it or use learner: similarity")
        if gold:
            warnings.append(f"model: {why}: no zero-shot stage, and its PVPs weigh the same; on a sentence encoder "
                            "learner: similarity has a prior")
        else:
            problems.append(f"learner: {config.learner} needs labeled examples here: {why}; give labeled data, "
                            "adapt the backbone first (adapt:), or use learner: similarity")
    if config.ipet.generations:
        models = len(config.pvps) * len(config.seeds) if gold else len(config.pvps)
        if models < 2:
            problems.append("pvps/seeds: iPET needs at least two models per generation so each has a peer"
                            + ("" if gold else " (zero-shot: at least two PVPs)"))
        need = new_examples(gold, config.ipet.generations, config.ipet.growth,
                            config.ipet.zero_shot_per_class * len(config.labels))
        gold_texts = gold_texts_in_pool(sets["pool"], sets["labeled"], config.fields)
        if need > pool - gold_texts:
            fields = "ipet.growth/ipet.generations" + ("" if gold else "/ipet.zero_shot_per_class")
            lower = "growth or generations" + ("" if gold else
                                               f" or zero_shot_per_class (now {config.ipet.zero_shot_per_class})")
            has = (f"{pool - gold_texts} ({pool} rows, {gold_texts} of them texts of the labeled set, which are never "
                   "pseudo-labeled)" if gold_texts else str(pool))
            problems.append(f"{fields}: generation {config.ipet.generations} needs {need} pseudo-labeled examples "
                            f"but the pool has {has}; lower {lower}, or raise data.pool_size")
    if keyed and not problems:
        write_prepared(run_dir, keyed, pinned, sets, leaks)
    return Checked(config, problems, rows, warnings)


def unused_adapt_device(config: RunConfig) -> str | None:
    """A warning for an ``adapt.device`` set in a config ``ipet run`` reads: the run adapts where it trains, so
    the setting does nothing there, and a user who set it expects it to matter."""
    adapt = config.adapt
    if adapt is None or "device" not in adapt.model_fields_set or adapt.device == config.train.device:
        return None
    return (f"adapt.device: {adapt.device} is ipet adapt's; ipet run adapts the backbone where it trains "
            f"(train.device: {config.train.device})")


def _capped(config: RunConfig, rows: dict[str, int]) -> list[str]:
    """A sample size above what the data holds takes all of it: say so, as the run then has a smaller
    pool or test set than the config asks for (only the row counts showed it)."""
    data = config.data
    pool = (data.train or data.unlabeled).name
    has = {"pool_size": (rows["pool"], f"{pool} leaves only {rows['pool']} rows for the pool"
                         + (" after the labeled draw" if data.train else "")),
           "test_size": (rows.get("test", 0), f"{data.test.name if data.test else ''} has only {rows.get('test')}")}
    return [f"data.{setting}: {asked} rows asked for, but {where}; the run uses all {n}"
            for setting, (n, where) in has.items() if (asked := getattr(data, setting)) and n and asked > n]


def _random_head(config: RunConfig) -> str | None:
    """A learner kind that has a prior, but not on this checkpoint (cloze without an MLM head): why."""
    from prompt_core import learner_class

    return missing_prior(config) if learner_class(config.learner).has_prior else None


def missing_prior(config: RunConfig) -> str | None:
    """Why the run's untrained learners would score at random (``Learner.missing_prior``), or None."""
    from prompt_core import learner_class

    return learner_class(config.learner).missing_prior(config.model, trust_remote_code=config.trust_remote_code)


def _check_tracking(config: RunConfig) -> list[str]:
    """An unusable MLflow store would otherwise fail the run at its first log, or retry for minutes."""
    try:
        tracking.check_store(tracking.resolve_uri(config.tracking.mlflow_uri))
    except tracking.TrackingError as err:
        return [] if config.tracking.fallback_local else [f"tracking.mlflow_uri: {err}"]
    return []


def _check_runner(config: RunConfig) -> list[str]:
    problem = ray_problem(config.runner)
    return [problem] if problem else []


def _check_devices(config: RunConfig, adapting: bool = False) -> list[str]:
    """CUDA asked for where there is none would fail every task of the run, each with a traceback. Not on Ray,
    whose nodes may have the GPUs this process lacks (there ``train.device`` says whether to ask for them).
    ``ipet adapt`` (``adapting``) trains on ``adapt.device`` alone."""
    if config.runner.kind != "local":
        return []
    from prompt_core.device import select_device

    if adapting:
        asked = {"adapt": config.adapt.device} if config.adapt else {}
    else:
        asked = {"train": config.train.device, **{f"{stage}.train": overrides["device"] for stage, overrides in
                                                  (("pet", config.pet.train), ("final", config.final.train))
                                                  if "device" in overrides}}
    problems = []
    for where, device in asked.items():
        try:
            select_device(device)
        except ValueError as err:
            problems.append(f"{where}.device: {err}")
    return problems


def _check_model(config: RunConfig) -> list[str]:
    from prompt_core import BackboneError
    from prompt_core.backbone import check_backbone, checked_tokenizer

    try:
        tokenizer = checked_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
        check_backbone(config.model, masked_lm=config.learner == "cloze" or bool(config.adapt),
                       trust_remote_code=config.trust_remote_code)
    except BackboneError as err:
        return [f"model: {err}"]
    if tokenizer.mask_token is None and config.adapt:
        return [f"adapt: {config.model!r} has no mask token, so it cannot be trained as a masked LM"]
    problem = _adapter_problem(config)
    if problem:
        return [problem]
    lengths = _length_problems(config, tokenizer)
    if lengths or config.learner != "cloze":
        return lengths
    if tokenizer.mask_token is None:
        return [f"model: {config.model!r} has no mask token, so it cannot fill cloze patterns"]
    return verbalizer_problems(config, tokenizer)


def verbalizer_problems(config: RunConfig, tokenizer=None) -> list[str]:
    """The label words of ``config``'s PVPs that are not one known token of its model, read as cloze."""
    from prompt_core import BackboneError, VerbalizerError
    from prompt_core.backbone import load_tokenizer

    tokenizer = tokenizer or load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    problems = []
    for i in range(len(config.pvps)):
        try:
            config.pvp(i).verbalizer.token_ids(tokenizer)
        except (VerbalizerError, BackboneError) as err:
            where = f"pvps.{i}.verbalizer" if config.pvps[i].verbalizer else "verbalizer"
            problems.append(f"{where}: {err}")
    return list(dict.fromkeys(problems))  # a shared verbalizer's problem, once


def _adapter_problem(config: RunConfig) -> str | None:
    """The first adapter the backbone cannot take, named by the section that set it (``pet.train.peft.method``,
    not the ``train.peft.method`` the adapter check knows), so the line named is the line to edit."""
    from prompt_core.adapters import check_backbone as check_adapter

    sections = (("train", config.train.peft), ("pet.train", config.pet.train.get("peft") and config.pet_train.peft),
                ("final.train", config.final.train.get("peft") and config.distill_train.peft))
    for where, adapter in sections:
        problem = adapter and check_adapter(adapter, config.model, config.trust_remote_code)
        if problem:
            return f"{where}{problem.removeprefix('train')}"
    return None


def _length_problems(config: RunConfig, tokenizer) -> list[str]:
    """A max_length past the model's position embeddings, or a pattern whose own words fill
    max_length: either fails only when the first long input is encoded, minutes into a run."""
    from prompt_core import Template
    from prompt_core.backbone import max_positions

    limit = max_positions(config.model, trust_remote_code=config.trust_remote_code)
    settings = {"max_length": config.max_length}
    if config.adapt:
        settings["adapt.max_length"] = config.adapt.max_length
    problems = [f"{where}: {length} tokens, but {config.model!r} has position embeddings for {limit}; set it to "
                f"{limit} or less" for where, length in settings.items() if limit is not None and length > limit]
    for i, p in enumerate(config.pvps):
        template = Template(p.pattern)
        alone = template.render(dict.fromkeys(template.slots, ""), tokenizer.mask_token or "")
        own = len(tokenizer(alone)["input_ids"])
        if own >= config.max_length:
            problems.append(f"pvps.{i}.pattern: its own words (and special tokens) are {own} tokens, which leaves none "
                            f"of max_length {config.max_length} for the input; shorten it or raise max_length")
    return problems
