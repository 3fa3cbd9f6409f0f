"""COPY data: row codecs for the text, CSV and binary formats, and incremental row splitters.

Pure (no I/O). References: PostgreSQL docs, "COPY" (sections "File Formats": "Text
Format", "CSV Format", "Binary Format"), and the server's own reader and writer
(``src/backend/commands/copyto.c``: ``CopyAttributeOutText``, ``CopyAttributeOutCSV``;
``copyfromparse.c``: ``CopyReadLineText``, ``CopyReadAttributesText``,
``CopyReadAttributesCSV``).

How the data arrives (the protocol's CopyData messages):

* **COPY TO STDOUT** (``CopyOutResponse``): the server sends exactly one CopyData per
  row for text and CSV (the header line, when asked for, is its own message; a CSV row
  with quoted newlines is still one message, ending in ``\\n``). For binary, the 19-byte
  file header is not flushed on its own: it travels in front of the first tuple, and the
  trailer (``Int16`` -1) is its own last message (header and trailer share one message
  when there are no rows). The splitters below do not rely on any of this: they accept
  any chunking.
* **COPY FROM STDIN** (``CopyInResponse``): the client chunks as it likes (psql sends
  lines or 8 KB blocks), so rows must be found by :class:`TextRowSplitter`,
  :class:`CsvRowSplitter` or :class:`BinaryRowSplitter`.

Values are Python ``str`` (decoded with the connection's client encoding) or ``None``
(NULL) for text and CSV, raw bytes or ``None`` for binary fields. Decoding then encoding
an unmodified row gives back exactly what ``COPY TO`` wrote.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .types import EMBEDS_ASCII_CODECS

__all__ = [
    "BINARY_HEADER",
    "BINARY_SIGNATURE",
    "BINARY_TRAILER",
    "FORMATS",
    "BinaryRowSplitter",
    "CopyFormatError",
    "CopyOptions",
    "CopyPiece",
    "CsvRowSplitter",
    "TextRowSplitter",
    "decode_binary_tuple",
    "decode_csv_row",
    "decode_text_row",
    "encode_binary_tuple",
    "encode_csv_row",
    "encode_text_row",
    "parse_binary_header",
    "row_splitter",
]

#: COPY formats.
FORMATS: tuple[str, ...] = ("text", "csv", "binary")

#: The 11-byte signature that starts a binary COPY stream.
BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
#: The header PostgreSQL writes: signature, flags 0, no header extension (19 bytes).
BINARY_HEADER = BINARY_SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
#: The file trailer: a tuple field count of -1.
BINARY_TRAILER = b"\xff\xff"


class CopyFormatError(ValueError):
    """COPY data that does not follow its format (unterminated quoted CSV field, bad
    binary header, truncated tuple, wrong field count). Never carries row values."""


# --------------------------------------------------------------------------- options

_TEXT_BAD_DELIMS = "\\.abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """The format options of one COPY (as given in the statement's ``WITH (...)``).

    Attributes:
        format: ``"text"``, ``"csv"`` or ``"binary"``.
        delimiter: one single-byte character; default tab (text) or ``,`` (CSV).
        null: the NULL string; default ``\\N`` (text) or the empty string (CSV).
        quote: CSV quote character (default ``"``).
        escape: CSV escape character (default: the quote character).
        header: the first line is a header (text and CSV; ``HEADER MATCH`` counts too).
        encoding: Python codec of the data (the COPY's ``ENCODING`` option, else the
            client encoding).

    Raises:
        ValueError: what PostgreSQL refuses in ``ProcessCopyOptions``: a delimiter, quote
            or escape that is not one single-byte character, a newline or carriage return
            in any of them or in the NULL string, a text-format delimiter that is a
            backslash, dot, lower-case letter or digit, a CSV delimiter equal to the quote,
            a NULL string containing the delimiter (or, in CSV, the quote); an unknown
            format or codec.
    """

    format: str = "text"
    delimiter: str | None = None
    null: str | None = None
    quote: str = '"'
    escape: str | None = None
    header: bool = False
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown COPY format {self.format!r}")
        codecs.lookup(self.encoding)
        csv = self.format == "csv"
        delim = self.delimiter if self.delimiter is not None else ("," if csv else "\t")
        null = self.null if self.null is not None else ("" if csv else "\\N")
        escape = self.escape if self.escape is not None else self.quote
        object.__setattr__(self, "delimiter", delim)
        object.__setattr__(self, "null", null)
        object.__setattr__(self, "escape", escape)
        if self.format == "binary":
            return
        for what, ch in (("delimiter", delim), ("quote", self.quote), ("escape", escape)):
            if len(ch) != 1 or ord(ch) > 0x7F:
                raise ValueError(f"COPY {what} must be a single one-byte character")
            if ch in "\r\n":
                raise ValueError(f"COPY {what} cannot be newline or carriage return")
        if "\r" in null or "\n" in null:
            raise ValueError("COPY null representation cannot use newline or carriage return")
        if not csv and delim in _TEXT_BAD_DELIMS:
            raise ValueError(f"COPY delimiter cannot be {delim!r}")
        if csv and delim == self.quote:
            raise ValueError("COPY delimiter and quote must be different")
        if delim in null:
            raise ValueError("COPY delimiter character must not appear in the NULL specification")
        if csv and self.quote in null:
            raise ValueError("CSV quote character must not appear in the NULL specification")

    @property
    def embeds_ascii(self) -> bool:
        """Bytes of a multibyte character can look like ASCII (SJIS, BIG5, GBK...)."""
        return codecs.lookup(self.encoding).name in EMBEDS_ASCII_CODECS


def _strip_eol(row: bytes) -> bytes:
    """``row`` without its line terminator (``\\n``, ``\\r\\n`` or ``\\r``)."""
    if row.endswith(b"\n"):
        return row[:-2] if row.endswith(b"\r\n") else row[:-1]
    if row.endswith(b"\r"):
        return row[:-1]
    return row


# --------------------------------------------------------------------------- text format

_TEXT_ESCAPES = {
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}
_TEXT_UNESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_UNESCAPE_RE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))|\\\Z", re.DOTALL)
_text_tables: dict[str, dict[int, str]] = {}
_split_res: dict[str, re.Pattern[str]] = {}


def _text_table(delim: str) -> dict[int, str]:
    """``str.translate`` table of ``CopyAttributeOutText`` for a delimiter: backslash and
    the delimiter get a backslash, ``\\b \\f \\n \\r \\t \\v`` their C escapes (the
    delimiter too when it is one of them), other control characters stay as they are."""
    table = _text_tables.get(delim)
    if table is None:
        table = {ord(k): v for k, v in _TEXT_ESCAPES.items()}
        if ord(delim) not in table:
            table[ord(delim)] = "\\" + delim
        _text_tables[delim] = table
    return table


def _raw_fields(text: str, delim: str) -> list[str]:
    """Split a text-format line at unescaped delimiters (fields still escaped)."""
    if "\\" not in text:
        return text.split(delim)
    rx = _split_res.get(delim)
    if rx is None:
        rx = _split_res[delim] = re.compile(r"\\.?|" + re.escape(delim), re.DOTALL)
    fields: list[str] = []
    start = 0
    for m in rx.finditer(text):
        if m.group() == delim:
            fields.append(text[start : m.start()])
            start = m.end()
    fields.append(text[start:])
    return fields


def _unescape(raw: str, encoding: str) -> str:
    """De-escape one text-format field (``CopyReadAttributesText``): ``\\b \\f \\n \\r \\t
    \\v``, ``\\`` + 1-3 octal digits, ``\\x`` + 1-2 hex digits (bytes in ``encoding``;
    PostgreSQL reads them in the server encoding), any other ``\\c`` is ``c``, a lone
    backslash at the end is dropped.

    Raises:
        CopyFormatError: an escape giving the byte 0 (PostgreSQL refuses NUL in text).
        UnicodeDecodeError: escaped bytes that do not decode in ``encoding``.
    """
    if "\\" not in raw:
        return raw
    parts: list[str | int] = []
    pos = 0
    high = False
    for m in _UNESCAPE_RE.finditer(raw):
        if m.start() > pos:
            parts.append(raw[pos : m.start()])
        pos = m.end()
        octal, hexa, other = m.groups()
        if octal is not None or hexa is not None:
            b = int(octal, 8) & 0xFF if octal is not None else int(hexa, 16)
            if b == 0:
                raise CopyFormatError("invalid byte sequence: NUL in COPY text data")
            if b >= 0x80:
                high = True
                parts.append(b)
            else:
                parts.append(chr(b))
        elif other is not None:
            parts.append(_TEXT_UNESCAPES.get(other, other))
    parts.append(raw[pos:])
    if not high:
        return "".join(parts)  # type: ignore[arg-type]
    out = bytearray()
    for p in parts:
        if isinstance(p, int):
            out.append(p)
        else:
            out += p.encode(encoding)
    return out.decode(encoding)


def decode_text_row(row: bytes, options: CopyOptions) -> list[str | None]:
    """Values of one text-format row.

    Args:
        row: the row's bytes, with or without its line terminator.
        options: the COPY options (delimiter, NULL string, encoding).

    Returns:
        One value per column; ``None`` where the raw field equals the NULL string
        (compared before de-escaping, as PostgreSQL does).

    Raises:
        UnicodeDecodeError: bytes that do not decode in ``options.encoding``.
        CopyFormatError: see :func:`_unescape`.
    """
    text = _strip_eol(row).decode(options.encoding)
    delim, null, enc = options.delimiter, options.null, options.encoding
    assert delim is not None and null is not None
    return [None if f == null else _unescape(f, enc) for f in _raw_fields(text, delim)]


def encode_text_row(values: Sequence[str | None], options: CopyOptions) -> bytes:
    """One text-format row as ``COPY TO`` writes it (``CopyAttributeOutText``), ending in
    ``\\n``.

    Raises:
        UnicodeEncodeError: a value that ``options.encoding`` cannot represent.
    """
    delim, null = options.delimiter, options.null
    assert delim is not None and null is not None
    table = _text_table(delim)
    line = delim.join(null if v is None else v.translate(table) for v in values)
    return (line + "\n").encode(options.encoding)


# --------------------------------------------------------------------------- CSV format

_csv_res: dict[tuple[str, str, str], tuple[re.Pattern[str], re.Pattern[str]]] = {}


def decode_csv_row(row: bytes, options: CopyOptions) -> tuple[list[str | None], list[bool]]:
    """Values of one CSV row (``CopyReadAttributesCSV``).

    Args:
        row: the row's bytes, with or without its final line terminator (quoted fields
            may hold newlines).
        options: delimiter, quote, escape, NULL string, encoding.

    Returns:
        ``(values, quoted)``: one value per column (``None`` where the raw field equals
        the NULL string and was not quoted) and whether each field had quotes (kept when
        a row is written back, so ``FORCE_QUOTE`` columns stay quoted).

    Raises:
        UnicodeDecodeError: bytes that do not decode.
        CopyFormatError: an unterminated quoted field.
    """
    text = _strip_eol(row).decode(options.encoding)
    delim, quote, escape, null = options.delimiter, options.quote, options.escape, options.null
    assert delim is not None and escape is not None and null is not None
    if quote not in text:
        fields = text.split(delim)
        return [None if f == null else f for f in fields], [False] * len(fields)
    key = (delim, quote, escape)
    pats = _csv_res.get(key)
    if pats is None:
        pats = _csv_res[key] = (
            re.compile("[" + re.escape(delim + quote) + "]"),
            re.compile("[" + re.escape(quote + escape) + "]"),
        )
    outside, inside = pats
    values: list[str | None] = []
    quoted: list[bool] = []
    n = len(text)
    i = 0
    while True:
        start = i
        buf: list[str] = []
        saw_quote = False
        found_delim = False
        while True:
            m = outside.search(text, i)
            if m is None:
                buf.append(text[i:])
                end = i = n
                break
            j = m.start()
            buf.append(text[i:j])
            if text[j] == delim:
                end = j
                i = j + 1
                found_delim = True
                break
            saw_quote = True
            i = j + 1
            while True:
                m = inside.search(text, i)
                if m is None:
                    raise CopyFormatError("unterminated CSV quoted field")
                j = m.start()
                buf.append(text[i:j])
                c = text[j]
                if c == escape and j + 1 < n and text[j + 1] in (escape, quote):
                    buf.append(text[j + 1])
                    i = j + 2
                    continue
                i = j + 1
                if c == quote:
                    break
                buf.append(c)  # an escape character not followed by quote or escape
        if not saw_quote and text[start:end] == null:
            values.append(None)
        else:
            values.append("".join(buf))
        quoted.append(saw_quote)
        if not found_delim:
            return values, quoted


def _csv_field(value: str, options: CopyOptions, use_quote: bool, single: bool) -> str:
    """``CopyAttributeOutCSV``: quoted when asked, when equal to the NULL string, when it
    is ``\\.`` in a one-column COPY, or when it holds the delimiter, the quote, a newline
    or a carriage return; inside quotes the quote and escape characters get the escape."""
    delim, quote, escape = options.delimiter, options.quote, options.escape
    assert delim is not None and escape is not None
    if not use_quote:
        use_quote = (
            value == options.null
            or (single and value == "\\.")
            or delim in value
            or quote in value
            or "\n" in value
            or "\r" in value
        )
    if not use_quote:
        return value
    if escape == quote:
        body = value.replace(quote, quote + quote)
    else:
        body = value.replace(escape, escape + escape).replace(quote, escape + quote)
    return quote + body + quote


def encode_csv_row(
    values: Sequence[str | None],
    options: CopyOptions,
    quoted: Sequence[bool] | None = None,
) -> bytes:
    """One CSV row as ``COPY TO`` writes it, ending in ``\\n``.

    Args:
        values: one value per column (``None`` = NULL, written as the bare NULL string).
        options: the COPY options.
        quoted: per column, force quotes (``FORCE_QUOTE``, or "was quoted" from
            :func:`decode_csv_row`); default: quote only where needed.

    Raises:
        UnicodeEncodeError: a value that ``options.encoding`` cannot represent.
    """
    null, delim = options.null, options.delimiter
    assert null is not None and delim is not None
    single = len(values) == 1
    parts = [
        null
        if v is None
        else _csv_field(v, options, bool(quoted[k]) if quoted is not None else False, single)
        for k, v in enumerate(values)
    ]
    return (delim.join(parts) + "\n").encode(options.encoding)


# --------------------------------------------------------------------------- binary format

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def parse_binary_header(data: bytes) -> int | None:
    """Check the binary COPY file header at the start of ``data``.

    Layout: the 11-byte :data:`BINARY_SIGNATURE`, ``Int32`` flags (bit 16: OIDs
    included, which PostgreSQL 12+ refuses; bits 17-31 are critical and must be 0), an
    ``Int32`` header-extension length and that many bytes.

    Returns:
        The header's total length, or ``None`` when ``data`` is too short to tell yet.

    Raises:
        CopyFormatError: wrong signature, OIDs flag or unknown critical flags, negative
            extension length.
    """
    if len(data) < len(BINARY_SIGNATURE):
        if not BINARY_SIGNATURE.startswith(data):
            raise CopyFormatError("COPY file signature not recognized")
        return None
    if not data.startswith(BINARY_SIGNATURE):
        raise CopyFormatError("COPY file signature not recognized")
    if len(data) < 19:
        return None
    flags = _I32.unpack_from(data, 11)[0]
    if flags & (1 << 16):
        raise CopyFormatError("invalid COPY file header (WITH OIDS)")
    if flags & ~0xFFFF & ~(1 << 16):
        raise CopyFormatError("unrecognized critical flags in COPY file header")
    ext = _I32.unpack_from(data, 15)[0]
    if ext < 0:
        raise CopyFormatError("invalid COPY file header (negative extension length)")
    total = 19 + ext
    return total if len(data) >= total else None


def _binary_tuple_length(data: bytes | bytearray, off: int, ncols: int | None) -> int | None:
    """Length of the binary tuple (or trailer) starting at ``data[off]``, ``None`` when
    incomplete.

    Raises:
        CopyFormatError: a field count other than ``ncols`` (or negative other than -1),
            a field length below -1.
    """
    n = len(data)
    if off + 2 > n:
        return None
    count = _I16.unpack_from(data, off)[0]
    if count == -1:
        return 2
    if count < 0 or (ncols is not None and count != ncols):
        raise CopyFormatError(f"row field count is {count}, expected {ncols}")
    p = off + 2
    unpack = _I32.unpack_from
    for _ in range(count):
        if p + 4 > n:
            return None
        ln = unpack(data, p)[0]
        p += 4
        if ln < -1:
            raise CopyFormatError("invalid field size in binary COPY data")
        if ln > 0:
            p += ln
            if p > n:
                return None
    return p - off


def decode_binary_tuple(data: bytes, ncols: int | None = None) -> list[bytes | None]:
    """Fields of one binary tuple: ``Int16`` field count, then per field ``Int32`` length
    (-1 = NULL) and the value in its type's binary format.

    Raises:
        CopyFormatError: the trailer, a wrong field count, truncated data or trailing bytes.
    """
    n = len(data)
    if n < 2:
        raise CopyFormatError("binary COPY tuple truncated")
    count = _I16.unpack_from(data)[0]
    if count == -1:
        raise CopyFormatError("binary COPY trailer where a tuple was expected")
    if count < 0 or (ncols is not None and count != ncols):
        raise CopyFormatError(f"row field count is {count}, expected {ncols}")
    fields: list[bytes | None] = []
    p = 2
    unpack = _I32.unpack_from
    for _ in range(count):
        if p + 4 > n:
            raise CopyFormatError("binary COPY tuple truncated")
        ln = unpack(data, p)[0]
        p += 4
        if ln == -1:
            fields.append(None)
            continue
        if ln < 0 or p + ln > n:
            raise CopyFormatError("binary COPY tuple truncated")
        fields.append(data[p : p + ln])
        p += ln
    if p != n:
        raise CopyFormatError("trailing bytes after binary COPY tuple")
    return fields


def encode_binary_tuple(fields: Sequence[bytes | None]) -> bytes:
    """One binary tuple (see :func:`decode_binary_tuple`)."""
    parts = [_I16.pack(len(fields))]
    for f in fields:
        if f is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(_I32.pack(len(f)))
            parts.append(f)
    return b"".join(parts)


# --------------------------------------------------------------------------- splitters


class CopyPiece(NamedTuple):
    """A complete piece of a COPY stream, with its exact bytes.

    ``kind``: ``"header"`` (the binary file header, or the header line of a text/CSV
    COPY with ``HEADER``), ``"row"`` (one row or tuple, line terminator included),
    ``"trailer"`` (binary ``Int16`` -1), ``"end"`` (a text/CSV ``\\.`` end-of-data line),
    ``"rest"`` (anything after the trailer or end line: PostgreSQL ignores it).
    Concatenating the ``data`` of every piece gives back the stream.
    """

    kind: str
    data: bytes


# Multibyte characters of the encodings that embed ASCII (pg_*_mblen of
# src/common/wchar.c), so that a trailing byte is never read as a backslash or quote.
_MB_PATTERNS: dict[str, bytes] = {
    "cp932": rb"[\x80-\xa0\xe0-\xff][\x00-\xff]",
    "shift_jis_2004": rb"[\x80-\xa0\xe0-\xff][\x00-\xff]",
    "cp950": rb"[\x80-\xff][\x00-\xff]",
    "gbk": rb"[\x80-\xff][\x00-\xff]",
    "cp949": rb"[\x80-\xff][\x00-\xff]",
    "gb18030": rb"[\x80-\xff][\x30-\x39][\x00-\xff]{2}|[\x80-\xff][\x00-\xff]",
    "johab": rb"\x8f[\x00-\xff]{2}|[\x80-\xff][\x00-\xff]",
}


def _token_re(options: CopyOptions, specials: bytes) -> re.Pattern[bytes]:
    """Tokens of a row scan: multibyte characters first (embedding encodings only), then
    the single special bytes."""
    cls = b"[" + b"".join(re.escape(bytes([c])) for c in specials) + b"]"
    mb = _MB_PATTERNS.get(codecs.lookup(options.encoding).name)
    return re.compile((mb + b"|" if mb else b"") + cls, re.DOTALL)


class _LineSplitter:
    """Shared logic of the text and CSV splitters: a buffer, line-end detection (``\\n``,
    ``\\r\\n`` or ``\\r``, decided at the first line end as PostgreSQL does) and the
    header and ``\\.`` lines."""

    def __init__(self, options: CopyOptions) -> None:
        self.options = options
        self._buf = b""
        self._header = options.header
        self._done = False
        self._eol: bytes | None = None  # b"\n", b"\r\n" or b"\r" once known
        self._rows = 0

    def feed(self, data: bytes) -> list[CopyPiece]:
        """Add a chunk; return the pieces it completes (in order)."""
        if self._done:
            return [CopyPiece("rest", data)] if data else []
        if not data:
            return []
        pending_cr = self._buf.endswith(b"\r")
        self._buf += data
        if b"\n" not in data and b"\r" not in data and not pending_cr:
            return []  # no line can have ended in this chunk
        return self._drain(final=False)

    def finish(self) -> list[CopyPiece]:
        """End of the stream: a last line without terminator becomes a row (PostgreSQL
        accepts it).

        Raises:
            CopyFormatError: the data ends inside a quoted CSV field.
        """
        if self._done:
            return []
        pieces = self._drain(final=True)
        if self._buf:
            pieces.append(self._piece(self._buf))
            self._buf = b""
        return pieces

    def _piece(self, line: bytes) -> CopyPiece:
        if self._header:
            self._header = False
            return CopyPiece("header", line)
        if _strip_eol(line) == b"\\.":
            self._done = True
            return CopyPiece("end", line)
        return CopyPiece("row", line)

    def _drain(self, final: bool) -> list[CopyPiece]:
        pieces: list[CopyPiece] = []
        buf = self._buf
        pos = 0
        while not self._done:
            end = self._line_end(buf, pos, final)
            if end is None:
                break
            pieces.append(self._piece(buf[pos:end]))
            pos = end
        self._buf = buf[pos:]
        if self._done and self._buf:
            pieces.append(CopyPiece("rest", self._buf))
            self._buf = b""
        return pieces

    def _terminator(self, buf: bytes, j: int, final: bool) -> int | None:
        """End offset of the line terminator starting at ``buf[j]`` (``\\n`` or ``\\r``),
        ``-1`` when it is not one in this stream's line-end style, ``None`` when the next
        byte is needed to decide."""
        c = buf[j]
        if self._eol is None:
            if c == 0x0A:
                self._eol = b"\n"
                return j + 1
            if j + 1 >= len(buf):
                return j + 1 if final else None
            self._eol = b"\r\n" if buf[j + 1] == 0x0A else b"\r"
        if self._eol == b"\r":
            return j + 1 if c == 0x0D else -1
        if c == 0x0A:
            return j + 1
        return -1  # a \r before \n (CRNL) or a stray \r: part of the line

    def _line_end(self, buf: bytes, pos: int, final: bool) -> int | None:
        raise NotImplementedError


class TextRowSplitter(_LineSplitter):
    """Find the rows of a text-format COPY stream in arbitrary chunks.

    A row ends at an unescaped line terminator (a backslash escapes the byte after it,
    a raw newline included, as in ``CopyReadLineText``). The first line is a
    ``"header"`` piece when ``options.header``; a line ``\\.`` ends the data (``"end"``,
    then ``"rest"``). Each feed rescans the unfinished row from its start, but only when
    the chunk holds a ``\\n`` or ``\\r`` byte (which no multibyte character contains).
    """

    def __init__(self, options: CopyOptions) -> None:
        super().__init__(options)
        self._tokens = _token_re(options, b"\\\n\r")
        mb = _MB_PATTERNS.get(codecs.lookup(options.encoding).name)
        self._mb = re.compile(mb, re.DOTALL) if mb else None

    def _line_end(self, buf: bytes, pos: int, final: bool) -> int | None:
        search = self._tokens.search
        mb = self._mb
        n = len(buf)
        while True:
            m = search(buf, pos)
            if m is None:
                return None
            tok = m.group()
            pos = m.end()
            if len(tok) > 1:
                continue  # a multibyte character
            if tok == b"\\":
                # the backslash escapes the next character, whatever it is
                if mb is not None and (c := mb.match(buf, pos)) is not None:
                    pos = c.end()
                else:
                    pos += 1
                if pos > n:
                    return None
                continue
            end = self._terminator(buf, m.start(), final)
            if end is None:
                return None
            if end >= 0:
                return end


class CsvRowSplitter(_LineSplitter):
    """Find the rows of a CSV COPY stream in arbitrary chunks: a row ends at a line
    terminator outside quotes; quote and escape characters toggle as in
    ``CopyReadLineText`` (an escape counts only inside quotes, right before a quote).
    ``"header"``, ``"end"`` (a line ``\\.``, which PostgreSQL up to 17 reads as the end
    of the data) and rescanning as in :class:`TextRowSplitter`."""

    def __init__(self, options: CopyOptions) -> None:
        super().__init__(options)
        q, e = options.quote.encode(), (options.escape or options.quote).encode()
        self._q = q[0]
        # CopyReadLineText: an escape equal to the quote is no escape (the quote toggles)
        self._e = e[0] if e != q else -1
        self._tokens = _token_re(options, q + e + b"\n\r")

    def _line_end(self, buf: bytes, pos: int, final: bool) -> int | None:
        in_quote = False
        last_was_esc = False
        q, e = self._q, self._e
        for m in self._tokens.finditer(buf, pos):
            tok = m.group()
            if len(tok) > 1:
                last_was_esc = False
                continue
            c = tok[0]
            if in_quote and c == e:
                last_was_esc = not last_was_esc
            if c == q and not last_was_esc:
                in_quote = not in_quote
            if c != e:
                last_was_esc = False
            if c in (0x0A, 0x0D) and not in_quote:
                end = self._terminator(buf, m.start(), final)
                if end is None:
                    return None
                if end >= 0:
                    return end
        if final and in_quote:
            raise CopyFormatError("unterminated CSV quoted field")
        return None


class BinaryRowSplitter:
    """Find the header, tuples and trailer of a binary COPY stream in arbitrary chunks.

    Args:
        ncols: expected field count of every tuple (``None``: not checked).
    """

    def __init__(self, ncols: int | None = None) -> None:
        self.ncols = ncols
        self._buf = bytearray()
        self._header_done = False
        self._done = False

    def feed(self, data: bytes) -> list[CopyPiece]:
        """Add a chunk; return the pieces it completes.

        Raises:
            CopyFormatError: see :func:`parse_binary_header` and
                :func:`decode_binary_tuple`.
        """
        if self._done:
            return [CopyPiece("rest", data)] if data else []
        self._buf += data
        pieces: list[CopyPiece] = []
        buf = self._buf
        pos = 0
        if not self._header_done:
            total = parse_binary_header(bytes(buf))
            if total is None:
                return pieces
            pieces.append(CopyPiece("header", bytes(buf[:total])))
            pos = total
            self._header_done = True
        while True:
            ln = _binary_tuple_length(buf, pos, self.ncols)
            if ln is None:
                break
            chunk = bytes(buf[pos : pos + ln])
            pos += ln
            if ln == 2 and chunk == BINARY_TRAILER:
                pieces.append(CopyPiece("trailer", chunk))
                self._done = True
                if pos < len(buf):
                    pieces.append(CopyPiece("rest", bytes(buf[pos:])))
                pos = len(buf)
                break
            pieces.append(CopyPiece("row", chunk))
        del buf[:pos]
        return pieces

    def finish(self) -> list[CopyPiece]:
        """End of the stream.

        Raises:
            CopyFormatError: an incomplete header or tuple is left over.
        """
        if self._buf and not self._done:
            raise CopyFormatError("binary COPY data ends inside a tuple or header")
        return []


def row_splitter(
    options: CopyOptions, ncols: int | None = None
) -> TextRowSplitter | CsvRowSplitter | BinaryRowSplitter:
    """The splitter for ``options.format`` (``ncols`` only checks binary tuples)."""
    if options.format == "binary":
        return BinaryRowSplitter(ncols)
    if options.format == "csv":
        return CsvRowSplitter(options)
    return TextRowSplitter(options)
