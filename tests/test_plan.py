"""The plan of a run (flows/plan.py) and its stage records (flows/stages.py): pure, so tested
without Prefect, MLflow or any file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.config import ConfigError, RunConfig, load_config
from flows.plan import Plan
from flows.stages import STAGE_SLACK, Evaluation, Stage, fall, floor, stage_table

ROOT = Path(__file__).resolve().parents[1]


def config(**overrides) -> RunConfig:
    raw = {
        "model": "some/backbone",
        "verbalizer": {"pos": ["good"], "neg": ["bad"]},
        "pvps": [{"pattern": "{text} It was {mask}."}, {"pattern": "{title}? {mask}, {text}"}],
        "seeds": [1, 2],
        "data": {"labeled": {"path": "gold.csv"}, "unlabeled": {"path": "pool.csv"}},
        **overrides,
    }
    return RunConfig.model_validate(raw)


def plan(gold: int = 8, **overrides) -> Plan:
    return Plan(config(**overrides), {"labeled": gold, "pool": 100, "test": 20})


def test_members_are_every_pvp_and_seed_with_names_from_generation_and_member():
    p = plan()
    assert p.members == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert (p.gold_size, p.pool_size) == (8, 100)
    assert p.name(0, (1, 2)) == "g0-p1-s2"
    assert p.name("final", "distilled") == "final-distilled"
    assert p.untrained_name(1) == "zero-shot-p1"


def test_pet_trains_every_member_on_the_gold_set_with_its_own_seed():
    p = plan()
    assert p.pet_sets("gold.parquet") == {m: "gold.parquet" for m in p.members}
    assert [p.train_config(m).seed for m in p.members] == [1, 2, 1, 2]
    assert p.train_config((0, 2)).learning_rate == p.config.train.learning_rate


def test_pet_train_overrides_the_pet_stage_only():
    """``pet.train`` changes the PET stage's settings (generation 0); the generations keep ``train``."""
    p = plan(train={"learning_rate": 2e-5}, pet={"train": {"peft": {"method": "prefix"}, "min_steps": 30}})
    pet, later = p.train_config((0, 2), 0), p.train_config((0, 2), 1)
    assert (pet.peft.method, pet.min_steps, pet.learning_rate, pet.seed) == ("prefix", 30, 2e-5, 2)
    assert (later.peft, later.min_steps, later.learning_rate, later.seed) == (None, 60, 2e-5, 2)
    assert plan().train_config((0, 1), 0) == plan().train_config((0, 1), 1), "no pet.train: one setting for all"


@pytest.mark.parametrize(("override", "says"), [
    ("pet.train.lr=0.001", "pet.train: unknown setting(s) ['lr']; use those of `train`"),
    ("pet.train.peft.method=adapterx", "pet.train: peft.method: Input should be 'lora', 'prompt', 'ptuning' or 'prefix'"),
    ("pet.train.min_steps=0", "pet.train: min_steps: Input should be greater than or equal to 1"),
])
def test_bad_pet_train_settings_are_one_line_naming_the_field(override, says):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "examples" / "sst2.yaml", [override])
    assert str(err.value).count("\n") == 0 and says in str(err.value), str(err.value)


def test_peers_leave_out_a_member_and_its_own_predecessor():
    p = plan()
    prior = {(0, None): "a", (1, None): "b"}
    assert p.peers((0, 1), prior) == [(1, None)]
    trained = {m: str(m) for m in p.members}
    assert p.peers((0, 1), trained) == [(0, 2), (1, 1), (1, 2)]


def test_specs_follow_the_learner_and_the_final_model_reads_the_text_fields():
    p = plan()
    spec = p.spec(1)
    assert (spec.kind, spec.backbone, spec.template) == ("cloze", "some/backbone", "{title}? {mask}, {text}")
    assert spec.labels == ("pos", "neg")
    distill = p.distill_spec()
    assert (distill.kind, distill.template) == ("classifier", "{text} {title}")
    similar = plan(learner="similarity", pvps=[{"pattern": "{text}"}, {"pattern": "{title}: {text}"}])
    assert similar.spec(0).kind == "similarity" and similar.spec(0).temperature == 0.05
    assert similar.distill_spec().kind == "similarity"


def test_pvps_are_weighed_by_their_prior_only_with_gold_labels_and_a_prior():
    assert plan().weighs_pvps and plan().has_prior
    assert not plan(gold=0).weighs_pvps
    classifier = plan(learner="classifier")
    assert not classifier.has_prior and not classifier.weighs_pvps
    assert classifier.equal_weights() == [1.0, 1.0]


def test_member_weights_are_the_pvps_under_wmean_else_equal():
    models = {(0, 1): "a", (1, 1): "b", (1, 2): "c"}
    assert plan().member_weights(models, [0.5, 0.8]) == [0.5, 0.8, 0.8]
    assert plan().member_weights(models, None) is None
    assert plan().member_weights(models, [0.0, 0.0]) is None  # nothing to weigh by: equal
    assert plan(ipet={"reduction": "mean"}).member_weights(models, [0.5, 0.8]) is None


def test_a_stage_takes_its_sizes_and_pseudo_label_accuracy_from_its_sets():
    evaluation = Evaluation(0.75, [{"name": "g1-p0-s1", "test_accuracy": 0.7}], tracked={"run-1": (0.7, {})})
    sets = {(0, 1): {"name": "g1-p0-s1", "size": 40, "pseudo_label_accuracy": 0.9},
            (0, 2): {"name": "g1-p0-s2", "size": 38, "pseudo_label_accuracy": None}}
    stage = Stage.of("ipet-1", evaluation, sets=sets)
    assert (stage.train_size, stage.pseudo_label_accuracy, stage.tracked) == (40, 0.9, {"run-1": (0.7, {})})
    assert stage.models == [{"name": "g1-p0-s1", "test_accuracy": 0.7, "train_size": 40,
                             "pseudo_label_accuracy": 0.9}]
    assert list(stage.record()) == ["stage", "test_accuracy", "train_size", "pseudo_label_accuracy", "models",
                                    "model", "note"]
    skipped = Stage.not_applicable("zero-shot", "no prior")
    assert "| zero-shot | not applicable: no prior | | |" in stage_table([skipped.record(), stage.record()])


def test_the_floor_is_the_commonest_class_or_an_earlier_stage_less_the_slack():
    stages = [Stage("pet", 0.9, 8), Stage("ipet-1", None, 40), Stage("final", 0.5, 100)]
    reason, least = floor(stages, ["a", "a", "a", "b"])
    assert least == pytest.approx(0.9 - STAGE_SLACK) and "pet" in reason
    reason, least = floor([Stage("final", 0.5, 100)], ["a", "a", "a", "b"])
    assert least == pytest.approx(0.77) and reason == "always guessing the commonest class (0.7500) plus the margin 0.02"
    assert floor([Stage("final", 0.5, 100)], ["a", "a", "a", "b"], margin=0)[1] == 0.75


def test_a_final_stage_below_an_earlier_one_is_flagged():
    assert fall([Stage("pet", 0.9, 8), Stage("ipet-1", None, 40), Stage("final", 0.5, 100)]) == \
        "the final stage (0.5000) is below the best earlier stage, pet (0.9000)"
    assert fall([Stage("pet", 0.5, 8), Stage("final", 0.5, 100)]) is None


def test_the_plan_imports_neither_prefect_nor_mlflow():
    """In a fresh interpreter: importing the plan and the stage records loads no Prefect or MLflow."""
    code = ("import sys, flows.plan, flows.stages; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
