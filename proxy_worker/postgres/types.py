"""PostgreSQL data types as the masking sees them: OIDs, classes, binary decoders, encodings.

Pure (no I/O). Three things live here:

* **Type OIDs** of the built-in types (``src/include/catalog/pg_type.dat``; stable across
  PostgreSQL 15-18) with their array types, and :func:`category`, the class a column's type
  falls into for masking (see the ``TEXT_LIKE`` ... ``UNKNOWN`` constants). Domains never
  show up: ``RowDescription`` reports a domain's base type (``printtup.c``). Enums,
  ``citext``, composite and other extension types have OIDs assigned at ``CREATE`` time and
  are :data:`UNKNOWN`.
* **Binary decoders** (:func:`decode_binary`): the text PostgreSQL's output function would
  print for a value sent in binary format (PostgreSQL docs, "Frontend/Backend Protocol",
  "Formats and Format Codes"; each type's ``*_send`` function). Exact for text-like types,
  ``json``/``jsonb``, integers, ``oid``, ``numeric`` (``src/backend/utils/adt/numeric.c``:
  ``numeric_recv`` then ``numeric_out``), ``inet``/``cidr`` (``network.c``,
  ``src/port/inet_net_ntop.c``) and arrays of those (``arrayfuncs.c``: ``array_recv`` /
  ``array_out``); close enough for recorded samples for ``bool``, ``bytea`` (hex output),
  ``uuid``, floats, ``date``, ``time``, ``timestamp`` (ISO ``DateStyle``) and
  ``timestamptz`` (rendered in UTC). Every decoder validates strictly and raises
  :class:`BinaryFormatError` on malformed input; text is decoded with the connection's
  client encoding and raises :class:`UnicodeDecodeError` when it does not decode.
* **Encodings**: :func:`python_codec` maps a ``server_encoding`` / ``client_encoding``
  name (PostgreSQL docs, "Character Set Support", table "PostgreSQL Character Sets";
  aliases from ``src/common/encnames.c``) to a Python codec, ``None`` for ``SQL_ASCII``
  (bytes without an encoding: the relay refuses it) and for encodings Python has no codec
  for (``EUC_TW``, ``MULE_INTERNAL``).
"""

from __future__ import annotations

import codecs
import math
import re
import struct
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import NamedTuple

__all__ = [
    "ARRAY_ELEMENT",
    "ARRAY_OF",
    "BYTEA_KIND",
    "CATEGORIES",
    "EMBEDS_ASCII_CODECS",
    "INERT",
    "INET_KIND",
    "JSON_KIND",
    "NUMERIC_LIKE",
    "OTHER",
    "TEXT_LIKE",
    "TYPE_NAMES",
    "UNKNOWN",
    "ArrayValue",
    "BinaryFormatError",
    "array_literal",
    "binary_decoder",
    "canonical_encoding",
    "category",
    "decode_array",
    "decode_binary",
    "decode_inet",
    "decode_numeric",
    "element_category",
    "has_binary_decoder",
    "parse_array_literal",
    "python_codec",
]

# --------------------------------------------------------------------------- OIDs

BOOL = 16
BYTEA = 17
CHAR = 18
NAME = 19
INT8 = 20
INT2 = 21
INT2VECTOR = 22
INT4 = 23
REGPROC = 24
TEXT = 25
OID = 26
TID = 27
XID = 28
CID = 29
OIDVECTOR = 30
JSON = 114
XML = 142
POINT = 600
LSEG = 601
PATH = 602
BOX = 603
POLYGON = 604
LINE = 628
CIDR = 650
FLOAT4 = 700
FLOAT8 = 701
UNKNOWN_OID = 705
CIRCLE = 718
MACADDR8 = 774
MONEY = 790
MACADDR = 829
INET = 869
ACLITEM = 1033
BPCHAR = 1042
VARCHAR = 1043
DATE = 1082
TIME = 1083
TIMESTAMP = 1114
TIMESTAMPTZ = 1184
INTERVAL = 1186
TIMETZ = 1266
BIT = 1560
VARBIT = 1562
NUMERIC = 1700
REFCURSOR = 1790
REGPROCEDURE = 2202
REGOPER = 2203
REGOPERATOR = 2204
REGCLASS = 2205
REGTYPE = 2206
RECORD = 2249
CSTRING = 2275
VOID = 2278
UUID = 2950
TXID_SNAPSHOT = 2970
PG_LSN = 3220
TSVECTOR = 3614
TSQUERY = 3615
REGCONFIG = 3734
REGDICTIONARY = 3769
JSONB = 3802
INT4RANGE = 3904
NUMRANGE = 3906
TSRANGE = 3908
TSTZRANGE = 3910
DATERANGE = 3912
INT8RANGE = 3926
JSONPATH = 4072
REGNAMESPACE = 4089
REGROLE = 4096
REGCOLLATION = 4191
INT4MULTIRANGE = 4451
NUMMULTIRANGE = 4532
TSMULTIRANGE = 4533
TSTZMULTIRANGE = 4534
DATEMULTIRANGE = 4535
INT8MULTIRANGE = 4536
PG_SNAPSHOT = 5038
XID8 = 5069

