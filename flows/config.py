"""One validated run configuration: YAML in, pydantic out; the same fields are flow parameters."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from data.prepare import DataConfig
from data.errors import nearest
from data.labels import label_text
from prompt_core import PVP, AdaptConfig, Pattern, PatternError, Template, TrainConfig, Verbalizer, VerbalizerError
from prompt_core.asking import PickConfig
from prompt_core.settings import IpetConfig, LabelingConfig, LearnerKind


PROBLEM_SEPARATOR = "\n"
RESERVED_COLUMNS = {"label": "the gold label the patterns predict", "id": "the row id"}  # as data.sources names them


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def _label_keys(words: Any) -> Any:
    """YAML reads ``1:``, ``1.0:`` or ``true:`` as numbers and booleans; labels are text (``label_text``).
    Two keys that are one label as text (``1:`` and ``"1":``) are refused: one of their words would be
    dropped without a word."""
    if not isinstance(words, dict):
        return words
    keys: dict[str, Any] = {}
    for key in words:
        first = keys.setdefault(label_text(key), key)
        if first is not key:
            raise ValueError(f"keys {first!r} and {key!r} are both the label {label_text(key)!r} (labels are "
                             "compared as text); keep one")
    return {label: words[key] for label, key in keys.items()}


class PVPConfig(Strict):
    pattern: str = Field(description="cloze: one {mask}; similarity: the input as it is embedded, no {mask}")
    verbalizer: dict[str, list[str] | str] | None = Field(None, description="this PVP's label words or phrases; "
                                                                            "defaults to the run's verbalizer")
    _labels_as_text = field_validator("verbalizer", mode="before")(_label_keys)

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        try:
            slots = Template(value).slots
        except PatternError as err:
            raise ValueError(str(err)) from None
        if not slots:  # every row would be the same prompt, and the final model would read no text
            raise ValueError(f"pattern {value!r} reads no input field, so every row would give the same "
                             "prompt; add a slot such as {text}")
        reserved = [s for s in slots if s in RESERVED_COLUMNS]
        if reserved:  # the readers make these columns; a pattern reading them would crash a run or cheat
            slot = reserved[0]
            raise ValueError(f"pattern {value!r}: slot {{{slot}}} is {RESERVED_COLUMNS[slot]}, not an input "
                             f"field; to read a text column named {slot!r}, rename it (rename: {{{slot}: ...}})")
        return value


def _same_words(verbalizer: Verbalizer) -> list[str]:
    """Labels given exactly the same words score the same on every input, so the ensemble could never
    pick one over the other (a copy-paste slip, e.g. ``pos: great`` and ``neg: great``)."""
    seen: dict[frozenset[str], str] = {}
    problems = []
    for label, words in verbalizer.words.items():
        first = seen.setdefault(frozenset(words), label)
        if first != label:
            problems.append(f"labels {first!r} and {label!r} have the same word(s) {list(words)}, so no input could "
                            "score one above the other; give each label its own")
    return problems


def _one_label(labels: Sequence[str], where: str) -> list[str]:
    """A verbalizer of one label gives every input that label at probability 1: nothing to learn or to score
    (validate said ok to a labeled file of one class whose verbalizer named only it)."""
    return [f"{where}: one label {list(labels)}; a classifier chooses between labels, so give at least two"] \
        if len(labels) < 2 else []


def _distinct_seeds(value: list[int]) -> list[int]:
    """A seed given twice trains the same model twice: no more ensemble, and a PVP's "peer" in
    iPET would be itself (the two-models check would pass with one)."""
    repeated = sorted({s for s in value if value.count(s) > 1})
    if repeated:
        raise ValueError(f"seed(s) {repeated} given more than once; each seed trains one model per PVP, so "
                         "give distinct seeds")
    return value


def _train_overrides(value: dict[str, Any]) -> dict[str, Any]:
    """Overrides of ``train`` for one stage: settings of ``train``, each valid on its own."""
    unknown = sorted(set(value) - set(TrainConfig.model_fields))
    if unknown:
        meant = [m for u in unknown if (m := nearest(u, TrainConfig.model_fields))]
        raise ValueError(f"unknown setting(s) {unknown}; use those of `train`"
                         + (f" (did you mean {', '.join(meant)}?)" if meant else ""))
    try:
        TrainConfig(**value)
    except ValidationError as err:
        raise ValueError("; ".join(problem_lines(err))) from None
    return value


class PetConfig(Strict):
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of `train` for the PET stage's "
                                                                    "models (trained on the gold set alone)")
    _known = field_validator("train")(_train_overrides)


class FinalConfig(Strict):
    mode: Literal["distill", "ensemble"] = "distill"
    temperature: float = Field(2.0, gt=0)
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of `train` for distillation")

    @field_validator("train")
    @classmethod
    def _whole_pool(cls, value: dict[str, Any]) -> dict[str, Any]:
        """The distilled model learns the ensemble's soft labels on the whole pool, at least once."""
        if "max_steps" in value:
            raise ValueError("max_steps would cut the distillation short of one pass over the pool; "
                             "set epochs (at least 1) instead")
        if "epochs" in value and not (isinstance(value["epochs"], (int, float)) and value["epochs"] >= 1):
            raise ValueError(f"epochs must be at least 1 (one full pass over the pool), not {value['epochs']!r}")
        _train_overrides(value)
        if value.get("prior_weight") is not None:
            raise ValueError("prior_weight keeps the few-shot models near their prior (train.prior_weight); the "
                             "final model learns the ensemble's soft labels of the whole pool, which carry it")
        return value


