"""PostgreSQL types for masking (``proxy_worker.postgres.types``).

The binary decoders are checked against the local PostgreSQL server (127.0.0.1:5432,
user postgres, trust authentication; skipped only when it is unreachable): the server's
own ``*_send`` functions give the binary form of many values and its text cast the text
the decoder must produce. Malformed values must raise ``BinaryFormatError``; array
literals round-trip through ``array_literal`` / ``parse_array_literal`` (hypothesis) and
parse like PostgreSQL's ``unnest``.
"""

from __future__ import annotations

import codecs
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from proxy_worker.postgres import types as T

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@pytest.fixture(scope="module")
def pg():
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(DSN, autocommit=True)
    except psycopg.OperationalError as e:  # pragma: no cover - no local server
        pytest.skip(f"local PostgreSQL unreachable: {e}")
    conn.execute("SET DateStyle = ISO; SET extra_float_digits = 1; SET TimeZone = 'UTC'")
    yield conn
    conn.close()


def sent(pg, send: str, cast: str, literals: list[str]) -> list[tuple[bytes, str]]:
    """``(binary form, text form)`` of each SQL literal, from the server (``format('%s')``
    calls the type's output function; ``::text`` would not for inet and cidr)."""
    rows = pg.execute(
        f"SELECT {send}(v), format('%s', v)"
        f" FROM (SELECT unnest(ARRAY[{', '.join(literals)}]::{cast}) v) s"
    ).fetchall()
    return [(bytes(b), t) for b, t in rows]


# --------------------------------------------------------------------------- categories


@pytest.mark.parametrize(
    ("oid", "cat"),
    [
        (25, T.TEXT_LIKE),
        (1043, T.TEXT_LIKE),
        (1042, T.TEXT_LIKE),
        (19, T.TEXT_LIKE),
        (18, T.TEXT_LIKE),
        (705, T.TEXT_LIKE),
        (142, T.TEXT_LIKE),
        (114, T.JSON_KIND),
        (3802, T.JSON_KIND),
        (21, T.NUMERIC_LIKE),
        (23, T.NUMERIC_LIKE),
        (20, T.NUMERIC_LIKE),
        (26, T.NUMERIC_LIKE),
        (1700, T.NUMERIC_LIKE),
        (869, T.INET_KIND),
        (650, T.INET_KIND),
        (17, T.BYTEA_KIND),
        (16, T.INERT),
        (700, T.INERT),
        (701, T.INERT),
        (1082, T.INERT),
        (1184, T.INERT),
        (1186, T.INERT),
        (2950, T.INERT),
        (600, T.INERT),
        (829, T.INERT),
        (1560, T.INERT),
        (3904, T.INERT),
        (4451, T.INERT),
        (3614, T.OTHER),
        (2205, T.OTHER),
        (1009, T.ARRAY),
        (1015, T.ARRAY),
        (1007, T.ARRAY),
        (1016, T.ARRAY),
        (199, T.ARRAY),
        (3807, T.ARRAY),
        (2249, T.UNKNOWN),
        (16384, T.UNKNOWN),
        (0, T.UNKNOWN),
    ],
)
def test_it_classifies_types(oid, cat):
    assert T.category(oid) == cat


def test_it_knows_the_array_types():
    assert T.ARRAY_ELEMENT[1009] == T.TEXT
    assert T.ARRAY_ELEMENT[1015] == T.VARCHAR
    assert T.ARRAY_ELEMENT[1007] == T.INT4
    assert T.ARRAY_ELEMENT[1016] == T.INT8
    assert T.ARRAY_ELEMENT[199] == T.JSON
    assert T.ARRAY_ELEMENT[3807] == T.JSONB
    assert T.element_category(1041) == T.INET_KIND
    assert T.element_category(1182) == T.INERT
    assert T.element_category(25) == T.UNKNOWN  # not an array type