#: OID -> ``pg_type.typname`` of the built-in base types above.
TYPE_NAMES: dict[int, str] = {
    BOOL: "bool",
    BYTEA: "bytea",
    CHAR: "char",
    NAME: "name",
    INT8: "int8",
    INT2: "int2",
    INT2VECTOR: "int2vector",
    INT4: "int4",
    REGPROC: "regproc",
    TEXT: "text",
    OID: "oid",
    TID: "tid",
    XID: "xid",
    CID: "cid",
    OIDVECTOR: "oidvector",
    JSON: "json",
    XML: "xml",
    POINT: "point",
    LSEG: "lseg",
    PATH: "path",
    BOX: "box",
    POLYGON: "polygon",
    LINE: "line",
    CIDR: "cidr",
    FLOAT4: "float4",
    FLOAT8: "float8",
    UNKNOWN_OID: "unknown",
    CIRCLE: "circle",
    MACADDR8: "macaddr8",
    MONEY: "money",
    MACADDR: "macaddr",
    INET: "inet",
    ACLITEM: "aclitem",
    BPCHAR: "bpchar",
    VARCHAR: "varchar",
    DATE: "date",
    TIME: "time",
    TIMESTAMP: "timestamp",
    TIMESTAMPTZ: "timestamptz",
    INTERVAL: "interval",
    TIMETZ: "timetz",
    BIT: "bit",
    VARBIT: "varbit",
    NUMERIC: "numeric",
    REFCURSOR: "refcursor",
    REGPROCEDURE: "regprocedure",
    REGOPER: "regoper",
    REGOPERATOR: "regoperator",
    REGCLASS: "regclass",
    REGTYPE: "regtype",
    RECORD: "record",
    CSTRING: "cstring",
    VOID: "void",
    UUID: "uuid",
    TXID_SNAPSHOT: "txid_snapshot",
    PG_LSN: "pg_lsn",
    TSVECTOR: "tsvector",
    TSQUERY: "tsquery",
    REGCONFIG: "regconfig",
    REGDICTIONARY: "regdictionary",
    JSONB: "jsonb",
    INT4RANGE: "int4range",
    NUMRANGE: "numrange",
    TSRANGE: "tsrange",
    TSTZRANGE: "tstzrange",
    DATERANGE: "daterange",
    INT8RANGE: "int8range",
    JSONPATH: "jsonpath",
    REGNAMESPACE: "regnamespace",
    REGROLE: "regrole",
    REGCOLLATION: "regcollation",
    INT4MULTIRANGE: "int4multirange",
    NUMMULTIRANGE: "nummultirange",
    TSMULTIRANGE: "tsmultirange",
    TSTZMULTIRANGE: "tstzmultirange",
    DATEMULTIRANGE: "datemultirange",
    INT8MULTIRANGE: "int8multirange",
    PG_SNAPSHOT: "pg_snapshot",
    XID8: "xid8",
}

#: Element type OID -> its array type OID (``pg_type.typarray``), e.g. ``TEXT`` -> 1009.
ARRAY_OF: dict[int, int] = {
    BOOL: 1000,
    BYTEA: 1001,
    CHAR: 1002,
    NAME: 1003,
    INT8: 1016,
    INT2: 1005,
    INT2VECTOR: 1006,
    INT4: 1007,
    REGPROC: 1008,
    TEXT: 1009,
    OID: 1028,
    TID: 1010,
    XID: 1011,
    CID: 1012,
    OIDVECTOR: 1013,
    JSON: 199,
    XML: 143,
    POINT: 1017,
    LSEG: 1018,
    PATH: 1019,
    BOX: 1020,
    POLYGON: 1027,
    LINE: 629,
    CIDR: 651,
    FLOAT4: 1021,
    FLOAT8: 1022,
    CIRCLE: 719,
    MACADDR8: 775,
    MONEY: 791,
    MACADDR: 1040,
    INET: 1041,
    ACLITEM: 1034,
    BPCHAR: 1014,
    VARCHAR: 1015,
    DATE: 1182,
    TIME: 1183,
    TIMESTAMP: 1115,
    TIMESTAMPTZ: 1185,
    INTERVAL: 1187,
    TIMETZ: 1270,
    BIT: 1561,
    VARBIT: 1563,
    NUMERIC: 1231,
    REFCURSOR: 2201,
    REGPROCEDURE: 2207,
    REGOPER: 2208,
    REGOPERATOR: 2209,
    REGCLASS: 2210,
    REGTYPE: 2211,
    RECORD: 2287,
    CSTRING: 1263,
    UUID: 2951,
    TXID_SNAPSHOT: 2949,
    PG_LSN: 3221,
    TSVECTOR: 3643,
    TSQUERY: 3645,
    REGCONFIG: 3735,
    REGDICTIONARY: 3770,
    JSONB: 3807,
    INT4RANGE: 3905,
    NUMRANGE: 3907,
    TSRANGE: 3909,
    TSTZRANGE: 3911,
    DATERANGE: 3913,
    INT8RANGE: 3927,
    JSONPATH: 4073,
    REGNAMESPACE: 4090,
    REGROLE: 4097,
    REGCOLLATION: 4192,
    INT4MULTIRANGE: 6150,
    NUMMULTIRANGE: 6151,
    TSMULTIRANGE: 6152,
    TSTZMULTIRANGE: 6153,
    DATEMULTIRANGE: 6155,
    INT8MULTIRANGE: 6157,
    PG_SNAPSHOT: 5039,
    XID8: 271,
}

#: Array type OID -> element type OID (the inverse of :data:`ARRAY_OF`), e.g. 1009 -> ``TEXT``.
ARRAY_ELEMENT: dict[int, int] = {a: e for e, a in ARRAY_OF.items()}

# --------------------------------------------------------------------------- categories

#: The value *is* text (``text``, ``varchar``, ``bpchar``, ``name``, ``"char"``, ``unknown``,
#: ``xml``, ``refcursor``, ``cstring``): masked in place.
TEXT_LIKE = "text"
#: ``json`` and ``jsonb``: masked as JSON documents.
JSON_KIND = "json"
#: Integers, ``oid``, ``numeric``, ``money``: the text is digits (and a sign, a point).
NUMERIC_LIKE = "numeric"
#: ``inet`` and ``cidr``.
INET_KIND = "inet"
#: ``bytea``: bytes, never scanned.
BYTEA_KIND = "bytea"
#: Types that cannot carry detector-shaped personal data: ``bool``, floats, date and time
#: types, ``uuid``, geometric types, ``macaddr``, ``bit``, ranges and multiranges, system
#: identifiers (``xid``, ``tid``, ``pg_lsn``...).
INERT = "inert"
#: Known types with a text form worth scanning but no in-place rewrite: ``tsvector``,
#: ``tsquery``, ``jsonpath``, ``aclitem``, the ``reg*`` name types.
OTHER = "other"
#: One of :data:`ARRAY_OF`'s array types (see :func:`element_category`).
ARRAY = "array"
#: Not a built-in type (enum, ``citext``, composite, extension types) or a pseudo-type.
UNKNOWN = "unknown"

#: Every category, for validation and documentation.
CATEGORIES: tuple[str, ...] = (
    TEXT_LIKE,
    JSON_KIND,
    NUMERIC_LIKE,
    INET_KIND,
    BYTEA_KIND,
    INERT,
    OTHER,
    ARRAY,
    UNKNOWN,
)