class TrackingConfig(Strict):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, validate_by_name=True)

    mlflow_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    experiment: str = "ipet"
    # `register` in YAML; another name in Python, as `register` would shadow BaseModel.register
    register_model: bool = Field(True, alias="register", description="register the final model; champion if it wins")
    registered_model: str | None = Field(None, pattern=r"^[^/:]+$", description="model registry name (default: "
                                         "ipet-<name>); MLflow forbids '/' and ':'")
    fallback_local: bool = Field(False, description="store unusable: track to <run dir>/mlflow.db instead of failing")
    champion_margin: float = Field(0.02, ge=0, le=1, description="how far above always guessing the test set's "
                                   "commonest class a final model must score to become champion")


class RunnerConfig(Strict):
    """Where training and labeling tasks run (see flows/runners.py)."""

    kind: Literal["local", "ray"] = Field("local", description="local: threads, one task per GPU (1 on CPU); "
                                                               "ray: prefect-ray's RayTaskRunner")
    address: str | None = Field(None, description="Ray cluster address (ray://head:10001, auto); null starts a "
                                                  "local Ray")
    gpus_per_task: float = Field(1, ge=0, description="GPUs each task asks Ray for (0 on a cluster without GPUs)")
    cpus_per_task: float = Field(1, gt=0, description="CPUs each task asks Ray for")


class AskStore(Strict):
    """The dataset store the answers are added to as a labeled version (as ``ipet ingest --labeled``)."""

    store: str = Field(description="dataset store directory, relative to data.root unless absolute")
    dataset: str = Field(description="dataset name in the store")


class AskConfig(PickConfig):
    """Ask a person to label the pool rows the ensemble is least sure of (``PickConfig``), after one stage."""

    after: str = Field(pattern=r"^(pet|ipet-[1-9][0-9]*)$", description="the stage whose models pick the rows: "
                                                                          "pet or ipet-N")
    timeout: int | None = Field(86400, ge=1, description="seconds to wait; after it, runs continue without answers")
    store: AskStore | None = Field(None, description="add the answers to this dataset store as a labeled version")