def test_it_matches_the_servers_catalog(pg):
    rows = pg.execute(
        "SELECT oid::int, typname, typarray::int FROM pg_type WHERE oid = ANY(%s)",
        (list(T.TYPE_NAMES),),
    ).fetchall()
    assert len(rows) == len(T.TYPE_NAMES)
    for oid, name, arr in rows:
        assert T.TYPE_NAMES[oid] == name
        if arr:
            assert T.ARRAY_OF[oid] == arr, name
        else:
            assert oid not in T.ARRAY_OF


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("UTF8", "utf-8"),
        ("utf-8", "utf-8"),
        ("Unicode", "utf-8"),
        ("LATIN1", "iso8859-1"),
        ("latin9", "iso8859-15"),
        ("ISO-8859-5", "iso8859-5"),
        ("WIN1252", "cp1252"),
        ("Windows1250", "cp1250"),
        ("EUC_JP", "euc_jp"),
        ("SJIS", "cp932"),
        ("Shift_JIS", "cp932"),
        ("BIG5", "cp950"),
        ("GB18030", "gb18030"),
        ("KOI8R", "koi8-r"),
        ("SQL_ASCII", None),
        ("EUC_TW", None),
        ("MULE_INTERNAL", None),
        ("klingon", None),
        ("", None),
    ],
)
def test_it_maps_encodings_to_python_codecs(name, codec):
    assert T.python_codec(name) == codec


def test_every_mapped_codec_exists():
    for pg_name, codec in T._PG_ENCODINGS.items():
        if codec is not None:
            codecs.lookup(codec)
        assert T.canonical_encoding(pg_name) == pg_name


def test_every_server_encoding_name_is_known(pg):
    names = pg.execute(
        "SELECT pg_encoding_to_char(i) FROM generate_series(0, 41) i"
        " WHERE pg_encoding_to_char(i) <> ''"
    ).fetchall()
    for (n,) in names:
        assert T.canonical_encoding(n) == n


# --------------------------------------------------------------------------- scalars vs server


NUMERICS = [
    "0",
    "0.000",
    "1",
    "-1",
    "10000",
    "9999",
    "12345678901234567890123456789012345678901234567890",
    "-0.0000001",
    "0.00000000000000000000000000000000000000000012340",
    "3.14159265358979323846264338327950288419716939937510",
    "1e100",
    "-1e-100",
    "123.4500",
    "100000000.00000001",
    "'NaN'",
    "'Infinity'",
    "'-Infinity'",
    "4111111111111111",
    "999999999999.999999",
    "0.1",
    "-5000.0005",
    "1.000000000000000000000000000000000000000000000000000000000000000000000001",
]


def test_it_decodes_numeric_like_the_server(pg):
    lits = NUMERICS + [f"'{x}'" for x in ("1e-1000", "1e1000", "-123456789.123456789e50")]
    for binary, text in sent(pg, "numeric_send", "numeric[]", lits):
        assert T.decode_numeric(binary) == text
        assert T.decode_binary(T.NUMERIC, binary) == text


def test_it_decodes_generated_numerics_like_the_server(pg):
    import random

    rnd = random.Random(1700)
    lits = []
    for _ in range(300):
        ip = str(rnd.randint(0, 10 ** rnd.randint(0, 30)))
        fp = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 25)))
        lits.append(f"'{rnd.choice(['', '-'])}{ip}{'.' + fp if fp else ''}'")
    for binary, text in sent(pg, "numeric_send", "numeric[]", lits):
        assert T.decode_numeric(binary) == text


def test_it_truncates_digits_hidden_by_the_scale():
    # weight 0, dscale 1, digits [1, 2345]: 1.2345 shown with one decimal -> 1.2
    data = struct.pack(">hhHH2h", 2, 0, 0, 1, 1, 2345)
    assert T.decode_numeric(data) == "1.2"
    # non-canonical zeros are stripped
    data = struct.pack(">hhHH3h", 3, 1, 0x4000, 0, 0, 12, 0)
    assert T.decode_numeric(data) == "-12"
    assert T.decode_numeric(struct.pack(">hhHH", 0, 5, 0x4000, 2)) == "0.00"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01\x00\x00\x00\x00\x00\x00",  # one digit announced, none there
        struct.pack(">hhHH1h", 1, 0, 0x1234, 0, 1),  # bad sign
        struct.pack(">hhHH1h", 1, 0, 0, 0, 10000),  # digit out of range
        struct.pack(">hhHH1h", 1, 0, 0, 0x4000, 1),  # dscale too big
        struct.pack(">hhHH", -1, 0, 0, 0),
        struct.pack(">hhHH1h", 1, 0, 0, 0, 1) + b"\x00",
    ],
)
def test_it_refuses_malformed_numerics(data):
    with pytest.raises(T.BinaryFormatError):
        T.decode_numeric(data)


