"""Tiny masked LMs built from a config and saved to a directory, so tests need no hub; and a toy
sentiment task over their words, written as CSV files with a run config that reads them."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (AlbertConfig, AlbertForMaskedLM, BertConfig, BertForMaskedLM, BertModel,
                          BertTokenizerFast, DistilBertConfig, DistilBertForMaskedLM,
                          RobertaConfig, RobertaForMaskedLM, RobertaTokenizerFast)

WORDS = """the a movie film was it is great good fine bad awful terrible boring wonderful
sports world business science tech news category game team match market stock price company
computer software space research election war government plot actors story really very not and
of in on to x yes no maybe question answer""".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FAMILIES = ("bert", "roberta", "distilbert", "albert")  # the kinds save_tiny builds


def bert_tokenizer(directory: Path) -> BertTokenizerFast:
    """A lower-casing WordPiece tokenizer over the toy words, BERT-style."""
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS + [".", ",", "?", ":", "[", "]", "##s", "##ly", "##ed"])}
    wp = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    wp.decoder = decoders.WordPiece()
    return BertTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")


def save_tiny(kind: str, directory: Path, headless: bool = False, seed: int = 0) -> Path:
    """Save a randomly initialised tiny model of one family (plus its tokenizer) to ``directory``.

    The weights come from ``seed`` (the global torch RNG is left as it was), so every run
    of the tests sees the same tiny models.
    """
    directory = Path(directory)
    if kind == "roberta":
        tok = roberta_tokenizer(directory)
    else:
        tok = bert_tokenizer(directory)
    common = dict(vocab_size=len(tok), max_position_embeddings=130, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _tiny_model(kind, headless, common, tok)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _tiny_model(kind: str, headless: bool, common: dict, tok):
    if kind == "bert":
        cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **common)
        model = (BertModel if headless else BertForMaskedLM)(cfg)
    elif kind == "roberta":
        cfg = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **common)
        model = RobertaForMaskedLM(cfg)
    elif kind == "distilbert":
        model = DistilBertForMaskedLM(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common))
    elif kind == "albert":
        model = AlbertForMaskedLM(AlbertConfig(hidden_size=32, embedding_size=16, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64, **common))
    else:
        raise ValueError(kind)
    return model


def roberta_tokenizer(directory: Path) -> RobertaTokenizerFast:
    """A byte-level BPE tokenizer trained on the toy words, RoBERTa-style (``Ġgreat``)."""
    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" " + " ".join(WORDS) + " ."] * 50
    bpe.train_from_iterator(corpus, trainer)
    # as in real RoBERTa, "<mask>" swallows the space before it: "was <mask>" -> Ġwas, <mask>
    bpe.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    bpe.decoder = decoders.ByteLevel()
    return RobertaTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                mask_token=AddedToken("<mask>", lstrip=True, special=True, normalized=False))


POSITIVE, NEGATIVE = ["great", "good", "wonderful", "fine"], ["bad", "awful", "terrible", "boring"]
FILLER = "the a movie film was it is really very story plot actors".split()


def toy_run_config(root: Path, labeled_per_class: int = 4, steps: int = 60, generations: int = 2,
                   growth: float = 2) -> dict:
    """Write a toy task (240 train rows, 40 test rows) and a tiny BERT under ``root``; return a run
    config (as a dict, the way YAML gives it) that reads them, with its own MLflow store."""
    rng = random.Random(0)
    _write_csv(root / "train.csv", _texts(rng, 240))
    _write_csv(root / "test.csv", _texts(rng, 40))
    model = save_tiny("bert", root / "tiny-bert")
    return {
        "name": "toy",
        "model": str(model),
        "max_length": 32,
        "verbalizer": {"neg": "bad", "pos": "great"},
        "pvps": [{"pattern": "{text} it was {mask} ."}, {"pattern": "{mask} : {text}"}],
        "seeds": [1],
        "data": {"root": str(root), "train": {"path": "train.csv"}, "test": {"path": "test.csv"},
                 "labeled_per_class": labeled_per_class, "pool_size": 200},
        "train": {"learning_rate": 3e-3, "batch_size": 8, "max_steps": steps, "device": "cpu"},
        "ipet": {"generations": generations, "growth": growth},
        "final": {"train": {"min_steps": 1}},  # one pass over the 200-row pool: 25 steps
        "tracking": {"mlflow_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "toy"},
    }


def _texts(rng: random.Random, n: int) -> list[tuple[str, str]]:
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def save_classifier(directory: Path, backbone: Path, labels: tuple[str, ...] = ("neg", "pos"),
                    always: str | None = None, template: str = "{text}", margin: float = 10.0) -> Path:
    """A tiny sequence-classifier learner saved as a model directory; with ``always`` its head
    predicts that label for every input (a model of known accuracy, no training needed), by ``margin``
    (another margin: another model, of the same predictions)."""
    from prompt_core import LearnerSpec, build_learner

    learner = build_learner(LearnerSpec.classifier(str(backbone), template, labels, max_length=32))
    if always is not None:
        head = learner.model.classifier
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([margin if label == always else -margin for label in labels]))
    learner.save(directory)
    return Path(directory)


def toy_store(root: Path, gold: int = 8, pool_end: int = 108) -> dict:
    """The toy task's first ``gold`` training rows ingested into ``root/stores`` (dataset ``toy``) as
    the gold set and the rows up to ``pool_end`` as the pool; returns the store source that reads them."""
    from data.ingest import Schema, ingest_file

    header, *rows = list(csv.reader((root / "train.csv").open()))
    for name, part in (("gold", rows[:gold]), ("pool", rows[gold:pool_end])):
        with (root / f"{name}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([header, *part])
    schema = Schema(("text",), ("neg", "pos"), {"path": str(root / "test.csv")})
    ingest_file(root / "gold.csv", "toy", root / "stores", labeled=True, schema=schema)
    ingest_file(root / "pool.csv", "toy", root / "stores", schema=schema)
    return {"store": "stores", "dataset": "toy"}