class RunConfig(Strict):
    name: str = Field("ipet", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: str = Field(description="hub name or local path of a masked LM (cloze) or a sentence encoder (similarity)")
    learner: LearnerKind = Field("cloze", description="cloze: masked LMs (RoBERTa, BERT, ALBERT); similarity: "
                                                       "sentence encoders (MiniLM); classifier: a fresh head, no prior")
    similarity_temperature: float = Field(0.05, gt=0, description="similarity: logits are cosines divided by it")
    max_length: int = Field(256, ge=8)
    verbalizer: dict[str, list[str] | str] | None = None
    pvps: list[PVPConfig] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    data: DataConfig
    adapt: AdaptConfig | None = Field(None, description="MLM training on the pool first (TAPT); learners start from it")
    train: TrainConfig = Field(default_factory=TrainConfig)
    pet: PetConfig = Field(default_factory=PetConfig)
    ipet: IpetConfig = Field(default_factory=IpetConfig)
    final: FinalConfig = Field(default_factory=FinalConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    max_parallel: int | None = Field(None, ge=1, description=(
        "tasks holding a device at once (default: GPUs, or 1); trainings on the CPU still run one at a time in "
        "a process, as torch's CPU random generator is the process's (prompt_core/seeding.py)"))
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    ask: AskConfig | None = Field(None, description="ask a person for labels after a stage (off by default)")
    trust_remote_code: bool = False
    _labels_as_text = field_validator("verbalizer", mode="before")(_label_keys)
    _seeds_distinct = field_validator("seeds")(_distinct_seeds)

    @model_validator(mode="after")
    def _verbalizers_agree(self) -> "RunConfig":
        problems = []
        labels = None
        for i, p in enumerate(self.pvps):
            words = p.verbalizer if p.verbalizer is not None else self.verbalizer
            where = f"pvps.{i}.verbalizer" if p.verbalizer is not None else "verbalizer"
            if words is None:
                problems.append(f"pvps.{i}.verbalizer: missing, and no run-level verbalizer is set")
                continue
            try:
                v = Verbalizer(words)
            except VerbalizerError as err:
                problems.append(f"{where}: {err}")
                continue
            if self.learner != "classifier":  # a classifier's head tells labels apart whatever their words
                problems.extend(f"{where}: {same}" for same in _same_words(v))
            if labels is None:
                labels = v.labels
                problems += _one_label(labels, where)
            elif set(v.labels) != set(labels):
                problems.append(f"pvps.{i}.verbalizer: labels {list(v.labels)} differ from {list(labels)}")
        if problems:  # one error; load_config prints each problem on its own line
            raise ValueError(PROBLEM_SEPARATOR.join(dict.fromkeys(problems)))
        return self

    @model_validator(mode="after")
    def _patterns_fit_learner(self) -> "RunConfig":
        """A cloze pattern needs its one {mask}; a similarity pattern is embedded as it is, so a {mask}
        there would be the literal [MASK] token in the text."""
        problems = []
        for i, p in enumerate(self.pvps):
            if self.learner == "cloze":
                try:
                    Pattern(p.pattern)
                except PatternError as err:
                    problems.append(f"pvps.{i}.pattern: {err} (learner: cloze)")
            elif self.learner == "similarity" and Template(p.pattern).has_mask:
                problems.append(f"pvps.{i}.pattern: {p.pattern!r} has a {{mask}}, which the similarity learner "
                                "does not fill; write the input as it should be embedded, e.g. \"{title} {text}\"")
        if problems:
            raise ValueError(PROBLEM_SEPARATOR.join(problems))
        return self

    @model_validator(mode="after")
    def _classifiers_need_labels(self) -> "RunConfig":
        """Zero-shot iPET starts from the PVPs' cloze scores; a classifier's head starts random, so
        without gold labels its generation 1 would train on noise."""
        d = self.data
        zero_shot = d.labeled_per_class == 0 if d.train is not None else d.labeled is None
        if self.learner == "classifier" and zero_shot:
            raise ValueError("learner: classifier needs labeled examples (its head starts random, so it has no "
                             "zero-shot prior); give labeled data or use learner: similarity or cloze")
        keeping = self.keeping_prior
        if self.learner == "classifier" and keeping:
            raise ValueError(f"{keeping[0]}.prior_weight: learner classifier has no prior to keep (its head starts "
                             "random); remove it or use learner: similarity or cloze")
        return self

    @model_validator(mode="after")
    def _ask_after_a_stage_that_is_followed(self) -> "RunConfig":
        """The answers join the gold set of the stages after ``ask.after``: that stage must exist
        (``pet`` needs labeled examples) and be followed by a generation that trains on the gold set."""
        if self.ask is None:
            return self
        after, generations = self.ask.after, self.ipet.generations
        if after == "pet" and (self.data.labeled_per_class == 0 if self.data.train is not None
                               else self.data.labeled is None):
            raise ValueError("ask.after: pet, but this run has no labeled examples and so no pet stage; "
                             "ask after ipet-1 or later")
        number = 0 if after == "pet" else int(after.removeprefix("ipet-"))
        if number >= generations:
            raise ValueError(f"ask.after: {after}, but no iPET generation follows it (ipet.generations: "
                             f"{generations}), so nothing would train on the answers")
        return self

    @property
    def labels(self) -> tuple[str, ...]:
        return self.pvp(0).labels

    def pvp(self, index: int) -> PVP:
        """PVP ``index`` with its labels in the run's label order."""
        p = self.pvps[index]
        words = Verbalizer(p.verbalizer or self.verbalizer).words
        first = Verbalizer(self.pvps[0].verbalizer or self.verbalizer).labels
        template = Pattern if self.learner == "cloze" else Template
        return PVP(template(p.pattern), Verbalizer({label: words[label] for label in first}))

    @property
    def registered_model(self) -> str:
        return self.tracking.registered_model or f"ipet-{self.name}"

    @property
    def fields(self) -> tuple[str, ...]:
        """Input fields any pattern reads, in order of first use: the text a classifier sees."""
        return tuple(dict.fromkeys(f for i in range(len(self.pvps)) for f in self.pvp(i).pattern.slots))

    @property
    def pet_train(self) -> TrainConfig:
        """``train`` with ``pet.train`` over it: the PET stage's models. An adapter there (``pet.train.peft``)
        keeps the prior through 20-40 labels, while the generations, with hundreds of rows, train in full
        (bench/RESULTS.md, round 7)."""
        return TrainConfig(**{**self.train.model_dump(), **self.pet.train}) if self.pet.train else self.train

    @property
    def keeping_prior(self) -> list[str]:
        """The sections that set ``prior_weight`` (keep the untrained learner's prior while training)."""
        return [w for w, t in (("train", self.train), ("pet.train", self.pet_train)) if t.prior_weight is not None]

    @property
    def distill_train(self) -> TrainConfig:
        """``train`` with ``final.train`` over it, for at least one full pass over the pool."""
        merged = {**self.train.model_dump(), **self.final.train, "temperature": self.final.temperature,
                  "prior_weight": None}
        return TrainConfig(**{**merged, "epochs": max(1.0, merged["epochs"]), "max_steps": None})

    def for_adaptation(self, as_cloze: bool = True) -> "RunConfig":
        """The config as ``ipet adapt`` reads it: PVPs scored by their zero-shot prior (a classifier has
        none, so its PVPs are read as cloze models where ``as_cloze``: its label names may be no words
        of the model), an ``adapt`` section (defaults if none), and no iPET generations to check."""
        learner = "cloze" if self.learner == "classifier" and as_cloze else self.learner
        return self.model_copy(update={"learner": learner, "adapt": self.adapt or AdaptConfig(),
                                       "ipet": self.ipet.model_copy(update={"generations": 0})})


class ConfigError(ValueError):
    """A config that cannot be used: every problem on its own line, naming the field."""


class DuplicateKey(yaml.YAMLError):
    """A mapping that sets one key twice (YAML forbids it; PyYAML would keep the last silently)."""


class _UniqueKeys(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing a key set twice in one mapping: the first value would be lost
    without a word, e.g. a second ``seeds:`` pasted at the end of a config."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden by design
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise DuplicateKey(f"line {line}: duplicate key {key!r} (first set on line {first[key]}, "
                                       "whose value would be silently replaced); keep one")
                first[key] = line
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                pass
        return super().construct_mapping(node, deep)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeys)


def _set(tree: dict, dotted: str, value: Any) -> None:
    """Set ``dotted`` (``ipet.generations``; ``pvps.0.pattern``, a list item by its index, as problem
    lines name it) in ``tree`` to ``value``, making missing mappings on the way."""
    *parents, leaf = dotted.split(".")
    if "" in (*parents, leaf):  # `data..root` made a setting named '' (refused as "data.: Extra inputs ...")
        raise ConfigError(f"--set {dotted}: a setting without a name between its dots; write section.setting, "
                          "e.g. --set ipet.generations=2")
    for key in parents:
        tree = tree[_index(tree, key, dotted)] if isinstance(tree, list) else tree.setdefault(key, {})
        if not isinstance(tree, (dict, list)):
            raise ConfigError(f"--set {dotted}: {key!r} is not a mapping")
    tree[_index(tree, leaf, dotted) if isinstance(tree, list) else leaf] = value


def _index(items: list, key: str, dotted: str) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise ConfigError(f"--set {dotted}: {key!r} is not an index of a list of {len(items)} item(s)")
    return int(key)


def assignments(items: Sequence[str], option: str, example: str) -> list[tuple[str, Any]]:
    """A command line's ``key=value`` items in order; a key given twice is refused, as a config's key set
    twice is: the last would replace the first without a word (a pasted line, a shell alias's default)."""
    pairs, first = [], {}
    for item in items:
        key, value = assignment(item, option, example)
        if key in first:
            raise ConfigError(f"{option} {key}: given twice ({first[key]!r}, then {item!r}), and the last would "
                              "silently replace the first; keep one")
        first[key] = item
        pairs.append((key, value))
    return pairs


def assignment(item: str, option: str, example: str) -> tuple[str, Any]:
    """A command line's ``key=value`` (``--set``, ``--read``) as the key and the value parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"{option} {item!r}: expected key=value, e.g. {option} {example}")
    try:
        return key, _yaml(value)
    except DuplicateKey as err:
        raise ConfigError(f"{option} {item!r}: {err}") from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{option} {item!r}: the value is not valid YAML ({problem}); quote it, or close "
                          "its brackets") from None


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read YAML, apply ``key.sub=value`` overrides (values parsed as YAML) and validate."""
    path = Path(path)
    try:
        text = path.read_text()
        raw = _yaml(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err, text)}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config: {getattr(err, 'strerror', None) or err.reason}") from None
    if raw is None:  # each required setting was named missing, as if the file were a config without them
        raise ConfigError(f"{path}: the config file is empty (or only comments); examples/agnews.yaml is one to "
                          "start from")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    for key, value in assignments(overrides, "--set", "ipet.generations=2"):
        _set(raw, key, value)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(f"{path}: {line}" for line in problem_lines(err))) from None