INETS = [
    "'192.168.0.1'",
    "'10.0.0.0/8'",
    "'0.0.0.0'",
    "'255.255.255.255/32'",
    "'192.168.0.1/24'",
    "'::'",
    "'::1'",
    "'::1/128'",
    "'2001:db8::1'",
    "'2001:db8::/32'",
    "'2001:db8:0:0:1:0:0:1'",
    "'2001:0:0:1::1'",
    "'fe80::1ff:fe23:4567:890a/64'",
    "'::ffff:1.2.3.4'",
    "'::1.2.3.4'",
    "'::0.0.0.1'",
    "'::ffff:0:0'",
    "'1::'",
    "'1:2:3:4:5:6:7:8'",
    "'0:0:1:0:0:0:1:0'",
    "'1:0:0:2:0:0:0:3'",
    "'::2:3:4:5:6:7:8'",
]


def test_it_decodes_inet_like_the_server(pg):
    for binary, text in sent(pg, "inet_send", "inet[]", INETS):
        assert T.decode_inet(binary, cidr=False) == text
        assert T.decode_binary(T.INET, binary) == text


def test_it_decodes_cidr_like_the_server(pg):
    lits = [
        "'10.0.0.0/8'",
        "'192.168.1.0/24'",
        "'1.2.3.4'",
        "'2001:db8::/32'",
        "'::/0'",
        "'::1'",
        "'::ffff:1.2.3.0/120'",
        "'0.0.0.0/0'",
        "'2001:db8:1234::/48'",
    ]
    for binary, text in sent(pg, "cidr_send", "cidr[]", lits):
        assert T.decode_inet(binary, cidr=True) == text


def test_it_decodes_generated_addresses_like_the_server(pg):
    import random

    rnd = random.Random(869)
    lits = []
    for _ in range(300):
        if rnd.random() < 0.3:
            lits.append(
                f"'{'.'.join(str(rnd.randint(0, 255)) for _ in range(4))}/{rnd.randint(0, 32)}'"
            )
        else:
            words = [rnd.choice([0, 0, 0, 1, 0xFFFF, rnd.randint(0, 0xFFFF)]) for _ in range(8)]
            lits.append(f"'{':'.join(f'{w:x}' for w in words)}/{rnd.randint(0, 128)}'")
    for binary, text in sent(pg, "inet_send", "inet[]", lits):
        assert T.decode_inet(binary, cidr=False) == text


@pytest.mark.parametrize(
    ("data", "cidr"),
    [
        (b"\x02\x20\x00\x04\x01\x02\x03", False),  # short address
        (b"\x04\x20\x00\x04\x01\x02\x03\x04", False),  # family
        (b"\x02\x21\x00\x04\x01\x02\x03\x04", False),  # bits > 32
        (b"\x02\x20\x00\x10\x01\x02\x03\x04", False),  # nb mismatch
        (b"\x02\x08\x01\x04\x0a\x00\x00\x01", True),  # host bits set in a cidr
        (b"\x02", False),
    ],
)
def test_it_refuses_malformed_inets(data, cidr):
    with pytest.raises(T.BinaryFormatError):
        T.decode_inet(data, cidr=cidr)


