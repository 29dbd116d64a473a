"""Is a CSV/TSV/JSONL file text at all? Checked before a parser reads it, because pyarrow's
readers answer a gzip file or a stray Latin-1 byte with a traceback from inside their row
handler and an error that echoes the raw bytes; a user needs one line naming the file and line.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from .errors import DataError

CHUNK = 1 << 20
NEWLINE = b"\n"
# leading bytes of the binary files most often given by mistake, and what to do instead
MAGIC = {b"\x1f\x8b": "a gzip-compressed file; decompress it first (gunzip)",
         b"PK\x03\x04": "a zip archive (or .xlsx); extract it or save the sheet as CSV",
         b"BZh": "a bzip2-compressed file; decompress it first",
         b"\xfd7zXZ\x00": "an xz-compressed file; decompress it first",
         b"\x28\xb5\x2f\xfd": "a zstd-compressed file; decompress it first",
         b"PAR1": "a parquet file; name it *.parquet or set format: parquet"}
# byte order marks of the other Unicode encodings (Excel's "Unicode Text" is UTF-16): text, but not UTF-8;
# their NUL bytes read as a binary file. UTF-32's first: its little-endian mark starts as UTF-16's does.
WIDE = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


def check_text(path: Path, name: str, fmt: str) -> None:
    """Raise ``DataError`` unless ``path`` is UTF-8 text without NUL bytes; the message names the
    file, the kind of binary or the line, never the bytes. Reads the file once, in chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, at = 1, 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            if at == 0:
                wide = next((what for mark, what in WIDE.items() if chunk.startswith(mark)), None)
                if wide:
                    raise DataError(f"{name}: {wide} text, not UTF-8 (Excel's \"Unicode Text\" is UTF-16); save the "
                                    "file as UTF-8 (Excel: CSV UTF-8)")
                kind = next((what for magic, what in MAGIC.items() if chunk.startswith(magic)), None)
                if kind:
                    raise DataError(f"{name}: not {fmt} text but {kind}")
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise DataError(f"{name}: line {line + chunk.count(NEWLINE, 0, nul)}: a NUL byte, so a binary file, "
                                f"not {fmt} text")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise DataError(f"{name}: line {line + chunk.count(NEWLINE, 0, max(err.start, 0))}: not UTF-8 text "
                                f"({err.reason}); save the file as UTF-8") from None
            line, at = line + chunk.count(NEWLINE), at + len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: line {line}: not UTF-8 text ({err.reason}, at the end); "
                        "save the file as UTF-8") from None


def line_of(path: Path, text: str) -> int:
    """The line where ``text`` first stands in the file (1 if nowhere), read in chunks: pyarrow does
    not number the rows it rejects, so a message finds the row's text instead."""
    needle, line, tail = text.encode(), 1, b""
    keep = max(len(needle) - 1, 0)  # a match may straddle two chunks
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            data = tail + chunk
            at = data.find(needle)
            if at >= 0:
                return line + data.count(NEWLINE, 0, at)
            cut = max(len(data) - keep, 0)
            line, tail = line + data.count(NEWLINE, 0, cut), data[cut:]
    return 1