_CATEGORY: dict[int, str] = {}
for _oid in (TEXT, VARCHAR, BPCHAR, NAME, CHAR, UNKNOWN_OID, XML, REFCURSOR, CSTRING):
    _CATEGORY[_oid] = TEXT_LIKE
for _oid in (JSON, JSONB):
    _CATEGORY[_oid] = JSON_KIND
for _oid in (INT2, INT4, INT8, OID, NUMERIC, MONEY):
    _CATEGORY[_oid] = NUMERIC_LIKE
for _oid in (INET, CIDR):
    _CATEGORY[_oid] = INET_KIND
_CATEGORY[BYTEA] = BYTEA_KIND
for _oid in (
    BOOL,
    FLOAT4,
    FLOAT8,
    DATE,
    TIME,
    TIMETZ,
    TIMESTAMP,
    TIMESTAMPTZ,
    INTERVAL,
    UUID,
    POINT,
    LSEG,
    PATH,
    BOX,
    POLYGON,
    LINE,
    CIRCLE,
    MACADDR,
    MACADDR8,
    BIT,
    VARBIT,
    INT4RANGE,
    INT8RANGE,
    NUMRANGE,
    TSRANGE,
    TSTZRANGE,
    DATERANGE,
    INT4MULTIRANGE,
    INT8MULTIRANGE,
    NUMMULTIRANGE,
    TSMULTIRANGE,
    TSTZMULTIRANGE,
    DATEMULTIRANGE,
    TID,
    XID,
    CID,
    XID8,
    PG_LSN,
    TXID_SNAPSHOT,
    PG_SNAPSHOT,
    INT2VECTOR,
    OIDVECTOR,
    VOID,
):
    _CATEGORY[_oid] = INERT
for _oid in (
    TSVECTOR,
    TSQUERY,
    JSONPATH,
    ACLITEM,
    REGPROC,
    REGPROCEDURE,
    REGOPER,
    REGOPERATOR,
    REGCLASS,
    REGTYPE,
    REGCONFIG,
    REGDICTIONARY,
    REGNAMESPACE,
    REGROLE,
    REGCOLLATION,
):
    _CATEGORY[_oid] = OTHER
del _oid


def category(type_oid: int) -> str:
    """The masking class of a type (one of :data:`CATEGORIES`).

    ``record`` (anonymous row values) and every OID not listed here are :data:`UNKNOWN`;
    arrays of a known element type are :data:`ARRAY`.
    """
    c = _CATEGORY.get(type_oid)
    if c is not None:
        return c
    if type_oid in ARRAY_ELEMENT:
        return ARRAY
    return UNKNOWN


def element_category(array_oid: int) -> str:
    """:func:`category` of an array type's element type (:data:`UNKNOWN` for an OID that is
    not a known array type or whose element type is unknown, e.g. ``record[]``)."""
    elem = ARRAY_ELEMENT.get(array_oid)
    return UNKNOWN if elem is None else category(elem)


# --------------------------------------------------------------------------- errors


class BinaryFormatError(ValueError):
    """A binary value does not follow its type's send format (wrong length, bad header,
    out-of-range field). The message says which type and what is wrong, never the value."""


# --------------------------------------------------------------------------- scalars

_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")