def flow_config(config: RunConfig | dict | str, runner: RunnerConfig | dict | None = None) -> RunConfig:
    """A flow's ``config`` and ``runner`` parameters as one validated config, as a deployment's run
    form (the UI's JSON) sends them: the settings themselves or the path of a YAML file; ``runner``,
    when given, replaces the config's ``runner`` section. Prefect's own validation of them named
    pydantic's validator chain and the other branch of the union (``config.str: Input should be a
    valid string``) in lines spread over the state message, and logged the whole dict; here a
    problem is a line naming its setting, as ``ipet validate`` words it."""
    if isinstance(config, str):
        config = load_config(config)
    elif not isinstance(config, RunConfig):
        config = _settings(config, "config: ", ())
    if runner is None:
        return config
    return config.model_copy(update={"runner": _settings(runner, "", ("runner",), RunnerConfig)})


def _settings(value: Any, prefix: str, loc: tuple, model: type[BaseModel] = RunConfig) -> Any:
    """``value`` validated as ``model``, found at ``loc`` in a config; ConfigError with its problem lines."""
    if isinstance(value, model):
        return value
    if not isinstance(value, dict):
        where = _loc(loc) if loc else "config"
        raise ConfigError(f"{where}: expected a mapping of settings{'' if loc else ' or the path of a YAML file'}, "
                          f"not {type(value).__name__} {value!r}")
    try:
        return model.model_validate(value)
    except ValidationError as err:
        lines = [line for e in err.errors() for line in _lines({**e, "loc": (*loc, *e["loc"])})]
        raise ConfigError("\n".join(prefix + line for line in lines)) from None


