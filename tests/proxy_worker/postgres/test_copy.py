"""COPY row codecs and splitters (``proxy_worker.postgres.copy``).

Against the local PostgreSQL server (127.0.0.1:5432, user postgres, trust
authentication; skipped only when it is unreachable): the splitters must give back
exactly the CopyData messages of ``COPY ... TO STDOUT`` (text, CSV with quotes, newlines
and delimiters, custom options, header, binary), decoding must give the values a
``SELECT`` returns, and encoding a decoded row must give back its bytes; rows encoded
here must load into the server with ``COPY ... FROM STDIN`` unchanged. Hypothesis checks
the round trips and that any chunking of a stream gives the same pieces.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from proxy_worker.postgres import copy as C
from proxy_worker.postgres import types as T
from proxy_worker.postgres.copy import CopyFormatError, CopyOptions

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"

TRICKY = [
    (1, "plain", None),
    (2, "tab\there", "new\nline"),
    (3, "back\\slash", "cr\rx"),
    (4, 'q"uote,comma', ""),
    (5, "\\N", "\\."),
    (6, "héllo wörld ☃", "\x01ctl\x0b\x7f"),
    (7, "NULL", "a;b|c"),
    (8, "'single'", "\b\f\v"),
    (9, "  spaced  ", "\r\n"),
    (10, "", '""'),
]


@pytest.fixture(scope="module")
def pg():
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(DSN, autocommit=True)
    except psycopg.OperationalError as e:  # pragma: no cover - no local server
        pytest.skip(f"local PostgreSQL unreachable: {e}")
    conn.execute("CREATE TEMP TABLE t (a int, b text, c text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO t VALUES (%s, %s, %s)", TRICKY)
    yield conn
    conn.close()


def copy_out(pg, sql: str) -> list[bytes]:
    with pg.cursor() as cur, cur.copy(sql) as cp:
        return [bytes(d) for d in cp]


def split_all(splitter, chunks: list[bytes]) -> list[C.CopyPiece]:
    pieces = []
    for c in chunks:
        pieces += splitter.feed(c)
    return pieces + splitter.finish()


def expected_rows(
    pg, sql: str = "SELECT a::text, b, c FROM t ORDER BY t.a"
) -> list[list[str | None]]:
    return [list(r) for r in pg.execute(sql).fetchall()]


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "kw",
    [
        {"format": "xml"},
        {"delimiter": "ab"},
        {"delimiter": "\n"},
        {"delimiter": "\\"},
        {"delimiter": "a"},
        {"delimiter": "é"},
        {"format": "csv", "delimiter": '"'},
        {"null": "x\ny"},
        {"delimiter": ",", "null": "a,b"},
        {"format": "csv", "null": '"'},
        {"format": "csv", "quote": "\r"},
        {"encoding": "no-such-codec"},
    ],
)
def test_it_refuses_what_postgresql_refuses(kw):
    with pytest.raises((ValueError, LookupError)):
        CopyOptions(**kw)


def test_it_fills_in_the_defaults():
    assert CopyOptions().delimiter == "\t" and CopyOptions().null == "\\N"
    csv = CopyOptions(format="csv")
    assert (csv.delimiter, csv.null, csv.quote, csv.escape) == (",", "", '"', '"')
    assert CopyOptions(format="csv", quote="'").escape == "'"
    assert CopyOptions(encoding="cp932").embeds_ascii
    assert not CopyOptions().embeds_ascii


# --------------------------------------------------------------------------- text / csv vs server


@pytest.mark.parametrize(
    ("sql", "opts"),
    [
        ("COPY t TO STDOUT", CopyOptions()),
        ("COPY t TO STDOUT (DELIMITER '|', NULL '<n>')", CopyOptions(delimiter="|", null="<n>")),
        ("COPY t TO STDOUT (DELIMITER E'\\x01')", CopyOptions(delimiter="\x01")),
        ("COPY t TO STDOUT (DELIMITER ',', HEADER)", CopyOptions(delimiter=",", header=True)),
        ("COPY t TO STDOUT (FORMAT csv)", CopyOptions(format="csv")),
        ("COPY t TO STDOUT (FORMAT csv, HEADER)", CopyOptions(format="csv", header=True)),
        (
            "COPY t TO STDOUT (FORMAT csv, QUOTE '''', ESCAPE '\\', FORCE_QUOTE (b))",
            CopyOptions(format="csv", quote="'", escape="\\"),
        ),
        (
            "COPY t TO STDOUT (FORMAT csv, DELIMITER ';', NULL 'NULL', FORCE_QUOTE *)",
            CopyOptions(format="csv", delimiter=";", null="NULL"),
        ),
        (
            "COPY t TO STDOUT (FORMAT csv, DELIMITER E'\\t', NULL '\\N')",
            CopyOptions(format="csv", delimiter="\t", null="\\N"),
        ),
    ],
)
def test_it_reads_and_writes_copy_to_output_exactly(pg, sql, opts):
    chunks = copy_out(pg, sql.replace("COPY t", "COPY (SELECT * FROM t ORDER BY a)"))
    pieces = split_all(C.row_splitter(opts), chunks)
    # one CopyData per row (and one for the header line): the splitter finds the same
    assert [p.data for p in pieces] == chunks
    assert [p.kind for p in pieces] == ["header"] * opts.header + ["row"] * len(TRICKY)
    got = []
    for p in pieces[opts.header :]:
        if opts.format == "csv":
            values, quoted = C.decode_csv_row(p.data, opts)
            assert C.encode_csv_row(values, opts, quoted) == p.data
        else:
            values = C.decode_text_row(p.data, opts)
            assert C.encode_text_row(values, opts) == p.data
        got.append(values)
    assert got == expected_rows(pg)


def test_it_quotes_a_lone_backslash_dot_in_one_column_csv(pg):
    opts = CopyOptions(format="csv")
    chunks = copy_out(pg, "COPY (SELECT c FROM t ORDER BY a) TO STDOUT (FORMAT csv)")
    assert b'"\\."\n' in chunks
    for c in chunks:
        values, quoted = C.decode_csv_row(c, opts)
        assert C.encode_csv_row(values, opts) == c  # without the "was quoted" flags too


def test_it_writes_what_the_server_loads(pg):
    pg.execute("CREATE TEMP TABLE t_in (a int, b text, c text)")
    for opts, sql in [
        (CopyOptions(), "COPY t_in FROM STDIN"),
        (CopyOptions(format="csv"), "COPY t_in FROM STDIN (FORMAT csv)"),
        (
            CopyOptions(format="csv", quote="'", escape="\\", delimiter="|"),
            "COPY t_in FROM STDIN (FORMAT csv, QUOTE '''', ESCAPE '\\', DELIMITER '|')",
        ),
    ]:
        pg.execute("TRUNCATE t_in")
        rows = expected_rows(pg)
        enc = C.encode_csv_row if opts.format == "csv" else C.encode_text_row
        with pg.cursor() as cur, cur.copy(sql) as cp:
            for r in rows:
                cp.write(enc(r, opts))
        assert expected_rows(pg, "SELECT a::text, b, c FROM t_in ORDER BY t_in.a") == rows


TEXT = hs.text(
    alphabet=hs.characters(blacklist_characters="\x00", max_codepoint=0x10FF), max_size=20
)
VALUES = hs.lists(
    hs.one_of(hs.none(), TEXT, hs.sampled_from(["\\N", "\\.", "", '"', ",", "\t"])),
    min_size=1,
    max_size=5,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=hs.lists(VALUES.filter(lambda v: len(v) == 3), min_size=1, max_size=8))
def test_generated_rows_load_into_the_server(pg, rows):
    pg.execute("CREATE TEMP TABLE IF NOT EXISTS t_gen (a text, b text, c text)")
    for opts, sql in [
        (CopyOptions(), "COPY t_gen FROM STDIN"),
        (CopyOptions(format="csv"), "COPY t_gen FROM STDIN (FORMAT csv)"),
    ]:
        pg.execute("TRUNCATE t_gen")
        enc = C.encode_csv_row if opts.format == "csv" else C.encode_text_row
        with pg.cursor() as cur, cur.copy(sql) as cp:
            for r in rows:
                cp.write(enc(r, opts))
        got = [list(r) for r in pg.execute("SELECT a, b, c FROM t_gen").fetchall()]
        assert sorted(map(repr, got)) == sorted(map(repr, rows))


@settings(max_examples=500, deadline=None)
@given(values=VALUES, delim=hs.sampled_from(["\t", ",", "|", "\x01", ";"]))
def test_text_rows_round_trip(values, delim):
    opts = CopyOptions(delimiter=delim, null="\\N" if delim != "\\" else "NULL")
    row = C.encode_text_row(values, opts)
    assert row.count(b"\n") == 1 and row.endswith(b"\n")
    assert C.decode_text_row(row, opts) == values


@settings(max_examples=500, deadline=None)
@given(
    values=VALUES,
    style=hs.sampled_from([(",", '"', '"'), (";", "'", "\\"), ("\t", '"', "!"), ("|", "'", "'")]),
    null=hs.sampled_from(["", "NULL", "\\N"]),
    force=hs.booleans(),
)
def test_csv_rows_round_trip(values, style, null, force):
    delim, quote, escape = style
    if delim in null or quote in null:
        return
    opts = CopyOptions(format="csv", delimiter=delim, quote=quote, escape=escape, null=null)
    row = C.encode_csv_row(values, opts, [force] * len(values))
    got, quoted = C.decode_csv_row(row, opts)
    assert got == values
    assert C.encode_csv_row(got, opts, quoted) == row


@pytest.mark.parametrize(
    ("line", "values"),
    [
        (b"a\\tb\tc\n", ["a\tb", "c"]),
        (b"\\101\\x41\\x4g\\xZ\\q\n", ["AA\x04gxZq"]),  # octal, hex, 1-digit hex, other
        (b"\\7\\77\\777\n", ["\x07?\xff"]),  # \777 & 0xff = 0xff -> decoded as bytes below
        (b"a\\\n", ["a"]),  # a lone backslash at the end is dropped
        (b"\\N\t\\\\N\n", [None, "\\N"]),  # NULL compared before de-escaping
        (b"x\\\ty\tz\n", ["x\ty", "z"]),  # escaped delimiter
        (b"\\xc3\\xa9\n", ["é"]),  # escaped bytes form one UTF-8 character
        (b"\r\n", [""]),
    ],
)
def test_it_de_escapes_text_fields_like_copy_from(line, values):
    opts = CopyOptions(encoding="latin-1") if b"\\777" in line else CopyOptions()
    assert C.decode_text_row(line, opts) == values


def test_it_refuses_nul_and_bad_escaped_bytes():
    with pytest.raises(CopyFormatError):
        C.decode_text_row(b"\\000\n", CopyOptions())
    with pytest.raises(UnicodeDecodeError):
        C.decode_text_row(b"\\xff\n", CopyOptions())
    with pytest.raises(CopyFormatError):
        C.decode_csv_row(b'"open,\n', CopyOptions(format="csv"))


def test_csv_fields_follow_copy_from():
    opts = CopyOptions(format="csv")
    assert C.decode_csv_row(b'a"b,c"d,"",,x\n', opts) == (
        ["ab,cd", "", None, "x"],
        [True, True, False, False],
    )
    esc = CopyOptions(format="csv", escape="\\")
    assert C.decode_csv_row(b'"a\\"b\\\\c\\d"\n', esc)[0] == ['a"b\\c\\d']


def test_it_decodes_in_embedding_encodings(pg):
    # "ソ" is 0x83 0x5C in SJIS: the second byte is a backslash in ASCII
    pg.execute("SET client_encoding = 'SJIS'")
    try:
        pg.execute("CREATE TEMP TABLE t_sjis (a text, b text)")
        pg.execute("INSERT INTO t_sjis VALUES ('ソ', 'x'), ('表\\示', 'a\tb'), ('ソ\nソ', 'ソ')")
        for sql, opts in [
            ("COPY t_sjis TO STDOUT", CopyOptions(encoding="cp932")),
            ("COPY t_sjis TO STDOUT (FORMAT csv)", CopyOptions(format="csv", encoding="cp932")),
        ]:
            chunks = copy_out(pg, sql)
            pieces = split_all(C.row_splitter(opts), [b"".join(chunks)])
            assert [p.data for p in pieces] == chunks
            dec = (
                (lambda r, o=opts: C.decode_csv_row(r, o)[0])
                if opts.format == "csv"
                else (lambda r, o=opts: C.decode_text_row(r, o))
            )
            assert [dec(p.data) for p in pieces] == [
                ["ソ", "x"],
                ["表\\示", "a\tb"],
                ["ソ\nソ", "ソ"],
            ]
    finally:
        pg.execute("SET client_encoding = 'UTF8'")


# --------------------------------------------------------------------------- splitters


def test_text_splitter_finds_rows_in_any_chunks():
    opts = CopyOptions()
    stream = b"a\tb\nc\\\nd\te\n\\\\\tf\nlast"
    want = [b"a\tb\n", b"c\\\nd\te\n", b"\\\\\tf\n", b"last"]
    for cut in range(len(stream) + 1):
        got = split_all(C.TextRowSplitter(opts), [stream[:cut], stream[cut:]])
        assert [p.data for p in got] == want


def test_text_splitter_stops_at_the_end_marker():
    pieces = split_all(C.TextRowSplitter(CopyOptions(header=True)), [b"h\nx\n\\.\nignored\n"])
    assert [(p.kind, p.data) for p in pieces] == [
        ("header", b"h\n"),
        ("row", b"x\n"),
        ("end", b"\\.\n"),
        ("rest", b"ignored\n"),
    ]


@pytest.mark.parametrize(
    ("stream", "rows"),
    [
        (b"a\r\nb\r\n", [b"a\r\n", b"b\r\n"]),
        (b"a\rb\rc", [b"a\r", b"b\r", b"c"]),
        (b"a\\\rb\rc\r", [b"a\\\rb\r", b"c\r"]),
    ],
)
def test_text_splitter_handles_line_end_styles(stream, rows):
    for cut in range(len(stream) + 1):
        got = split_all(C.TextRowSplitter(CopyOptions()), [stream[:cut], stream[cut:]])
        assert [p.data for p in got] == rows
    assert [C.decode_text_row(r, CopyOptions()) for r in rows][0][0] in ("a", "a\rb")


def test_csv_splitter_keeps_quoted_newlines():
    opts = CopyOptions(format="csv")
    stream = b'1,"a\nb"\n2,"x""\n,y"\n3,plain\n"\\."\n\\.\n'
    want = [b'1,"a\nb"\n', b'2,"x""\n,y"\n', b"3,plain\n", b'"\\."\n']
    for cut in range(len(stream) + 1):
        pieces = split_all(C.CsvRowSplitter(opts), [stream[:cut], stream[cut:]])
        assert [p.data for p in pieces if p.kind == "row"] == want
        assert pieces[-1].kind == "end"
    with pytest.raises(CopyFormatError):
        split_all(C.CsvRowSplitter(opts), [b'1,"open\n'])


def test_csv_splitter_honours_a_separate_escape():
    opts = CopyOptions(format="csv", escape="\\")
    stream = b'"a\\"\nb"\n"c\\\\"\nd\n'
    pieces = split_all(C.CsvRowSplitter(opts), [stream])
    assert [p.data for p in pieces] == [b'"a\\"\nb"\n', b'"c\\\\"\n', b"d\n"]


ROWS = hs.lists(VALUES, min_size=0, max_size=6)


@settings(max_examples=300, deadline=None)
@given(rows=ROWS, cuts=hs.lists(hs.integers(0, 400), max_size=6), csv=hs.booleans())
def test_any_chunking_gives_the_same_rows(rows, cuts, csv):
    opts = CopyOptions(format="csv" if csv else "text")
    enc = C.encode_csv_row if csv else C.encode_text_row
    encoded = [enc(r, opts) for r in rows if r != ["\\."]]
    stream = b"".join(encoded)
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    pieces = split_all(C.row_splitter(opts), chunks)
    assert [p.data for p in pieces] == encoded


# --------------------------------------------------------------------------- binary


def test_it_splits_binary_copy_like_the_server_sends_it(pg):
    chunks = copy_out(pg, "COPY (SELECT * FROM t ORDER BY a) TO STDOUT (FORMAT binary)")
    # the header travels with the first row, the trailer alone
    assert chunks[0].startswith(C.BINARY_HEADER) and chunks[-1] == C.BINARY_TRAILER
    text_rows = expected_rows(pg)
    for pieces in (
        split_all(C.BinaryRowSplitter(3), chunks),
        split_all(C.BinaryRowSplitter(3), [b"".join(chunks)]),
        split_all(C.BinaryRowSplitter(), [bytes([b]) for b in b"".join(chunks)]),
    ):
        assert b"".join(p.data for p in pieces) == b"".join(chunks)
        assert [p.kind for p in pieces] == ["header"] + ["row"] * len(TRICKY) + ["trailer"]
        got = []
        for p in pieces[1:-1]:
            fields = C.decode_binary_tuple(p.data, 3)
            assert C.encode_binary_tuple(fields) == p.data
            got.append(
                [
                    None if f is None else T.decode_binary(oid, f)
                    for f, oid in zip(fields, (T.INT4, T.TEXT, T.TEXT), strict=True)
                ]
            )
        assert got == text_rows


def test_binary_header_and_trailer_can_share_a_message(pg):
    chunks = copy_out(pg, "COPY (SELECT 1 WHERE false) TO STDOUT (FORMAT binary)")
    assert chunks == [C.BINARY_HEADER + C.BINARY_TRAILER]
    pieces = split_all(C.BinaryRowSplitter(1), chunks)
    assert [p.kind for p in pieces] == ["header", "trailer"]


def test_binary_header_extension_and_rest():
    header = C.BINARY_SIGNATURE + struct.pack(">ii", 0, 3) + b"ext"
    tup = C.encode_binary_tuple([b"x", None])
    stream = header + tup + C.BINARY_TRAILER + b"junk"
    for cut in range(len(stream) + 1):
        pieces = split_all(C.BinaryRowSplitter(2), [stream[:cut], stream[cut:]])
        assert [(p.kind, p.data) for p in pieces][:3] == [
            ("header", header),
            ("row", tup),
            ("trailer", C.BINARY_TRAILER),
        ]
        assert b"".join(p.data for p in pieces) == stream


@pytest.mark.parametrize(
    "stream",
    [
        b"PGCOPX\n\xff\r\n\x00" + b"\x00" * 8,
        C.BINARY_SIGNATURE + struct.pack(">ii", 1 << 16, 0),  # WITH OIDS
        C.BINARY_SIGNATURE + struct.pack(">ii", 1 << 17, 0),  # critical flag
        C.BINARY_SIGNATURE + struct.pack(">ii", 0, -1),
        C.BINARY_HEADER + C.encode_binary_tuple([b"a"]),  # 1 field, 2 expected
        C.BINARY_HEADER + b"\x00\x02\xff\xff\xff\xfe",  # length -2
    ],
)
def test_it_refuses_malformed_binary_copy(stream):
    with pytest.raises(CopyFormatError):
        split_all(C.BinaryRowSplitter(2), [stream])


def test_an_incomplete_binary_tuple_is_an_error_at_the_end():
    sp = C.BinaryRowSplitter(1)
    assert [p.kind for p in sp.feed(C.BINARY_HEADER + b"\x00\x01\x00\x00")] == ["header"]
    with pytest.raises(CopyFormatError):
        sp.finish()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xff",
        b"\x00\x01\x00\x00\x00\x05ab",
        b"\x00\x01\xff\xff\xff\xff!",
        b"\x00\x02\xff\xff\xff\xff",
    ],
)
def test_it_refuses_malformed_binary_tuples(data):
    with pytest.raises(CopyFormatError):
        C.decode_binary_tuple(data, 1 if data[:2] != b"\x00\x02" else None)


@settings(max_examples=300, deadline=None)
@given(
    tuples=hs.lists(
        hs.lists(hs.one_of(hs.none(), hs.binary(max_size=12)), min_size=2, max_size=2), max_size=5
    ),
    cuts=hs.lists(hs.integers(0, 200), max_size=5),
)
def test_binary_streams_split_the_same_in_any_chunks(tuples, cuts):
    stream = C.BINARY_HEADER + b"".join(C.encode_binary_tuple(t) for t in tuples) + C.BINARY_TRAILER
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    pieces = split_all(C.BinaryRowSplitter(2), chunks)
    assert [C.decode_binary_tuple(p.data, 2) for p in pieces if p.kind == "row"] == tuples