@pytest.mark.parametrize(
    ("send", "cast", "oid", "lits"),
    [
        ("int2send", "int2[]", T.INT2, ["0", "-32768", "32767", "12"]),
        ("int4send", "int4[]", T.INT4, ["0", "-2147483648", "2147483647", "123456789"]),
        ("int8send", "int8[]", T.INT8, ["0", "-9223372036854775808", "4111111111111111"]),
        ("oidsend", "oid[]", T.OID, ["0", "4294967295", "16384"]),
        ("boolsend", "bool[]", T.BOOL, ["true", "false"]),
        ("uuid_send", "uuid[]", T.UUID, ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"]),
        ("byteasend", "bytea[]", T.BYTEA, ["'\\x00ff10'", "''", "'abc'"]),
        ("textsend", "text[]", T.TEXT, ["'plain'", "''", "'Zoë ☃'", "'tab\there'"]),
        ("varcharsend", "varchar[]", T.VARCHAR, ["'x'"]),
        ("bpcharsend", "bpchar[]", T.BPCHAR, ["'ab   '"]),
        ("namesend", "name[]", T.NAME, ["'pg_class'"]),
        ("charsend", '"char"[]', T.CHAR, ["'a'", "''", "chr(200)"]),
        ("json_send", "json[]", T.JSON, ["'{\"a\": [1, 2]}'", "'\"x\"'"]),
        ("jsonb_send", "jsonb[]", T.JSONB, ['\'{"b": 1, "a": [true, null]}\'', "'\"é\"'"]),
        ("jsonpath_send", "jsonpath[]", T.JSONPATH, ["'$.a[*] ? (@ > 1)'"]),
        (
            "float8send",
            "float8[]",
            T.FLOAT8,
            [
                "0",
                "-0",
                "1.5",
                "0.1",
                "1e15",
                "1e16",
                "123456789012345680",
                "1e-5",
                "0.0001",
                "'NaN'",
                "'Infinity'",
                "'-Infinity'",
                "2.2250738585072014e-308",
                "1e300",
                "-3.14159",
                "100",
                "1234567.125",
            ],
        ),
        (
            "float4send",
            "float4[]",
            T.FLOAT4,
            [
                "0",
                "1.5",
                "0.1",
                "1e6",
                "1e7",
                "123456",
                "3.4028235e38",
                "1e-5",
                "-2.5e-10",
                "'NaN'",
                "16777216",
            ],
        ),
        (
            "date_send",
            "date[]",
            T.DATE,
            [
                "'2024-02-29'",
                "'2000-01-01'",
                "'1999-12-31'",
                "'0044-03-15 BC'",
                "'infinity'",
                "'-infinity'",
                "'4713-11-24 BC'",
                "'5874897-12-31'",
                "'1900-03-01'",
            ],
        ),
        (
            "timestamp_send",
            "timestamp[]",
            T.TIMESTAMP,
            [
                "'2024-02-29 13:14:15.123456'",
                "'2000-01-01 00:00:00'",
                "'1999-12-31 23:59:59.5'",
                "'0044-03-15 10:00 BC'",
                "'infinity'",
                "'1969-07-20 20:17:40'",
            ],
        ),
        (
            "timestamptz_send",
            "timestamptz[]",
            T.TIMESTAMPTZ,
            ["'2024-02-29 13:14:15.1+00'", "'2000-01-01 00:00:00+02'", "'-infinity'"],
        ),
        (
            "time_send",
            "time[]",
            T.TIME,
            ["'00:00'", "'23:59:59.999999'", "'12:30:00.5'", "'24:00'"],
        ),
    ],
)
def test_it_decodes_scalars_like_the_server(pg, send, cast, oid, lits):
    for binary, text in sent(pg, send, cast, lits):
        assert T.decode_binary(oid, binary) == text, (cast, text)


def test_it_decodes_money_without_locale():
    assert T.decode_binary(T.MONEY, struct.pack(">q", 123456)) == "1234.56"
    assert T.decode_binary(T.MONEY, struct.pack(">q", -5)) == "-0.05"


@pytest.mark.parametrize(
    ("oid", "data"),
    [
        (T.INT2, b"\x00"),
        (T.INT4, b"\x00\x00\x00"),
        (T.INT8, b"\x00" * 9),
        (T.OID, b""),
        (T.BOOL, b""),
        (T.UUID, b"\x00" * 15),
        (T.JSONB, b"\x02{}"),
        (T.JSONB, b""),
        (T.FLOAT8, b"\x00" * 4),
        (T.DATE, b"\x00" * 8),
        (T.TIME, struct.pack(">q", -1)),
        (T.CHAR, b"ab"),
    ],
)
def test_it_refuses_malformed_scalars(oid, data):
    with pytest.raises(T.BinaryFormatError):
        T.decode_binary(oid, data)


def test_it_decodes_text_in_the_client_encoding():
    assert T.decode_binary(T.TEXT, "Zoë".encode("latin-1"), "iso8859-1") == "Zoë"
    with pytest.raises(UnicodeDecodeError):
        T.decode_binary(T.TEXT, b"\xff\xfe", "utf-8")


def test_it_has_no_decoder_for_unknown_types():
    assert not T.has_binary_decoder(16384)
    assert not T.has_binary_decoder(T.TSVECTOR)
    assert not T.has_binary_decoder(3643)  # tsvector[]
    assert T.has_binary_decoder(1009)
    with pytest.raises(LookupError):
        T.decode_binary(16384, b"x")


# --------------------------------------------------------------------------- arrays vs server

ARRAYS = [
    ("int4[]", "'{1,2,3}'"),
    ("int4[]", "'{}'"),
    ("int4[]", "'{NULL,1,NULL}'"),
    ("int4[]", "'{{1,2},{3,4},{5,6}}'"),
    ("int4[]", "'[0:2]={7,8,9}'"),
    ("int4[]", "'[-2:-1][3:4]={{1,2},{3,4}}'"),
    ("int8[]", "'{4111111111111111,-1}'"),
    (
        "text[]",
        "ARRAY['a', 'b c', '', 'NULL', 'null', NULL, 'q\"uote', 'back\\slash', '{x}', 'a,b']",
    ),
    ("text[]", "ARRAY['jane@example.com', 'tab\there', 'new\nline', ' lead', 'trail ', 'é☃']"),
    ("text[]", "ARRAY[[ 'a', 'b' ], [ NULL, 'd' ]]"),
    ("varchar[]", "ARRAY['x', 'y']::varchar[]"),
    ("numeric[]", "'{1.50,NaN,-0.001,Infinity}'"),
    ("inet[]", "'{10.0.0.1,::1,192.168.0.0/16}'"),
    ("jsonb[]", "ARRAY['{\"a\": 1}'::jsonb, '[]', 'null']"),
    ("json[]", "ARRAY['{\"a\" : 1}'::json]"),
    ("bool[]", "'{t,f,NULL}'"),
    ("date[]", "'{2024-01-01,infinity}'"),
    ("uuid[]", "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'"),
    ("bytea[]", "ARRAY['\\x01'::bytea, NULL]"),
]


def test_it_decodes_arrays_like_the_server(pg):
    for cast, lit in ARRAYS:
        binary, text = pg.execute(
            f"SELECT array_send(v), format('%s', v) FROM (SELECT {lit}::{cast} v) s"
        ).fetchone()
        oid = pg.execute(f"SELECT '{cast}'::regtype::oid::int").fetchone()[0]
        assert T.decode_binary(oid, bytes(binary)) == text, cast


def test_it_parses_array_literals_like_the_server(pg):
    for cast, lit in ARRAYS:
        text, elems = pg.execute(
            "SELECT format('%s', v), (SELECT array_agg(CASE WHEN e IS NULL THEN NULL"
            " ELSE format('%s', e) END ORDER BY i) FROM unnest(v) WITH ORDINALITY u(e, i))"
            f" FROM (SELECT {lit}::{cast} v) s"
        ).fetchone()
        assert T.parse_array_literal(text) == (elems or []), cast


def test_it_splits_binary_arrays():
    arr = T.decode_array(
        struct.pack(">iiI", 1, 1, T.INT4)
        + struct.pack(">ii", 2, 1)
        + struct.pack(">i", 4)
        + struct.pack(">i", 7)
        + struct.pack(">i", -1)
    )
    assert arr == T.ArrayValue(T.INT4, ((2, 1),), [struct.pack(">i", 7), None])


@pytest.mark.parametrize(
    "data",
    [
        b"\x00" * 11,
        struct.pack(">iiI", 7, 0, 23),  # ndim 7
        struct.pack(">iiI", -1, 0, 23),
        struct.pack(">iiI", 1, 2, 23) + struct.pack(">ii", 0, 1),  # flags 2
        struct.pack(">iiI", 1, 0, 23) + struct.pack(">ii", 1, 1) + struct.pack(">i", -1),
        struct.pack(">iiI", 1, 0, 23) + struct.pack(">ii", 1, 1) + struct.pack(">i", 9) + b"x",
        struct.pack(">iiI", 1, 0, 23) + struct.pack(">ii", 1, 1),  # element missing
        struct.pack(">iiI", 1, 0, 23) + struct.pack(">ii", -1, 1),
        struct.pack(">iiI", 1, 0, 23) + struct.pack(">ii", 1, 1) + struct.pack(">i", -2),
        struct.pack(">iiI", 0, 0, 23) + b"junk",
        struct.pack(">iiI", 1, 0, 25) + struct.pack(">ii", 1, 1) + struct.pack(">i", 0),  # oid
        struct.pack(">iiI", 1, 0, 23) + struct.pack(">i", 1),  # truncated dims
    ],
)
def test_it_refuses_malformed_arrays(data):
    with pytest.raises(T.BinaryFormatError):
        T.decode_array(data, T.INT4)


@pytest.mark.parametrize(
    "text",
    ["", "{", "{1,2", "1,2}", "{1,,2}", "{1}x", '{"a}', "{a b\\", "[1:2", "{1}{2}", "{{1}"],
)
def test_it_refuses_malformed_array_literals(text):
    with pytest.raises(ValueError):
        T.parse_array_literal(text)


ELEMENT = hs.one_of(
    hs.none(),
    hs.text(alphabet=hs.characters(blacklist_characters="\x00", max_codepoint=0x2FFF), max_size=12),
    hs.sampled_from(["NULL", "null", "", " ", "{", "}", ",", '"', "\\", "a b"]),
)


@settings(max_examples=500, deadline=None)
@given(
    dims=hs.lists(hs.tuples(hs.integers(1, 3), hs.integers(-3, 3)), min_size=1, max_size=3),
    data=hs.data(),
)
def test_array_literals_round_trip(dims, data):
    n = 1
    for length, _lb in dims:
        n *= length
    elements = data.draw(hs.lists(ELEMENT, min_size=n, max_size=n))
    text = T.array_literal(elements, dims)
    assert T.parse_array_literal(text) == elements


def test_array_literals_parse_like_the_server_for_generated_elements(pg):
    import random

    rnd = random.Random(1009)
    alphabet = ["a", "b", " ", '"', "\\", ",", "{", "}", "N", "U", "L", "\t", "é", "\n"]
    for _ in range(50):
        elements = [
            None
            if rnd.random() < 0.1
            else "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 6)))
            for _ in range(rnd.randint(1, 6))
        ]
        text = pg.execute("SELECT %s::text[]::text", (elements,)).fetchone()[0]
        assert T.array_literal(elements, ((len(elements), 1),)) == text
        assert T.parse_array_literal(text) == elements


def test_binary_result_values_decode_like_the_text_results(pg):
    """Values as a binary-format result carries them (psycopg ``binary=True``, raw bytes
    kept by a loader that does not parse) against the same query in text format."""
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    class Raw(Loader):
        format = Format.BINARY

        def load(self, data):
            return bytes(data)

    class Text(Loader):
        def load(self, data):
            return bytes(data).decode()

    sql = (
        "SELECT 4111111111111111::int8, -12.50::numeric, 'NaN'::numeric, '::ffff:1.2.3.4'::inet,"
        " '10.0.0.0/8'::cidr, ARRAY['a b', NULL, 'c\"d']::text[], '{\"k\": [1, null]}'::jsonb,"
        " ARRAY[[1,2],[3,4]]::int4[], 'x'::varchar, ARRAY['10.0.0.1'::inet], 1e16::float8"
    )
    oids = [
        T.INT8,
        T.NUMERIC,
        T.NUMERIC,
        T.INET,
        T.CIDR,
        1009,
        T.JSONB,
        1007,
        T.VARCHAR,
        1041,
        T.FLOAT8,
    ]
    raw = pg.cursor(binary=True)
    text = pg.cursor()
    for oid in set(oids):
        raw.adapters.register_loader(oid, Raw)
        text.adapters.register_loader(oid, Text)
    got = raw.execute(sql).fetchone()
    want = text.execute(sql).fetchone()
    assert [d.type_code for d in raw.description] == oids
    assert [T.decode_binary(oid, v) for oid, v in zip(oids, got, strict=True)] == list(want)