def _yaml_problem(err: yaml.YAMLError, text: str) -> str:
    """A YAML error in one line: where (line, column) and what; for a line indented with a tab, which
    YAML forbids and an editor hides, the fix. PyYAML's own text spans lines and names the file
    "<unicode string>"."""
    mark = getattr(err, "problem_mark", None)
    if mark is None:  # ours (DuplicateKey), which names its line
        return " ".join(str(err).split())
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    within = f" ({err.context} on line {err.context_mark.line + 1})" if err.context and err.context_mark else ""
    tab = "; indent with spaces: YAML forbids tabs there" if "\t" in line[:len(line) - len(line.lstrip())] else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}{within}{tab}"


def problem_lines(err: ValidationError) -> list[str]:
    """A validation error as problem lines, each naming its setting."""
    return [line for error in err.errors() for line in _lines(error)]


def _lines(error: dict) -> list[str]:
    """A pydantic error as problem lines; a cross-field check's problems already name their fields."""
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return message.split(PROBLEM_SEPARATOR)
    if error["type"] == "extra_forbidden":  # a typo is the usual cause: name the setting it was meant to be
        match = nearest(str(error["loc"][-1]), _settings_at(error["loc"]))
        message += f"; did you mean {_loc((*error['loc'][:-1], match))}?" if match else ""
    return [f"{_loc(error['loc'])}: {message}"]


def _settings_at(loc: tuple) -> list[str]:
    """The setting names valid beside ``loc``'s last part: the fields of the section ``loc`` leads to
    from ``RunConfig`` (list indices skipped); none where it leads to no section."""
    section: Any = RunConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = section.model_fields.get(part)
        section = next((t for t in _types(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)),
                       None) if field else None
        if section is None:
            return []
    return list(section.model_fields)


def _types(annotation: Any) -> list[Any]:
    """The types inside an annotation (``X | None``, ``list[X]``), flattened."""
    args = typing.get_args(annotation)
    return [t for a in args for t in _types(a)] if args else [annotation]


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"
