"""Patterns: parsing, field checks, rendering with the model's mask token, and truncation."""

from __future__ import annotations

import contextlib
import copy
import signal
from typing import Any, Iterator

import pytest

from prompt_core import Pattern, PatternError, Template

LONG = "x movie was great and the film was bad and the story was boring"  # one token per word
SHORT = "yes no"


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def encodings_of_word_prefixes(tokenizer: Any, pattern: Pattern, slot: str, row: dict[str, str]) -> set[tuple[int, ...]]:
    """Token ids of ``pattern`` rendered with ``row[slot]`` cut to each of its word prefixes."""
    words = row[slot].split()
    out = set()
    for k in range(len(words) + 1):
        rendered = pattern.render({**row, slot: " ".join(words[:k])}, tokenizer.mask_token)
        out.add(tuple(tokenizer(rendered)["input_ids"]))
    return out


# ---------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("template", "slots"),
    [
        ("{text} It was {mask}.", ("text",)),
        ("{b} {mask} {a} and {b} again", ("b", "a")),
        ("Question: {question}? Answer: {mask}. {passage}", ("question", "passage")),
        ("{mask} news: {{literal braces}}", ()),
    ],
)
def test_slots_are_listed_in_order_of_first_appearance(template: str, slots: tuple[str, ...]) -> None:
    assert Pattern(template).slots == slots


@pytest.mark.parametrize(
    ("template", "found"), [("{text} It was good.", 0), ("{mask} {text} {mask}", 2), ("{mask}{mask}", 2)]
)
def test_pattern_needs_exactly_one_mask(template: str, found: int) -> None:
    with pytest.raises(PatternError, match=f"exactly one {{mask}}, found {found}"):
        Pattern(template)


def test_plain_template_may_omit_the_mask_but_not_repeat_it() -> None:
    assert Template("{premise} ? {hypothesis}").slots == ("premise", "hypothesis")
    with pytest.raises(PatternError):
        Template("{mask} {text} {mask}")


@pytest.mark.parametrize(
    "template",
    [
        "{text!r} It was {mask}.",  # conversion
        "{text:>20} It was {mask}.",  # format spec
        "{} It was {mask}.",  # positional
        "{0} It was {mask}.",  # index
        "{row.text} It was {mask}.",  # attribute access
        "{row[text]} It was {mask}.",  # item access
        "{text It was {mask}.",  # unclosed
        "{text}} It was {mask}.",  # stray brace
    ],
)
def test_bad_slot_syntax_raises(template: str) -> None:
    with pytest.raises(PatternError):
        Pattern(template)


def test_check_fields_names_the_missing_slot() -> None:
    pattern = Pattern("{question} {mask} {passage}")
    pattern.check_fields(["passage", "label", "question"])  # extra columns are fine
    with pytest.raises(PatternError) as err:
        pattern.check_fields(["question", "label"])
    assert "passage" in str(err.value).replace(repr(pattern.template), "")


# -------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize(
    ("kind", "mask"), [("bert", "[MASK]"), ("roberta", "<mask>"), ("distilbert", "[MASK]"), ("albert", "[MASK]")]
)
def test_render_and_encode_use_the_tokenizers_own_mask(tiny_tokenizers: dict[str, Any], kind: str, mask: str) -> None:
    tokenizer = tiny_tokenizers[kind]
    pattern = Pattern("{text} It was {mask}.")
    assert pattern.render({"text": "a film"}, tokenizer.mask_token) == f"a film It was {mask}."
    (ids,) = pattern.encode(tokenizer, [{"text": "a film"}], max_length=64)
    assert ids.count(tokenizer.mask_token_id) == 1
    assert ids == tokenizer(f"a film It was {mask}.")["input_ids"]


def test_a_missing_field_renders_as_no_text_not_none(tiny_tokenizers: dict[str, Any]) -> None:
    """A null field (a JSONL ``null`` or absent key, a parquet null) beside a field with text is no text:
    it was rendered as the word "None", which every such row then had in its prompt."""
    tokenizer = tiny_tokenizers["bert"]
    pattern = Pattern("{title} {body} It was {mask}.")
    assert pattern.render({"title": "a film", "body": None}, "[MASK]") == "a film  It was [MASK]."
    assert pattern.encode(tokenizer, [{"title": "a film", "body": None}], max_length=64) == \
        pattern.encode(tokenizer, [{"title": "a film", "body": ""}], max_length=64)


