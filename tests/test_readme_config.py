"""The README's configuration against the config model (``flows/config.py``): every setting a user can write
is documented where its section is, every setting the README names (``--set`` options, dotted names, YAML
examples) exists, and a default the README states next to a setting is the model's. A field added without a
line in the README, or a setting renamed under a README that still shows the old name, fails here."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any, Iterator

import yaml
from pydantic import BaseModel

from data.sources import Source
from flows.config import RunConfig, load_config
from prompt_core import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"
CONFIGURATION = "## Configuration"  # the section that lists the top-level settings
# Dotted names in the README that are not settings: an event, its resource, a parquet metadata key, MLflow params
# and tags
NOT_SETTINGS = ("ipet.data.arrived", "ipet.dataset.", "ipet.labels", "data.sets.", "data.rows.", "data.<slot>",
                "ask.*", "ask.outcome", "labeling.precision.used", "labeling.device.used")  # MLflow params and tags


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (``X | None``, ``list[X]``)."""
    args = typing.get_args(annotation)
    if args:
        return [m for a in args for m in _models(a)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _is_overrides(annotation: Any) -> bool:
    """``pet.train``, ``final.train``: a mapping of ``train``'s settings."""
    return typing.get_origin(annotation) is dict and typing.get_args(annotation)[0] is str and \
        typing.get_args(annotation)[1] is Any


def settings(model: type[BaseModel] = RunConfig, section: str = "") -> Iterator[tuple[str, str, Any]]:
    """(section, setting as written in YAML, default) of every setting below ``model``; not a data source's
    own (``data.train.path``, ``data.test.path``, …): ``settings(Source, "source")`` lists those once."""
    for name, field in model.model_fields.items():
        written = field.alias or name
        yield section, written, field.default
        inner = _models(field.annotation)
        if inner and inner[0] is not Source:
            yield from settings(inner[0], f"{section}.{written}".lstrip("."))


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` (``ipet.generations``, ``pvps.0.pattern``, ``final.train.epochs``) names a setting."""
    model: type[BaseModel] | None = RunConfig
    for part in dotted.split("."):
        if part.isdigit():
            continue
        if model is None:
            return False
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        if part not in fields:
            return False
        inner = _models(fields[part].annotation)
        model = inner[0] if inner else TrainConfig if _is_overrides(fields[part].annotation) else None
    return True


def blocks(text: str) -> list[str]:
    """The README in blocks, each with its heading: a paragraph, a top-level bullet with what is indented
    under it (tables too), or a fenced code block."""
    found, current, heading, fenced = [], [], "", False
    for line in text.splitlines():
        starts = (not fenced and line.startswith(("#", "- ", "```"))) or (
            not fenced and current and not current[-1].strip() and line[:1] not in ("", " "))
        if starts and current:
            found.append("\n".join([heading, *current]))
            current = []
        if line.startswith("#") and not fenced:
            heading = line
            continue
        if line.startswith("```"):
            fenced = not fenced
        current.append(line)
    found.append("\n".join([heading, *current]))
    return found


def mentions(block: str, name: str, within: str = ".") -> bool:
    """``name`` in backticks (`` `name` ``, `` `name: …` ``, and `` `name.x` `` where ``within`` has the dot) or
    as a YAML key (``name:``)."""
    escaped = re.escape(name)
    return bool(re.search(rf"`{escaped}[`:= {re.escape(within)}]|(^|[\s{{,]){escaped}:", block, re.M))


def documented(section: str, setting: str, text: str) -> bool:
    """Whether ``text`` documents ``setting`` of ``section`` ("" top level, "source" a data source's)."""
    if f"`{section}.{setting}" in text:
        return True
    if not section:  # a top-level setting: in the Configuration section's own text
        return mentions(text.split(CONFIGURATION, 1)[1].split("\n## ", 1)[0], setting)
    if section == "source":  # a data source's settings: the first column of the sources' table
        return re.search(rf"^\s*\| [^|]*`{re.escape(setting)}`", text, re.M) is not None
    # a block naming the section itself (`train.device` beside `weight_decay` is adapt's paragraph, not train's),
    # and no other section with a setting of that name unless it is the bullet of this one (**`data`**: `seed`)
    names = {section, section.split(".")[-1]}
    others = {s.split(".")[-1] for s, n, _ in settings() if n == setting and s and s != section} - names
    return any(mentions(b, setting) and any(mentions(b, n, within="") for n in names)
               and (any(f"**`{n}`**" in b for n in names) or not any(mentions(b, o, within="") for o in others))
               for b in blocks(text))


def test_every_setting_is_in_the_readme_where_its_section_is():
    text = README.read_text()
    missing = [f"{s}.{n}".lstrip(".") for s, n, _ in settings() if not documented(s, n, text)]
    missing += [f"source.{n}" for _, n, _ in settings(Source, "source") if not documented("source", n, text)]
    assert missing == [], "settings of the config model the README does not document"


def test_every_setting_the_readme_names_exists():
    text = README.read_text()
    named = set(re.findall(r"--set \"?([a-z_][\w.]+)=", text))  # not the usage's `--set k=v`
    sections = {n for n, f in RunConfig.model_fields.items() if _models(f.annotation)}
    named |= {d for d in re.findall(r"`([a-z_]+(?:\.[\w*<>]+)+)", text) if d.split(".")[0] in sections
              and not d.startswith(NOT_SETTINGS) and not d.endswith(".py")}
    assert sorted(d for d in named if not resolves(d)) == [], "named in the README, not settings"


def test_the_readmes_yaml_examples_of_sections_validate():
    """A YAML example of one section (``ask:``, ``runner:``) is a valid section: its keys exist."""
    checked = 0
    for block in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S):
        for section, value in yaml.safe_load(block).items():
            model = _models(RunConfig.model_fields[section].annotation)[0]
            model.model_validate(value)
            checked += 1
    assert checked >= 2


def test_a_default_the_readme_states_is_the_models():
    """`` `setting` 2e-5 `` or `` `setting` (200) `` beside its section's name: that is the default."""
    known: dict[str, list[tuple[str, Any]]] = {}
    for section, name, default in settings():
        known.setdefault(name, []).append((section, default))
    wrong = []
    for block in blocks(README.read_text()):
        for name, number in re.findall(r"`(\w+)` \(?(\d[\d.]*(?:e-?\d+)?)(?![\w.])", block):
            candidates = [default for section, default in known.get(name, [])
                          if isinstance(default, (int, float)) and not isinstance(default, bool)
                          and (not section or mentions(block, section.split(".")[-1]))]
            if candidates and float(number) not in candidates:
                wrong.append(f"{name} {number} (the model's: {candidates})")
    assert wrong == [], "defaults the README states that the model does not have"


def test_the_readmes_commands_on_the_examples_load():
    """Each `ipet run|adapt|validate|suggest examples/X.yaml --set …` the README shows: the example with those
    overrides is a valid config (read without its data: the shared data and buckets are not here)."""
    text = README.read_text().replace("\\\n", " ")
    commands = re.findall(r"ipet (?:run|adapt|validate|suggest) (examples/[\w.-]+\.yaml)([^\n`#]*)", text)
    for example, rest in commands:
        load_config(README.parent / example, re.findall(r"--set (\S+)", rest))
    assert len(commands) >= 6 and {e for e, _ in commands} >= {p.relative_to(README.parent).as_posix()
                                                           for p in (README.parent / "examples").glob("agnews*.yaml")}


def test_every_example_config_loads():
    examples = sorted((README.parent / "examples").glob("*.yaml"))
    assert len(examples) >= 5
    for example in examples:
        load_config(example)
