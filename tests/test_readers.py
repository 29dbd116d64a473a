"""One reader per format: a whole-file read (``read_source``) and a stream (``read_batches``) of the
same file give the same one-line error, naming the file and line, and the same texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.errors import DataError
from data.sources import Source, read_source
from data.stream import read_batches


def both_errors(path: Path, columns: list[str], batch_size: int = 2) -> tuple[str, str]:
    """The DataError of the whole-file read and of the stream (small batches: it may come after some)."""
    with pytest.raises(DataError) as whole:
        read_source(Source(path=str(path)))
    with pytest.raises(DataError) as streamed:
        for _ in read_batches(str(path), columns, batch_size=batch_size):
            pass
    return str(whole.value), str(streamed.value)


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_a_ragged_row_is_the_same_line_either_way(tmp_path: Path, fmt: str) -> None:
    sep = "," if fmt == "csv" else "\t"
    path = tmp_path / f"ragged.{fmt}"
    path.write_text(f"text{sep}label\n" + "".join(f"film {i}{sep}pos\n" for i in range(6)) + f"a{sep}b{sep}c\nok{sep}neg\n")
    whole, streamed = both_errors(path, ["text"])
    assert whole == streamed == (f"{path}: 1 malformed row(s); wrong delimiter or unquoted "
                                 f"{'comma' if fmt == 'csv' else 'tab'}? line 8 has 3 columns, expected 2: "
                                 f"{f'a{sep}b{sep}c'!r}")


def test_a_ragged_row_past_the_first_streamed_block_is_named_by_its_line(tmp_path: Path) -> None:
    """A stream reads a CSV in 1 MiB blocks, a whole-file read in one; the line is the file's either way."""
    path = tmp_path / "big.csv"
    rows = [f"{'a fairly long review text ' * 4}{i},pos\n" for i in range(12_000)]  # about 1.3 MiB
    path.write_text("text,label\n" + "".join(rows) + "one,two,three\n")
    whole, streamed = both_errors(path, ["text"], batch_size=1024)
    assert whole == streamed and "line 12002 has 3 columns, expected 2" in whole and "\n" not in whole