def test_roberta_mask_swallows_the_space_before_it(tiny_tokenizers: dict[str, Any]) -> None:
    tokenizer = tiny_tokenizers["roberta"]
    (ids,) = Pattern("{text} it was {mask} .").encode(tokenizer, [{"text": "x movie"}], max_length=64)
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "x", "Ġmovie", "Ġit", "Ġwas", "<mask>", "Ġ.", "</s>"]


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_mask_token_inside_the_input_does_not_add_a_second_mask(tiny_tokenizers: dict[str, Any], kind: str) -> None:
    tokenizer = tiny_tokenizers[kind]
    rows = [{"text": f"the {tokenizer.mask_token} movie"}, {"text": f"{tokenizer.mask_token}{tokenizer.mask_token}"}]
    for ids in Pattern("{text} It was {mask}.").encode(tokenizer, rows, max_length=64):
        assert ids.count(tokenizer.mask_token_id) == 1


def test_plain_template_encodes_with_a_tokenizer_that_has_no_mask(tiny_tokenizers: dict[str, Any]) -> None:
    """A classifier learner's backbone (GPT-style, say) may have no mask token at all."""
    tokenizer = copy.deepcopy(tiny_tokenizers["bert"])
    tokenizer.mask_token = None
    assert tokenizer.mask_token is None
    assert Template("{text} ?").encode(tokenizer, [{"text": "a film"}], max_length=16) == [
        tokenizer("a film ?")["input_ids"]
    ]


# ------------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("max_length", [10, 13, 16])  # `a` stays at least as long as `b`
def test_truncation_shortens_the_long_slot_and_keeps_the_short_one(
    tiny_tokenizers: dict[str, Any], kind: str, max_length: int
) -> None:
    tokenizer = tiny_tokenizers[kind]
    pattern = Pattern("{a} is {mask} , {b} .")
    row = {"a": LONG, "b": SHORT}
    assert len(tokenizer(pattern.render(row, tokenizer.mask_token))["input_ids"]) > max_length

    (ids,) = pattern.encode(tokenizer, [row], max_length=max_length)

    assert len(ids) == max_length  # one token per word: cut exactly to the limit
    assert ids.count(tokenizer.mask_token_id) == 1
    # only `a` was cut, to a word prefix; `b`, the literal words and the specials are intact
    assert tuple(ids) in encodings_of_word_prefixes(tokenizer, pattern, "a", row)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_truncation_takes_from_the_longest_slot_first(tiny_tokenizers: dict[str, Any], kind: str) -> None:
    tokenizer = tiny_tokenizers[kind]
    pattern = Pattern("{a} {mask} {b}")
    row = {"a": LONG, "b": "x yes no maybe"}  # 14 + 4 slot tokens; [CLS] [MASK] [SEP] are 3 more
    (ids,) = pattern.encode(tokenizer, [row], max_length=3 + 6)  # 12 slot tokens must go
    # 10 from `a` balance the slots at 4 + 4, the last 2 come one from each: 3 + 3
    expected = pattern.render({"a": "x movie was", "b": "x yes no"}, tokenizer.mask_token)
    assert ids == tokenizer(expected)["input_ids"]


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_inputs_that_fit_are_not_touched(tiny_tokenizers: dict[str, Any], kind: str) -> None:
    tokenizer = tiny_tokenizers[kind]
    pattern = Pattern("{a} is {mask} , {b} .")
    row = {"a": LONG, "b": SHORT}
    full = tokenizer(pattern.render(row, tokenizer.mask_token))["input_ids"]
    assert pattern.encode(tokenizer, [row], max_length=len(full)) == [full]


@pytest.mark.parametrize(
    ("template", "max_length"),
    [("{text} it was {mask} .", 5), ("{text} it was {mask} .", 1), ("{mask} it was .", 4)],
)
def test_pattern_longer_than_max_length_raises(tiny_tokenizers: dict[str, Any], template: str, max_length: int) -> None:
    with pytest.raises(PatternError, match="longer than the maximum length"):
        Pattern(template).encode(tiny_tokenizers["bert"], [{"text": LONG}], max_length=max_length)


def test_truncation_of_multibyte_characters_terminates(tiny_tokenizers: dict[str, Any]) -> None:
    """Byte-level BPE splits "é" into two tokens that share one character span."""
    tokenizer = tiny_tokenizers["roberta"]
    pattern = Pattern("{text} it was {mask} .")
    row = {"text": "x movie héé ça ü"}
    full = len(tokenizer(pattern.render(row, tokenizer.mask_token))["input_ids"])
    with deadline(20):
        for max_length in range(8, full + 1):
            (ids,) = pattern.encode(tokenizer, [row], max_length=max_length)
            assert len(ids) <= max_length
            assert ids.count(tokenizer.mask_token_id) == 1