def _fixed(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise BinaryFormatError(f"{what} value must be {size} bytes, got {len(data)}")


def _decode_int2(data: bytes, encoding: str) -> str:
    _fixed(data, 2, "int2")
    return str(_I16.unpack(data)[0])


def _decode_int4(data: bytes, encoding: str) -> str:
    _fixed(data, 4, "int4")
    return str(_I32.unpack(data)[0])


def _decode_int8(data: bytes, encoding: str) -> str:
    _fixed(data, 8, "int8")
    return str(_I64.unpack(data)[0])


def _decode_uint4(data: bytes, encoding: str) -> str:
    _fixed(data, 4, "oid")
    return str(_U32.unpack(data)[0])


def _decode_uint8(data: bytes, encoding: str) -> str:
    _fixed(data, 8, "xid8")
    return str(_U64.unpack(data)[0])


def _decode_text(data: bytes, encoding: str) -> str:
    return data.decode(encoding)


def _decode_char(data: bytes, encoding: str) -> str:
    # charsend sends the raw byte; charout prints high-bit bytes as \ooo (PostgreSQL 15+)
    # and '\0' as the empty string.
    if len(data) > 1:
        raise BinaryFormatError(f'"char" value must be at most 1 byte, got {len(data)}')
    if not data or data == b"\x00":
        return ""
    b = data[0]
    return chr(b) if b < 0x80 else f"\\{b:03o}"


def _decode_jsonb(data: bytes, encoding: str) -> str:
    if not data or data[0] != 1:
        raise BinaryFormatError("jsonb value must start with version byte 1")
    return data[1:].decode(encoding)


def _decode_jsonpath(data: bytes, encoding: str) -> str:
    if not data or data[0] != 1:
        raise BinaryFormatError("jsonpath value must start with version byte 1")
    return data[1:].decode(encoding)


def _decode_bool(data: bytes, encoding: str) -> str:
    _fixed(data, 1, "bool")
    return "f" if data[0] == 0 else "t"


def _decode_bytea(data: bytes, encoding: str) -> str:
    return "\\x" + data.hex()


def _decode_uuid(data: bytes, encoding: str) -> str:
    _fixed(data, 16, "uuid")
    h = data.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _decode_money(data: bytes, encoding: str) -> str:
    # cash_send sends the int64 amount in the currency's smallest unit; cash_out formats it
    # with lc_monetary (symbol, grouping), which the proxy does not know: rendered with
    # two fraction digits, no symbol or grouping.
    _fixed(data, 8, "money")
    v = _I64.unpack(data)[0]
    sign = "-" if v < 0 else ""
    v = abs(v)
    return f"{sign}{v // 100}.{v % 100:02d}"


# --------------------------------------------------------------------------- floats


def _shortest_float4(x: float) -> str:
    """Fewest significant digits that read back as the same float4 (``repr`` for float4)."""
    packed = _F32.pack(x)
    for prec in range(1, 10):
        s = f"{x:.{prec}g}"
        try:
            if _F32.pack(float(s)) == packed:
                return s
        except OverflowError:  # rounded past the largest float4
            continue
    return repr(x)  # pragma: no cover - 9 digits always round-trip


def _float_text(x: float, shortest: str, max_exp: int) -> str:
    """``float4out`` / ``float8out`` with ``extra_float_digits`` > 0 (PostgreSQL 12+:
    shortest exact digits, ``src/common/d2s.c``): positional notation for decimal
    exponents -4 ... ``max_exp`` - 1, else ``d.ddde+XX``."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign, digits, exp = Decimal(shortest).normalize().as_tuple()
    ds = "".join(map(str, digits))
    e = exp + len(ds) - 1  # decimal exponent of the first digit  # type: ignore[operator]
    neg = "-" if sign else ""
    if -4 <= e < max_exp:
        if e < 0:
            return f"{neg}0.{'0' * (-e - 1)}{ds}"
        if len(ds) <= e + 1:
            return f"{neg}{ds}{'0' * (e + 1 - len(ds))}"
        return f"{neg}{ds[: e + 1]}.{ds[e + 1 :]}"
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{neg}{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"


def _decode_float4(data: bytes, encoding: str) -> str:
    _fixed(data, 4, "float4")
    x = _F32.unpack(data)[0]
    if math.isnan(x) or math.isinf(x) or x == 0:
        return _float_text(x, "0", 6)
    return _float_text(x, _shortest_float4(x), 6)


def _decode_float8(data: bytes, encoding: str) -> str:
    _fixed(data, 8, "float8")
    x = _F64.unpack(data)[0]
    if math.isnan(x) or math.isinf(x) or x == 0:
        return _float_text(x, "0", 15)
    return _float_text(x, repr(x), 15)


# --------------------------------------------------------------------------- date / time

_POSTGRES_EPOCH_JDATE = 2451545  # date2j(2000, 1, 1)
_USECS_PER_DAY = 86_400_000_000
_INT32_MAX = 2**31 - 1
_INT32_MIN = -(2**31)
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)


def _j2date(jd: int) -> tuple[int, int, int]:
    """``j2date`` of ``src/backend/utils/adt/datetime.c``: Julian day -> (year, month, day)."""
    julian = jd + 32044
    quad = julian // 146097
    extra = (julian - quad * 146097) * 4 + 3
    julian += 60 + quad * 3 + extra // 146097
    quad = julian // 1461
    julian -= quad * 1461
    y = julian * 4 // 1461
    julian = (julian + 305) % 365 + 123 if y != 0 else (julian + 306) % 366 + 123
    y += quad * 4
    year = y - 4800
    quad = julian * 2141 // 65536
    day = julian - 7834 * quad // 256
    month = (quad + 10) % 12 + 1
    return year, month, day


def _ymd(days: int) -> tuple[str, str]:
    year, month, day = _j2date(days + _POSTGRES_EPOCH_JDATE)
    if year <= 0:
        return f"{1 - year:04d}-{month:02d}-{day:02d}", " BC"
    return f"{year:04d}-{month:02d}-{day:02d}", ""


def _hms(usecs: int) -> str:
    secs, frac = divmod(usecs, 1_000_000)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    out = f"{h:02d}:{m:02d}:{s:02d}"
    if frac:
        out += "." + f"{frac:06d}".rstrip("0")
    return out


def _decode_date(data: bytes, encoding: str) -> str:
    _fixed(data, 4, "date")
    days = _I32.unpack(data)[0]
    if days == _INT32_MAX:
        return "infinity"
    if days == _INT32_MIN:
        return "-infinity"
    ymd, bc = _ymd(days)
    return ymd + bc


def _decode_time(data: bytes, encoding: str) -> str:
    _fixed(data, 8, "time")
    usecs = _I64.unpack(data)[0]
    if not 0 <= usecs <= _USECS_PER_DAY:
        raise BinaryFormatError("time value out of range")
    return _hms(usecs)


def _timestamp_text(data: bytes, what: str, suffix: str) -> str:
    _fixed(data, 8, what)
    usecs = _I64.unpack(data)[0]
    if usecs == _INT64_MAX:
        return "infinity"
    if usecs == _INT64_MIN:
        return "-infinity"
    days, rest = divmod(usecs, _USECS_PER_DAY)
    ymd, bc = _ymd(days)
    return f"{ymd} {_hms(rest)}{suffix}{bc}"


def _decode_timestamp(data: bytes, encoding: str) -> str:
    return _timestamp_text(data, "timestamp", "")


def _decode_timestamptz(data: bytes, encoding: str) -> str:
    # timestamptz_out converts to the session's TimeZone, which the proxy does not track:
    # rendered in UTC.
    return _timestamp_text(data, "timestamptz", "+00")


# --------------------------------------------------------------------------- numeric

_NUMERIC_POS = 0x0000
_NUMERIC_NEG = 0x4000
_NUMERIC_NAN = 0xC000
_NUMERIC_PINF = 0xD000
_NUMERIC_NINF = 0xF000
_NUMERIC_DSCALE_MASK = 0x3FFF
_NBASE = 10000
_DEC_DIGITS = 4


def decode_numeric(data: bytes) -> str:
    """A binary ``numeric`` (``numeric_send``) as ``numeric_out`` prints it.

    Format: ``Int16`` ndigits, ``Int16`` weight (base-10000 exponent of the first digit),
    ``UInt16`` sign (``0x0000`` +, ``0x4000`` -, ``0xC000`` NaN, ``0xD000`` Infinity,
    ``0xF000`` -Infinity), ``UInt16`` dscale (decimal digits after the point), then
    ndigits ``Int16`` base-10000 digits. Like ``numeric_recv``, digits hidden by dscale
    are truncated and leading/trailing zero digits stripped before printing (which
    changes nothing for what a server sends).

    Raises:
        BinaryFormatError: wrong length, a digit outside 0..9999, an unknown sign, a
            dscale outside 0..16383.
    """
    if len(data) < 8:
        raise BinaryFormatError(f"numeric value must be at least 8 bytes, got {len(data)}")
    ndigits, weight = struct.unpack_from(">hh", data)
    sign, dscale = struct.unpack_from(">HH", data, 4)
    if ndigits < 0 or len(data) != 8 + 2 * ndigits:
        raise BinaryFormatError(f"numeric value with {ndigits} digits has the wrong length")
    if sign not in (_NUMERIC_POS, _NUMERIC_NEG, _NUMERIC_NAN, _NUMERIC_PINF, _NUMERIC_NINF):
        raise BinaryFormatError("invalid sign in numeric value")
    if dscale & _NUMERIC_DSCALE_MASK != dscale:
        raise BinaryFormatError("invalid scale in numeric value")
    digits = list(struct.unpack_from(f">{ndigits}h", data, 8))
    for d in digits:
        if not 0 <= d < _NBASE:
            raise BinaryFormatError("invalid digit in numeric value")
    if sign == _NUMERIC_NAN:
        return "NaN"
    if sign == _NUMERIC_PINF:
        return "Infinity"
    if sign == _NUMERIC_NINF:
        return "-Infinity"
    # trunc_var(value, dscale): drop digits the scale hides.
    di = (weight + 1) * _DEC_DIGITS + dscale
    if di <= 0:
        digits, weight = [], 0
    else:
        keep = (di + _DEC_DIGITS - 1) // _DEC_DIGITS
        if keep < len(digits):
            digits = digits[:keep]
            rem = di % _DEC_DIGITS
            if rem:
                digits[-1] -= digits[-1] % 10 ** (_DEC_DIGITS - rem)
    # strip_var / make_result: leading and trailing zero digits, zero is positive.
    while digits and digits[0] == 0:
        digits.pop(0)
        weight -= 1
    while digits and digits[-1] == 0:
        digits.pop()
    if not digits:
        weight, sign = 0, _NUMERIC_POS
    # get_str_from_var
    out = ["-"] if sign == _NUMERIC_NEG else []
    n = len(digits)
    if weight < 0:
        out.append("0")
    else:
        for d in range(weight + 1):
            dig = digits[d] if d < n else 0
            out.append(f"{dig:04d}" if d > 0 else str(dig))
    if dscale > 0:
        frac = []
        d = weight + 1
        for _ in range(0, dscale, _DEC_DIGITS):
            frac.append(f"{digits[d]:04d}" if 0 <= d < n else "0000")
            d += 1
        out.append("." + "".join(frac)[:dscale])
    return "".join(out)


def _decode_numeric(data: bytes, encoding: str) -> str:
    return decode_numeric(data)


# --------------------------------------------------------------------------- inet / cidr

_PGSQL_AF_INET = 2
_PGSQL_AF_INET6 = 3


def _ntop_ipv6(addr: bytes) -> str:
    """``inet_net_ntop_ipv6`` of ``src/port/inet_net_ntop.c`` (address part)."""
    words = [addr[i] << 8 | addr[i + 1] for i in range(0, 16, 2)]
    best_base, best_len, cur_base, cur_len = -1, 0, -1, 0
    for i, w in enumerate(words):
        if w == 0:
            if cur_base == -1:
                cur_base, cur_len = i, 1
            else:
                cur_len += 1
        elif cur_base != -1:
            if best_base == -1 or cur_len > best_len:
                best_base, best_len = cur_base, cur_len
            cur_base = -1
    if cur_base != -1 and (best_base == -1 or cur_len > best_len):
        best_base, best_len = cur_base, cur_len
    if best_base != -1 and best_len < 2:
        best_base = -1
    out: list[str] = []
    for i in range(8):
        if best_base != -1 and best_base <= i < best_base + best_len:
            if i == best_base:
                out.append(":")
            continue
        if i != 0:
            out.append(":")
        if (
            i == 6
            and best_base == 0
            and (
                best_len == 6
                or (best_len == 7 and words[7] != 0x0001)
                or (best_len == 5 and words[5] == 0xFFFF)
            )
        ):
            out.append(".".join(str(b) for b in addr[12:16]))
            break
        out.append(f"{words[i]:x}")
    if best_base != -1 and best_base + best_len == 8:
        out.append(":")
    return "".join(out)


def decode_inet(data: bytes, *, cidr: bool) -> str:
    """A binary ``inet`` / ``cidr`` (``inet_send``) as ``inet_out`` / ``cidr_out`` print it.

    Format: ``Byte1`` family (2 IPv4, 3 IPv6), ``Byte1`` prefix bits, ``Byte1`` is-cidr flag
    (ignored, as by ``network_recv``), ``Byte1`` address length (4 or 16), the address.
    ``inet`` prints ``/bits`` only when the prefix is shorter than the address, ``cidr``
    always; IPv6 is compressed the way ``inet_net_ntop`` does it (longest zero run of at
    least two words, embedded IPv4 for ``::a.b.c.d`` and ``::ffff:a.b.c.d``).

    Args:
        data: the value's bytes.
        cidr: the column's type is ``cidr`` (decides the output form and checks that no
            bit is set right of the prefix, as ``network_recv`` does).

    Raises:
        BinaryFormatError: unknown family, prefix longer than the address, wrong address
            length, host bits set in a ``cidr``.
    """
    if len(data) < 4:
        raise BinaryFormatError(f"inet value must be at least 4 bytes, got {len(data)}")
    family, bits, _flag, nb = data[0], data[1], data[2], data[3]
    if family == _PGSQL_AF_INET:
        size = 4
    elif family == _PGSQL_AF_INET6:
        size = 16
    else:
        raise BinaryFormatError("invalid address family in inet value")
    if bits > size * 8:
        raise BinaryFormatError("invalid prefix length in inet value")
    if nb != size or len(data) != 4 + size:
        raise BinaryFormatError("invalid address length in inet value")
    addr = data[4:]
    if cidr:
        value = int.from_bytes(addr, "big")
        host_bits = size * 8 - bits
        if host_bits and value & ((1 << host_bits) - 1):
            raise BinaryFormatError("invalid cidr value: bits set right of the prefix")
    text = ".".join(str(b) for b in addr) if size == 4 else _ntop_ipv6(addr)
    if cidr or bits != size * 8:
        text += f"/{bits}"
    return text


def _decode_inet(data: bytes, encoding: str) -> str:
    return decode_inet(data, cidr=False)


def _decode_cidr(data: bytes, encoding: str) -> str:
    return decode_inet(data, cidr=True)


# --------------------------------------------------------------------------- arrays


class ArrayValue(NamedTuple):
    """A decoded binary array (``array_send``).

    Attributes:
        element_oid: the element type OID written in the value.
        dims: ``(length, lower bound)`` per dimension, outermost first; ``()`` for an
            empty array.
        elements: the element values in row-major order, raw bytes in the element type's
            binary format, ``None`` for NULL.
    """

    element_oid: int
    dims: tuple[tuple[int, int], ...]
    elements: list[bytes | None]


_MAXDIM = 6
_MAX_ARRAY_ELEMENTS = (1 << 30) // 4  # MaxArraySize of src/include/utils/array.h


def decode_array(data: bytes, expected_element: int | None = None) -> ArrayValue:
    """Split a binary array into its elements.

    Format (PostgreSQL docs, "Binary format" of arrays; ``array_recv``): ``Int32`` ndim
    (0..6), ``Int32`` flags (0 or 1: has NULLs), ``UInt32`` element type OID, per
    dimension ``Int32`` length and ``Int32`` lower bound, then per element ``Int32``
    length (-1 = NULL) and that many bytes.

    Args:
        data: the value's bytes.
        expected_element: the element OID the column's type implies; a different OID in
            the value is an error.

    Raises:
        BinaryFormatError: truncated or trailing bytes, ndim outside 0..6, bad flags,
            negative dimension, too many elements, element OID mismatch, a NULL while the
            flags say there is none, negative element length other than -1.
    """
    n = len(data)
    if n < 12:
        raise BinaryFormatError(f"array value must be at least 12 bytes, got {n}")
    ndim, flags = struct.unpack_from(">ii", data)
    elem = _U32.unpack_from(data, 8)[0]
    if not 0 <= ndim <= _MAXDIM:
        raise BinaryFormatError(f"invalid number of dimensions in array value: {ndim}")
    if flags not in (0, 1):
        raise BinaryFormatError("invalid flags in array value")
    if expected_element is not None and elem != expected_element:
        raise BinaryFormatError(f"array value has element type {elem}, expected {expected_element}")
    off = 12
    if n < off + 8 * ndim:
        raise BinaryFormatError("array value truncated in its dimensions")
    dims: list[tuple[int, int]] = []
    count = 1
    for _ in range(ndim):
        length, lbound = struct.unpack_from(">ii", data, off)
        off += 8
        if length < 0:
            raise BinaryFormatError("negative dimension in array value")
        if lbound + length - 1 > _INT32_MAX:
            raise BinaryFormatError("array upper bound out of range")
        dims.append((length, lbound))
        count *= length
        if count > _MAX_ARRAY_ELEMENTS:
            raise BinaryFormatError("array value has too many elements")
    if ndim and count == 0:
        dims = []  # an empty array is printed as {} whatever its declared dimensions
    if ndim == 0:
        count = 0
    elements: list[bytes | None] = []
    unpack = _I32.unpack_from
    for _ in range(count):
        if off + 4 > n:
            raise BinaryFormatError("array value truncated in its elements")
        ln = unpack(data, off)[0]
        off += 4
        if ln == -1:
            if not flags:
                raise BinaryFormatError("NULL element in array value without the NULL flag")
            elements.append(None)
            continue
        if ln < 0 or off + ln > n:
            raise BinaryFormatError("invalid element length in array value")
        elements.append(data[off : off + ln])
        off += ln
    if off != n:
        raise BinaryFormatError("trailing bytes after array value")
    return ArrayValue(elem, tuple(dims), elements)


_SCANNER_SPACE = frozenset(" \t\n\r\v\f")
_ARRAY_SPECIAL = frozenset('{}"\\') | _SCANNER_SPACE


def _quote_element(text: str, delim: str) -> str:
    """One element as ``array_out`` writes it: quoted when empty, ``NULL`` (any case), or
    holding braces, the delimiter, quotes, backslashes or whitespace; ``"`` and ``\\``
    backslash-escaped inside quotes."""
    if text and text.upper() != "NULL" and delim not in text and not _ARRAY_SPECIAL & set(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def array_literal(
    elements: Sequence[str | None],
    dims: Sequence[tuple[int, int]],
    delim: str = ",",
) -> str:
    """The text ``array_out`` prints for an array.

    Args:
        elements: element texts in row-major order (``None`` = NULL).
        dims: ``(length, lower bound)`` per dimension (``()``: empty array ``{}``); a
            lower bound other than 1 adds the ``[lb:ub]...=`` prefix.
        delim: the element type's ``typdelim`` (``,`` for every type but ``box``).

    Raises:
        ValueError: ``len(elements)`` does not match ``dims``.
    """
    if not dims:
        if elements:
            raise ValueError("elements given for an empty array")
        return "{}"
    total = 1
    for length, _lb in dims:
        total *= length
    if total != len(elements):
        raise ValueError("element count does not match the array dimensions")
    prefix = ""
    if any(lb != 1 for _l, lb in dims):
        prefix = "".join(f"[{lb}:{lb + length - 1}]" for length, lb in dims) + "="
    items = ["NULL" if e is None else _quote_element(e, delim) for e in elements]
    # Group innermost dimension first.
    for length, _lb in reversed(dims):
        items = [
            "{" + delim.join(items[i : i + length]) + "}" for i in range(0, len(items), length)
        ]
    return prefix + items[0]


def parse_array_literal(text: str, delim: str = ",") -> list[str | None]:
    """The elements of an array's text form (``array_in``'s syntax; PostgreSQL docs,
    "Arrays", "Array Value Input"), flattened in row-major order.

    Handles the ``[lb:ub]=`` dimension prefix, nested braces, double-quoted elements with
    backslash escapes, backslash escapes in unquoted elements, whitespace around
    elements, and unquoted ``NULL`` (any case) as ``None``. It does not check that
    sub-arrays have matching lengths (``array_out`` never prints ragged arrays).

    Raises:
        ValueError: not an array literal (no braces, unbalanced braces or quotes, junk
            after the closing brace).
    """
    s = text
    n = len(s)
    i = 0
    while i < n and s[i] in _SCANNER_SPACE:
        i += 1
    if i < n and s[i] == "[":
        eq = s.find("=", i)
        if eq < 0 or not re.fullmatch(r"(?:\[[+-]?\d+(?::[+-]?\d+)?\]\s*)+", s[i:eq].strip()):
            raise ValueError("malformed array dimensions")
        i = eq + 1
        while i < n and s[i] in _SCANNER_SPACE:
            i += 1
    if i >= n or s[i] != "{":
        raise ValueError("array literal must start with {")
    out: list[str | None] = []
    depth = 0
    expect_item = True  # after { or a delimiter
    while i < n:
        c = s[i]
        if c in _SCANNER_SPACE:
            i += 1
            continue
        if c == "{":
            if not expect_item:
                raise ValueError("unexpected { in array literal")
            depth += 1
            i += 1
            continue
        if c == "}":
            if depth == 0:
                raise ValueError("unbalanced } in array literal")
            depth -= 1
            i += 1
            expect_item = False
            if depth == 0:
                break
            continue
        if c == delim:
            if expect_item:
                raise ValueError("empty element in array literal")
            expect_item = True
            i += 1
            continue
        if not expect_item:
            raise ValueError("missing delimiter in array literal")
        if c == '"':
            buf: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted element in array literal")
                c = s[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise ValueError("unterminated quoted element in array literal")
                    buf.append(s[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                buf.append(c)
                i += 1
            out.append("".join(buf))
        else:
            buf = []
            trail = 0  # unescaped trailing whitespace, dropped
            escaped = False
            while i < n:
                c = s[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise ValueError("trailing backslash in array literal")
                    buf.append(s[i + 1])
                    escaped = True
                    trail = 0
                    i += 2
                    continue
                if c in '{}"' or c == delim:
                    break
                buf.append(c)
                trail = trail + 1 if c in _SCANNER_SPACE else 0
                i += 1
            item = "".join(buf[: len(buf) - trail] if trail else buf)
            out.append(None if not escaped and item.upper() == "NULL" else item)
        expect_item = False
    if depth != 0:
        raise ValueError("unbalanced { in array literal")
    if s[i:].strip(" \t\n\r\v\f"):
        raise ValueError("junk after array literal")
    return out


def _decode_array_text(type_oid: int, data: bytes, encoding: str) -> str:
    elem = ARRAY_ELEMENT[type_oid]
    dec = _DECODERS.get(elem)
    if dec is None:
        raise LookupError(f"no binary decoder for element type {elem}")
    arr = decode_array(data, elem)
    texts = [None if e is None else dec(e, encoding) for e in arr.elements]
    return array_literal(texts, arr.dims, ";" if elem == BOX else ",")


# --------------------------------------------------------------------------- registry

_Decoder = Callable[[bytes, str], str]

_DECODERS: dict[int, _Decoder] = {
    TEXT: _decode_text,
    VARCHAR: _decode_text,
    BPCHAR: _decode_text,
    NAME: _decode_text,
    UNKNOWN_OID: _decode_text,
    XML: _decode_text,
    REFCURSOR: _decode_text,
    CSTRING: _decode_text,
    CHAR: _decode_char,
    JSON: _decode_text,
    JSONB: _decode_jsonb,
    JSONPATH: _decode_jsonpath,
    INT2: _decode_int2,
    INT4: _decode_int4,
    INT8: _decode_int8,
    OID: _decode_uint4,
    XID: _decode_uint4,
    CID: _decode_uint4,
    XID8: _decode_uint8,
    REGPROC: _decode_uint4,
    REGPROCEDURE: _decode_uint4,
    REGOPER: _decode_uint4,
    REGOPERATOR: _decode_uint4,
    REGCLASS: _decode_uint4,
    REGTYPE: _decode_uint4,
    REGCONFIG: _decode_uint4,
    REGDICTIONARY: _decode_uint4,
    REGNAMESPACE: _decode_uint4,
    REGROLE: _decode_uint4,
    REGCOLLATION: _decode_uint4,
    NUMERIC: _decode_numeric,
    MONEY: _decode_money,
    INET: _decode_inet,
    CIDR: _decode_cidr,
    BOOL: _decode_bool,
    BYTEA: _decode_bytea,
    UUID: _decode_uuid,
    FLOAT4: _decode_float4,
    FLOAT8: _decode_float8,
    DATE: _decode_date,
    TIME: _decode_time,
    TIMESTAMP: _decode_timestamp,
    TIMESTAMPTZ: _decode_timestamptz,
}

#: reg* types print names in text but send OIDs in binary: their decoded text is the OID.
_OID_ALIASES = frozenset(
    {
        REGPROC,
        REGPROCEDURE,
        REGOPER,
        REGOPERATOR,
        REGCLASS,
        REGTYPE,
        REGCONFIG,
        REGDICTIONARY,
        REGNAMESPACE,
        REGROLE,
        REGCOLLATION,
    }
)


def has_binary_decoder(type_oid: int) -> bool:
    """:func:`decode_binary` can render this type (arrays: when their element type can)."""
    if type_oid in _DECODERS:
        return True
    elem = ARRAY_ELEMENT.get(type_oid)
    return elem is not None and elem in _DECODERS


def decode_binary(type_oid: int, data: bytes, encoding: str = "utf-8") -> str:
    """A value in binary format as text.

    Exact (the text PostgreSQL's output function prints) for the text-like types, json,
    jsonb, jsonpath, integers, ``oid``, numeric, inet, cidr, bool, bytea (``bytea_output =
    hex``), uuid, floats (``extra_float_digits`` >= 1, the default), and arrays of those;
    ``date``/``time``/``timestamp`` follow ``DateStyle = ISO``, ``timestamptz`` is given in
    UTC, ``money`` without currency symbol or grouping, the ``reg*`` types as their OID.

    Args:
        type_oid: the column's type OID.
        data: the value's bytes (not NULL).
        encoding: Python codec of the connection's client encoding (text inside values).

    Raises:
        LookupError: no decoder for this type (see :func:`has_binary_decoder`).
        BinaryFormatError: malformed value.
        UnicodeDecodeError: text that does not decode in ``encoding``.
    """
    dec = _DECODERS.get(type_oid)
    if dec is not None:
        return dec(data, encoding)
    if type_oid in ARRAY_ELEMENT:
        return _decode_array_text(type_oid, data, encoding)
    raise LookupError(f"no binary decoder for type {type_oid}")


def binary_decoder(type_oid: int) -> _Decoder | None:
    """The decoder function ``(data, encoding) -> str`` of a scalar type, or ``None``
    (arrays and types without a decoder)."""
    return _DECODERS.get(type_oid)


# --------------------------------------------------------------------------- encodings

# PostgreSQL encoding name -> Python codec (None: no usable codec).
_PG_ENCODINGS: dict[str, str | None] = {
    "SQL_ASCII": None,
    "UTF8": "utf-8",
    "LATIN1": "iso8859-1",
    "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3",
    "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9",
    "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13",
    "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16",
    "ISO_8859_5": "iso8859-5",
    "ISO_8859_6": "iso8859-6",
    "ISO_8859_7": "iso8859-7",
    "ISO_8859_8": "iso8859-8",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "WIN1253": "cp1253",
    "WIN1254": "cp1254",
    "WIN1255": "cp1255",
    "WIN1256": "cp1256",
    "WIN1257": "cp1257",
    "WIN1258": "cp1258",
    "WIN866": "cp866",
    "WIN874": "cp874",
    "KOI8R": "koi8-r",
    "KOI8U": "koi8-u",
    "EUC_JP": "euc_jp",
    "EUC_JIS_2004": "euc_jis_2004",
    "EUC_KR": "euc_kr",
    "EUC_CN": "gb2312",
    "EUC_TW": None,
    "SJIS": "cp932",
    "SHIFT_JIS_2004": "shift_jis_2004",
    "BIG5": "cp950",
    "GBK": "gbk",
    "GB18030": "gb18030",
    "UHC": "cp949",
    "JOHAB": "johab",
    "MULE_INTERNAL": None,
}

# Aliases of src/common/encnames.c (pg_encname_tbl), keyed by the cleaned name.
_PG_ALIASES: dict[str, str] = {
    "abc": "WIN1258",
    "alt": "WIN866",
    "big5": "BIG5",
    "euccn": "EUC_CN",
    "eucjis2004": "EUC_JIS_2004",
    "eucjp": "EUC_JP",
    "euckr": "EUC_KR",
    "euctw": "EUC_TW",
    "gb18030": "GB18030",
    "gbk": "GBK",
    "iso88591": "LATIN1",
    "iso885910": "LATIN6",
    "iso885913": "LATIN7",
    "iso885914": "LATIN8",
    "iso885915": "LATIN9",
    "iso885916": "LATIN10",
    "iso88592": "LATIN2",
    "iso88593": "LATIN3",
    "iso88594": "LATIN4",
    "iso88595": "ISO_8859_5",
    "iso88596": "ISO_8859_6",
    "iso88597": "ISO_8859_7",
    "iso88598": "ISO_8859_8",
    "iso88599": "LATIN5",
    "johab": "JOHAB",
    "koi8": "KOI8R",
    "koi8r": "KOI8R",
    "koi8u": "KOI8U",
    "latin1": "LATIN1",
    "latin2": "LATIN2",
    "latin3": "LATIN3",
    "latin4": "LATIN4",
    "latin5": "LATIN5",
    "latin6": "LATIN6",
    "latin7": "LATIN7",
    "latin8": "LATIN8",
    "latin9": "LATIN9",
    "latin10": "LATIN10",
    "mskanji": "SJIS",
    "muleinternal": "MULE_INTERNAL",
    "shiftjis": "SJIS",
    "shiftjis2004": "SHIFT_JIS_2004",
    "sjis": "SJIS",
    "sqlascii": "SQL_ASCII",
    "tcvn": "WIN1258",
    "tcvn5712": "WIN1258",
    "uhc": "UHC",
    "unicode": "UTF8",
    "utf8": "UTF8",
    "vscii": "WIN1258",
    "win": "WIN1251",
    "win1250": "WIN1250",
    "win1251": "WIN1251",
    "win1252": "WIN1252",
    "win1253": "WIN1253",
    "win1254": "WIN1254",
    "win1255": "WIN1255",
    "win1256": "WIN1256",
    "win1257": "WIN1257",
    "win1258": "WIN1258",
    "win866": "WIN866",
    "win874": "WIN874",
    "win932": "SJIS",
    "win936": "GBK",
    "win949": "UHC",
    "win950": "BIG5",
    "windows1250": "WIN1250",
    "windows1251": "WIN1251",
    "windows1252": "WIN1252",
    "windows1253": "WIN1253",
    "windows1254": "WIN1254",
    "windows1255": "WIN1255",
    "windows1256": "WIN1256",
    "windows1257": "WIN1257",
    "windows1258": "WIN1258",
    "windows866": "WIN866",
    "windows874": "WIN874",
    "windows932": "SJIS",
    "windows936": "GBK",
    "windows949": "UHC",
    "windows950": "BIG5",
}

#: Python codec names (``codecs.lookup(...).name``) of the client-only encodings in which
#: a byte of a multibyte character can look like ASCII (``encoding_embeds_ascii`` of
#: ``copyto.c``: SJIS, SHIFT_JIS_2004, BIG5, GBK, UHC, GB18030, JOHAB).
EMBEDS_ASCII_CODECS: frozenset[str] = frozenset(
    codecs.lookup(c).name
    for c in ("cp932", "shift_jis_2004", "cp950", "gbk", "cp949", "gb18030", "johab")
)

_CLEAN_RE = re.compile(r"[^0-9a-z]+")


def canonical_encoding(name: str) -> str | None:
    """The PostgreSQL name (``UTF8``, ``LATIN1``...) of an encoding name or alias, compared
    the way PostgreSQL does (``clean_encoding_name``: case and non-alphanumerics ignored,
    ``utf-8`` = ``UTF8`` = ``Unicode``); ``None`` when unknown."""
    return _PG_ALIASES.get(_CLEAN_RE.sub("", name.lower()))


def python_codec(name: str) -> str | None:
    """Python codec for a PostgreSQL ``server_encoding`` / ``client_encoding`` value.

    Returns:
        A codec name accepted by :func:`codecs.lookup` (``"utf-8"``, ``"iso8859-1"``,
        ``"cp1252"``, ``"euc_jp"``, ``"cp932"``...), or ``None`` for ``SQL_ASCII`` (bytes
        with no declared encoding), for ``EUC_TW`` and ``MULE_INTERNAL`` (no Python codec)
        and for names PostgreSQL does not know: the relay refuses those connections.
        ``SJIS``, ``BIG5``, ``GBK`` and ``UHC`` map to the Windows code pages PostgreSQL
        lists as their aliases (cp932, cp950, gbk, cp949).
    """
    pg = canonical_encoding(name)
    return None if pg is None else _PG_ENCODINGS[pg]