def test_a_json_column_changing_type_is_the_same_line_either_way(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    records = [{"text": f"film {i}", "label": "pos"} for i in range(5)] + [{"text": 7, "label": "neg"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    whole, streamed = both_errors(path, ["text"])
    assert whole == streamed == (f"{path}: line 6: cannot read as jsonl: column 'text' holds a number here but a "
                                 "string on line 1; give a column one JSON type")


@pytest.mark.parametrize("row", ['{"text": "a", "label": "neg", "text": "b"}', '{"text": {"x": 1, "x": 2}}'],
                         ids=["top-level", "nested"])
def test_a_json_key_given_twice_is_the_same_line_either_way(tmp_path: Path, row: str) -> None:
    """``json`` keeps the last of a key's values and drops the others without a word: refused, naming the
    file, the line and the key."""
    path = tmp_path / "twice.jsonl"
    path.write_text("".join(json.dumps({"text": f"film {i}", "label": "pos"}) + "\n" for i in range(5)) + row + "\n")
    whole, streamed = both_errors(path, ["text"])
    key = "text" if row.count('"text"') == 2 else "x"
    assert whole == streamed == (f"{path}: line 6: key {key!r} given twice in one object, so one of its values "
                                 "would be dropped without a word; keep one")


# columns a reader that types them damages (numbers, booleans, nulls: 007 is 7, True is true, NA a null), and a
# mix of them (a string column to that reader too); each value a text or an id a user means as written
AS_WRITTEN = {"numbers": ["007", "1.0", "1e3", "-0", "12345678901234567890123"], "booleans": ["true", "False"],
              "nulls": ["nan", "NA", "", "3"], "mixed": ["007", "1.0", "1e3", "true", "nan", "NA", ""]}


def whole_and_streamed(source: Source, columns: list[str], optional: list[str]) -> tuple[list[dict], list[dict]]:
    """The rows of a whole-file read (``read_source``) and of a stream (2-row batches), as dicts."""
    whole = read_source(source).select(["id", *columns, *optional]).to_pylist()
    streamed = [row for batch in read_batches(source.path, columns, ["id", *optional], batch_size=2)
                for row in batch.to_pylist()]
    return whole, [{"id": r["id"], **{c: r[c] for c in [*columns, *optional]}} for r in streamed]


@pytest.mark.parametrize("values", AS_WRITTEN)
@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_csv_texts_and_ids_are_read_as_written_either_way(tmp_path: Path, fmt: str, values: str) -> None:
    """A whole CSV was one block whose column types pyarrow inferred over all its rows: a text or id column
    of numbers lost what made each value itself (``007`` was ``7``, ``1e3`` ``1000``, ``true`` a boolean,
    ``NA`` and ``nan`` nulls), while a stream read the same file as strings. Both read it as written."""
    sep = "," if fmt == "csv" else "\t"
    path = tmp_path / f"numbers.{fmt}"
    ids = [v or "-" for v in AS_WRITTEN[values]]  # an empty id is no id (refused), an empty text a text
    path.write_text(f"id{sep}text{sep}label\n" + "".join(f"{i}{sep}{v}{sep}1.0\n" for i, v in zip(ids, AS_WRITTEN[values])))
    whole, streamed = whole_and_streamed(Source(path=str(path), id_column="id"), ["text"], ["label"])
    assert whole == streamed == [{"id": i, "text": v, "label": "1.0"} for i, v in zip(ids, AS_WRITTEN[values])]


@pytest.mark.parametrize(("fmt", "written", "text"), [
    ("tsv", 'he said "great" twice', 'he said "great" twice'),  # a TSV has no quoting: quotes are text
    ("tsv", '"all of it quoted"', '"all of it quoted"'),
    ("tsv", 'an odd " quote', 'an odd " quote'),
    ("csv", '"he said ""great"", twice"', 'he said "great", twice'),  # a CSV's quoting, commas inside
])
def test_quotes_inside_texts_are_read_as_the_format_writes_them(tmp_path: Path, fmt: str, written: str,
                                                                 text: str) -> None:
    sep = "," if fmt == "csv" else "\t"
    path = tmp_path / f"quotes.{fmt}"
    path.write_text(f"text{sep}label\nfirst{sep}pos\n{written}{sep}neg\nlast{sep}pos\n")
    whole = read_source(Source(path=str(path))).to_pylist()
    streamed = [row for batch in read_batches(str(path), ["text", "label"], batch_size=2) for row in batch.to_pylist()]
    assert [{"id": r.pop("id"), **r} for r in whole] == [{"id": "1", "text": "first", "label": "pos"},
                                                         {"id": "2", "text": text, "label": "neg"},
                                                         {"id": "3", "text": "last", "label": "pos"}]
    assert streamed == [{k: v for k, v in r.items() if k != "id"} for r in whole]


def test_blank_lines_in_a_jsonl_file_are_no_rows(tmp_path: Path) -> None:
    """A trailing newline too many, or a blank line between objects (an editor's, a concatenation's), is
    not an object: skipped, and the rows keep their numbers, whichever way the file is read."""
    path = tmp_path / "blank.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n  \n{"text": "c"}\n\n\r\n')
    whole = read_source(Source(path=str(path))).to_pylist()
    streamed = [row for batch in read_batches(str(path), ["text"], batch_size=2) for row in batch.to_pylist()]
    assert whole == [{"id": str(i), "text": t} for i, t in enumerate("abc", start=1)]
    assert streamed == [{"text": t} for t in "abc"]


def test_a_headerless_csv_is_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "bare.csv"
    path.write_text("".join(f"{v},{v}\n" for v in AS_WRITTEN["numbers"]))
    table = read_source(Source(path=str(path), header=False, columns=["key", "text"], id_column="key", rows=(1, 4)))
    assert table.select(["id", "text"]).to_pylist() == [{"id": v, "text": v} for v in AS_WRITTEN["numbers"][1:4]]


def test_json_numbers_are_texts_as_written_either_way(tmp_path: Path) -> None:
    """A JSON number in a text or id field is the text the line writes (a float made ``7.0`` the text
    ``7`` and ``1e3`` ``1000``, and an id past 64 bits a traceback); a JSON boolean is ``true``/``false``."""
    path = tmp_path / "typed.jsonl"
    lines = ['{"id": 7, "text": 7, "label": 1.0, "flag": true}', '{"id": 7.0, "text": 1e3, "label": 2}',
             '{"id": 12345678901234567890123, "text": -0.50, "label": null, "flag": false}',
             '{"id": 1E3, "text": 2.5e-1}']
    path.write_text("\n".join(lines) + "\n")
    whole, streamed = whole_and_streamed(Source(path=str(path), id_column="id"), ["text"], ["label", "flag"])
    assert whole == streamed == [
        {"id": "7", "text": "7", "label": "1.0", "flag": "true"},
        {"id": "7.0", "text": "1e3", "label": "2", "flag": None},
        {"id": "12345678901234567890123", "text": "-0.50", "label": None, "flag": "false"},
        {"id": "1E3", "text": "2.5e-1", "label": None, "flag": None}]


def test_parquet_numbers_are_the_texts_of_their_values_either_way(tmp_path: Path) -> None:
    """A parquet column holds values, not what was typed: an int is its digits, a whole float an int (a
    float past 2**53 was a pyarrow traceback), any other float its shortest exact form, a boolean
    ``true``/``false``; the same in a stream."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"id": pa.array([7, -3, 2**62, 0, 1], pa.int64()), "text": [7.0, 0.1, None, 1e16, 1e30],
                             "label": [True, False, None, None, None],
                             "half": pa.array([1.0, 2.5, None, None, None], pa.float16())}), path)
    whole, streamed = whole_and_streamed(Source(path=str(path), id_column="id"), ["text"], ["label", "half"])
    assert whole == streamed == [
        {"id": "7", "text": "7", "label": "true", "half": "1"},
        {"id": "-3", "text": "0.1", "label": "false", "half": "2.5"},
        {"id": str(2**62), "text": None, "label": None, "half": None},
        {"id": "0", "text": "10000000000000000", "label": None, "half": None},
        {"id": "1", "text": "1e+30", "label": None, "half": None}]


def test_a_missing_id_column_in_a_semicolon_sheet_hints_at_the_delimiter(tmp_path: Path) -> None:
    """A spreadsheet saved with ';' (some locales' CSV) reads as one column named 'id;text;label':
    the id column is merged, not missing, and the message says where to look."""
    sheet = tmp_path / "pet.csv"
    sheet.write_text("id;text;label\n1;good;pos\n")
    with pytest.raises(DataError, match=r"id column 'id' not found \(columns: \['id;text;label'\]\); "
                                        r"is the delimiter right \(format: csv or tsv\)\?"):
        read_source(Source(path=str(sheet), id_column="id"))
