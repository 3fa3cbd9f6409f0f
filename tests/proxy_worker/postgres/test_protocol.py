"""PostgreSQL wire protocol codecs (``proxy_worker.postgres.protocol``).

Every builder is checked against its parser on generated names, values and counts; the
splitter on streams cut at every byte offset and at generated split points; every parser
on truncated, padded and random payloads (only ``ProtocolViolation`` may come out); and
the codecs against the local PostgreSQL server (127.0.0.1:5432, user postgres, trust
authentication), skipped only when it is unreachable.
"""

from __future__ import annotations

import itertools
import random
import re
import socket
import struct
import time
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from proxy_worker.postgres import protocol as pg
from proxy_worker.postgres.protocol import (
    BACKEND_TAGS,
    CANCEL_REQUEST_CODE,
    FRONTEND_TAGS,
    GSSENC_REQUEST_CODE,
    MAX_STARTUP_PACKET,
    PROTOCOL_3_0,
    PROTOCOL_3_2,
    SSL_REQUEST_CODE,
    Bind,
    FieldDescription,
    FunctionCall,
    MessageSplitter,
    ProtocolViolation,
)

# -- generators ---------------------------------------------------------------------------

_text = hs.text(hs.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
_names = hs.text(hs.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=16)
_values = hs.one_of(hs.none(), hs.binary(max_size=40))
_formats = hs.sampled_from([0, 1])
_oids = hs.integers(0, 0xFFFFFFFF)
_int32 = hs.integers(-(2**31), 2**31 - 1)
_int16 = hs.integers(-(2**15), 2**15 - 1)


def _payload(frame: bytes) -> bytes:
    """The payload of one whole frame, checking its length word."""
    assert struct.unpack("!i", frame[1:5])[0] == len(frame) - 1
    return frame[5:]


@hs.composite
def _format_codes(draw, count: int) -> tuple[int, ...]:
    """0, 1 or ``count`` format codes."""
    n = draw(hs.sampled_from(sorted({0, 1, count})))
    return tuple(draw(hs.lists(_formats, min_size=n, max_size=n)))


@hs.composite
def _binds(draw) -> Bind:
    params = tuple(draw(hs.lists(_values, max_size=8)))
    return Bind(
        draw(_text),
        draw(_text),
        draw(_format_codes(len(params))),
        params,
        tuple(draw(hs.lists(_formats, max_size=5))),
    )


_fields = hs.builds(FieldDescription, _text, _oids, _int16, _oids, _int16, _int32, _formats)


@hs.composite
def _frames(draw, tags: bytes = BACKEND_TAGS) -> bytes:
    return pg.frame(draw(hs.sampled_from(tags)), draw(hs.binary(max_size=300)))


# -- constants -----------------------------------------------------------------------------


def test_it_has_the_documented_codes_and_tags():
    assert PROTOCOL_3_0 == 3 << 16 and PROTOCOL_3_2 == 3 << 16 | 2
    assert SSL_REQUEST_CODE == 1234 << 16 | 5679
    assert GSSENC_REQUEST_CODE == 1234 << 16 | 5680
    assert CANCEL_REQUEST_CODE == 1234 << 16 | 5678
    assert MAX_STARTUP_PACKET == 10_000
    assert sorted(FRONTEND_TAGS) == sorted(set(b"QPBDECSHFdcfXp"))
    assert sorted(BACKEND_TAGS) == sorted(set(b"RK123CdcGHWDIEVvnNAtSsZT"))
    assert len(set(BACKEND_TAGS)) == len(BACKEND_TAGS)


def test_it_frames_with_a_byte_or_its_value():
    assert pg.frame(b"Q", b"x\0") == b"Q\0\0\0\x06x\0"
    assert pg.frame(ord("Q"), b"x\0") == b"Q\0\0\0\x06x\0"
    assert pg.frame(b"S") == pg.build_sync() == b"S\0\0\0\x04"
    for bad in (b"", b"QQ", 256, -1):
        with pytest.raises(ValueError):
            pg.frame(bad, b"")


def test_it_builds_the_empty_messages():
    assert pg.build_flush() == b"H\0\0\0\x04"
    assert pg.build_terminate() == b"X\0\0\0\x04"
    assert pg.build_copy_done() == b"c\0\0\0\x04"
    assert pg.build_empty_query_response() == b"I\0\0\0\x04"
    assert pg.build_parse_complete() == b"1\0\0\0\x04"
    assert pg.build_bind_complete() == b"2\0\0\0\x04"
    assert pg.build_close_complete() == b"3\0\0\0\x04"
    assert pg.build_no_data() == b"n\0\0\0\x04"
    assert pg.build_portal_suspended() == b"s\0\0\0\x04"


# -- startup phase -------------------------------------------------------------------------


@settings(max_examples=200)
@given(hs.dictionaries(_names, _text, max_size=8))
def test_it_round_trips_startup_packets(params):
    packet = pg.build_startup(params)
    assert pg.startup_length(packet[:4]) == len(packet)
    startup = pg.parse_startup(packet)
    assert startup.kind == "startup"
    assert startup.version == PROTOCOL_3_0 and (startup.major, startup.minor) == (3, 0)
    assert startup.params == params
    assert list(startup.params) == list(params)  # order kept


def test_it_accepts_protocol_3_2_and_shows_its_minor():
    startup = pg.parse_startup(pg.build_startup({"user": "a"}, version=PROTOCOL_3_2))
    assert (startup.kind, startup.major, startup.minor) == ("startup", 3, 2)
    assert startup.params == {"user": "a"}
    assert pg.parse_startup(pg.build_startup({}, version=3 << 16 | 9)).minor == 9


@pytest.mark.parametrize("version", [2 << 16, 4 << 16, 1 << 16 | 3, 0, 0xFFFF0000])
def test_it_refuses_other_major_versions(version):
    with pytest.raises(ProtocolViolation, match="unsupported frontend protocol") as exc:
        pg.parse_startup(pg.build_startup({"user": "a"}, version=version))
    assert exc.value.sqlstate == "0A000"


def test_it_reads_the_special_requests():
    ssl = pg.parse_startup(pg.build_ssl_request())
    assert (ssl.kind, ssl.version, ssl.params) == ("ssl", SSL_REQUEST_CODE, {})
    gss = pg.parse_startup(pg.build_gssenc_request())
    assert (gss.kind, gss.version) == ("gssenc", GSSENC_REQUEST_CODE)
    assert pg.build_ssl_request() == struct.pack("!ii", 8, 80877103)
    for key in (b"\x01\x02\x03\x04", bytes(range(32)), b"k" * 256):
        cancel = pg.parse_startup(pg.build_cancel_request(-7, key))
        assert (cancel.kind, cancel.process_id, cancel.secret_key) == ("cancel", -7, key)
    assert pg.build_cancel_request(42, b"abcd") == struct.pack("!iiI", 16, 80877102, 42) + b"abcd"


@pytest.mark.parametrize(
    "packet",
    [
        struct.pack("!ii", 9, SSL_REQUEST_CODE) + b"x",  # SSLRequest with a body
        struct.pack("!ii", 12, GSSENC_REQUEST_CODE) + b"xxxx",
        struct.pack("!iii", 12, CANCEL_REQUEST_CODE, 1),  # no key
        struct.pack("!iii", 15, CANCEL_REQUEST_CODE, 1) + b"abc",  # 3-byte key
        struct.pack("!iii", 269, CANCEL_REQUEST_CODE, 1) + b"k" * 257,
        struct.pack("!ii", 8, 1234 << 16 | 1234),  # unknown request code
    ],
)
def test_it_refuses_malformed_special_requests(packet):
    with pytest.raises(ProtocolViolation) as exc:
        pg.parse_startup(packet)
    assert exc.value.sqlstate == "08P01"


def _startup(body: bytes, version: int = PROTOCOL_3_0) -> bytes:
    return struct.pack("!iI", len(body) + 8, version) + body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "expected terminator as last byte"),  # no final NUL at all
        (b"user\0a\0", "expected terminator as last byte"),  # pairs, no final NUL
        (b"user\0", "parameter without a value"),
        (b"user\0\0", "expected terminator as last byte"),  # value took the terminator
        (b"user\0a\0\0database\0b\0\0", "expected terminator as last byte"),  # early end
        (b"user\0a\0user\0b\0\0", "duplicate startup parameter"),
        (b"user\0\xff\xfe\0\0", "not valid UTF-8"),
        (b"\xc3\0a\0\0", "not valid UTF-8"),
    ],
)
def test_it_refuses_malformed_startup_parameters(body, message):
    with pytest.raises(ProtocolViolation, match=message):
        pg.parse_startup(_startup(body))


def test_it_refuses_bad_startup_lengths():
    for length in (*range(8), -1, MAX_STARTUP_PACKET + 5, 0x7FFFFFFF):
        with pytest.raises(ProtocolViolation, match="invalid length of startup packet"):
            pg.startup_length(struct.pack("!i", length))
    with pytest.raises(ProtocolViolation, match="invalid length"):
        pg.startup_length(b"\xff\xff\xff\xff")
    assert pg.startup_length(struct.pack("!i", 8)) == 8
    assert pg.startup_length(struct.pack("!i", MAX_STARTUP_PACKET + 4)) == MAX_STARTUP_PACKET + 4
    for short in (b"", b"\0\0\0"):
        with pytest.raises(ProtocolViolation, match="incomplete startup packet"):
            pg.startup_length(short)
    packet = pg.build_startup({"user": "a"})
    for bad in (packet[:-1], packet + b"\0", packet[:7]):
        with pytest.raises(ProtocolViolation):
            pg.parse_startup(bad)
    # The largest packet PostgreSQL accepts is accepted; one byte more is not.
    big = {"user": "u", "x": "v" * (MAX_STARTUP_PACKET - 15)}
    assert len(pg.build_startup(big)) == MAX_STARTUP_PACKET + 4
    assert pg.parse_startup(pg.build_startup(big)).params == big
    with pytest.raises(ValueError, match="too long"):
        pg.build_startup({**big, "x": big["x"] + "v"})


def test_it_refuses_unbuildable_startup_parameters():
    for params in ({"": "x"}, {"us\0er": "a"}, {"user": "a\0b"}):
        with pytest.raises(ValueError):
            pg.build_startup(params)
    with pytest.raises(ValueError):
        pg.build_cancel_request(1, b"abc")
    with pytest.raises(ValueError):
        pg.build_cancel_request(2**31, b"abcd")


@settings(max_examples=300)
@given(hs.binary(max_size=64), hs.sampled_from([PROTOCOL_3_0, PROTOCOL_3_2, 2 << 16]))
def test_it_never_fails_otherwise_on_garbage_startup_packets(body, version):
    for packet in (_startup(body, version), struct.pack("!i", len(body) + 4) + body, body):
        try:
            startup = pg.parse_startup(packet)
        except ProtocolViolation:
            continue
        assert startup.kind in ("startup", "ssl", "gssenc", "cancel")


# -- framing -------------------------------------------------------------------------------


def _split_all(splitter: MessageSplitter, chunks, how: str = "drain"):
    out = []
    for chunk in chunks:
        splitter.feed(chunk)
        if how == "drain":
            out.extend(splitter.drain())
        elif how == "next":
            while (message := splitter.next_message()) is not None:
                out.append(message)
        else:
            out.extend(splitter)
    return out


def _expected(frames):
    return [(f[0], f[5:], f) for f in frames]


@settings(max_examples=200)
@given(
    hs.lists(_frames(), max_size=12),
    hs.lists(hs.integers(0, 4000), max_size=12),
    hs.sampled_from(["drain", "next", "iter"]),
)
def test_it_splits_a_stream_cut_anywhere(frames, cuts, how):
    stream = b"".join(frames)
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    splitter = MessageSplitter(allowed_tags=BACKEND_TAGS)
    assert _split_all(splitter, chunks, how) == _expected(frames)
    assert splitter.buffered == 0 and splitter.next_size is None and splitter.missing == 5


_steps = hs.sampled_from([1, 2, 3, 4, 5, 6, 7, 9, 64, 1000])
_takes = hs.sampled_from(["none", "next", "drain", "iter"])


def _take(splitter: MessageSplitter, how: str) -> list:
    if how == "next":
        message = splitter.next_message()
        return [] if message is None else [message]
    if how == "drain":
        return splitter.drain()
    if how == "iter":
        return list(splitter)
    return []


@settings(max_examples=300)
@given(hs.lists(_frames(FRONTEND_TAGS), min_size=1, max_size=8), hs.data())
def test_it_splits_with_feeds_and_takes_interleaved(frames, data):
    """Several feeds between takes, takes of one message: nothing lost or reordered,
    and the backpressure figures are right at every step."""
    stream = b"".join(frames)
    splitter = MessageSplitter(allowed_tags=FRONTEND_TAGS)
    out = []
    pos = 0
    while pos < len(stream):
        step = data.draw(_steps)
        splitter.feed(bytearray(stream[pos : pos + step]))
        pos = min(pos + step, len(stream))
        out.extend(_take(splitter, data.draw(_takes)))
        assert splitter.buffered == pos - sum(len(m[2]) for m in out)
        if splitter.next_size is not None:
            assert splitter.next_size == len(frames[len(out)])
        else:
            assert splitter.buffered < 5
    out.extend(splitter.drain())
    assert out == _expected(frames)


def test_it_splits_under_random_feeds_and_takes():
    """A seeded random walk over chunk sizes and ways of taking (thousands of streams)."""
    rnd = random.Random(13)
    for trial in range(3000):
        frames = [
            pg.frame(
                rnd.choice(BACKEND_TAGS), bytes(rnd.randrange(3000 if rnd.random() < 0.1 else 40))
            )
            for _ in range(rnd.randrange(15))
        ]
        stream = b"".join(frames)
        splitter = MessageSplitter(allowed_tags=BACKEND_TAGS)
        out = []
        pos = 0
        while pos < len(stream):
            step = rnd.choice([1, 2, 3, 4, 5, 6, 7, 64, 1000, 5000])
            splitter.feed(stream[pos : pos + step])
            pos = min(pos + step, len(stream))
            out.extend(_take(splitter, rnd.choice(["none", "next", "drain", "iter"])))
            assert splitter.buffered == pos - sum(len(m[2]) for m in out), trial
        out.extend(splitter.drain())
        assert out == _expected(frames), trial


def test_it_keeps_a_pending_chunk_when_a_take_empties_the_buffer():
    """Regression: the buffer ends exactly after a frame while the next frame's first
    bytes wait in the pending list; taking that frame must not drop or reorder them."""
    first, second = pg.build_command_complete("SELECT 1"), pg.build_ready_for_query("I")
    splitter = MessageSplitter()
    splitter.feed(first[:5])
    assert splitter.next_message() is None
    splitter.feed(first[5:])
    splitter.feed(second[:2])
    assert splitter.next_message() == (first[0], first[5:], first)
    assert splitter.buffered == 2
    splitter.feed(second[2:])
    assert splitter.drain() == [(second[0], second[5:], second)]


def test_it_splits_at_every_byte_offset():
    frames = [
        pg.build_authentication(0),
        pg.build_parameter_status("server_version", "18.1"),
        pg.build_backend_key_data(1234, b"\x01\x02\x03\x04"),
        pg.build_ready_for_query("I"),
        pg.build_row_description([FieldDescription("a", 0, 0, 23, 4, -1, 0)]),
        pg.build_data_row([b"1", None, b""]),
        pg.build_command_complete("SELECT 1"),
        pg.build_empty_query_response(),
        pg.build_copy_data(b"x" * 300),
    ]
    stream = b"".join(frames)
    for i in range(len(stream) + 1):
        for j in (i, min(i + 7, len(stream))):
            splitter = MessageSplitter(allowed_tags=BACKEND_TAGS)
            chunks = [stream[:i], stream[i:j], stream[j:]]
            assert _split_all(splitter, chunks) == _expected(frames), (i, j)
    splitter = MessageSplitter()
    assert _split_all(splitter, [stream[k : k + 1] for k in range(len(stream))]) == _expected(
        frames
    )


def test_it_returns_a_chunk_that_is_one_frame_without_copying():
    data = pg.build_query("select 1")
    splitter = MessageSplitter()
    splitter.feed(data)
    ((tag, payload, raw),) = splitter.drain()
    assert raw is data and tag == ord("Q") and payload == b"select 1\0"


def test_it_knows_the_size_of_a_message_before_its_body():
    data = pg.build_copy_data(b"z" * 1000)
    splitter = MessageSplitter()
    splitter.feed(data[:3])
    assert (splitter.buffered, splitter.next_size, splitter.missing) == (3, None, 2)
    splitter.feed(data[3:10])
    assert (splitter.buffered, splitter.next_size, splitter.missing) == (10, 1005, 995)
    assert splitter.drain() == [] and splitter.next_message() is None
    splitter.feed(data[10:] + b"Z")
    assert splitter.drain() == [(ord("d"), data[5:], data)]
    assert (splitter.buffered, splitter.next_size, splitter.missing) == (1, None, 4)
    assert splitter.take_buffered() == b"Z" and splitter.buffered == 0


def test_it_refuses_an_oversize_message_as_soon_as_its_header_arrives():
    splitter = MessageSplitter(max_message=1000)
    splitter.feed(b"d" + struct.pack("!i", 1001))
    assert splitter.next_size == 1002
    with pytest.raises(ProtocolViolation, match="message of 1001 bytes exceeds the limit of 1000"):
        splitter.drain()
    with pytest.raises(ProtocolViolation, match="exceeds the limit"):
        splitter.next_message()  # it stays refused
    ok = MessageSplitter(max_message=1000)
    ok.feed(pg.frame(b"d", b"x" * 996))
    assert len(ok.drain()) == 1
    default = MessageSplitter()
    default.feed(b"d" + struct.pack("!i", pg.DEFAULT_MAX_MESSAGE + 1))
    with pytest.raises(ProtocolViolation, match="exceeds the limit of 67108864"):
        default.next_message()


@pytest.mark.parametrize("length", [0, 1, 2, 3, -1, -(2**31)])
def test_it_refuses_lengths_below_four(length):
    for take in ("drain", "next_message"):
        splitter = MessageSplitter()
        splitter.feed(b"Q" + struct.pack("!i", length))
        with pytest.raises(ProtocolViolation, match=f"invalid message length {length}") as exc:
            getattr(splitter, take)()
        assert exc.value.sqlstate == "08P01"
    splitter = MessageSplitter()
    splitter.feed(b"Q\xff\xff\xff\xff")
    with pytest.raises(ProtocolViolation, match="invalid message length -1"):
        splitter.drain()


def test_it_refuses_unknown_tags_from_their_first_byte():
    for data, shown in ((b"\x16\x03\x01", "\\x16"), (b"Z", "Z"), (b"T\0\0\0\x04", "T")):
        splitter = MessageSplitter(allowed_tags=FRONTEND_TAGS)
        splitter.feed(data)
        with pytest.raises(ProtocolViolation, match=re.escape(f"unknown message type '{shown}'")):
            splitter.drain()
        with pytest.raises(ProtocolViolation, match="unknown message type"):
            splitter.next_message()
    backend = MessageSplitter(allowed_tags=BACKEND_TAGS)
    backend.feed(b"Q")
    with pytest.raises(ProtocolViolation, match="unknown message type 'Q'"):
        list(backend)


def test_it_returns_the_valid_messages_before_a_bad_frame_then_refuses():
    good = [pg.build_query("select 1"), pg.build_sync()]
    splitter = MessageSplitter(allowed_tags=FRONTEND_TAGS)
    splitter.feed(b"".join(good) + b"\x00\0\0\0\x04")
    assert splitter.drain() == _expected(good)
    for _ in range(2):
        with pytest.raises(ProtocolViolation, match="unknown message type '\\\\x00'"):
            splitter.drain()
    partial = MessageSplitter(allowed_tags=FRONTEND_TAGS)
    partial.feed(b"".join(good) + b"\x16")  # bad tag, header incomplete
    assert partial.drain() == _expected(good)
    with pytest.raises(ProtocolViolation):
        partial.drain()


def test_it_joins_a_large_message_a_bounded_number_of_times(monkeypatch):
    joins = []
    original = MessageSplitter._join

    def counting(self):
        joins.append(self.buffered)
        original(self)

    monkeypatch.setattr(MessageSplitter, "_join", counting)
    data = pg.build_copy_data(bytes(1_000_000)) + pg.build_copy_done()
    splitter = MessageSplitter()
    out = []
    for pos in range(0, len(data), 1000):
        splitter.feed(data[pos : pos + 1000])
        out.extend(splitter.drain())
    assert [m[0] for m in out] == [ord("d"), ord("c")]
    assert len(out[0][1]) == 1_000_000
    assert len(joins) <= 2


def test_it_copies_mutable_chunks():
    chunk = bytearray(pg.build_query("select 1")[:4])
    splitter = MessageSplitter()
    splitter.feed(chunk)
    chunk[:] = b"XXXX"
    splitter.feed(memoryview(pg.build_query("select 1")[4:]))
    assert splitter.drain()[0][1] == b"select 1\0"


@settings(max_examples=300)
@given(
    hs.lists(hs.one_of(_frames(), hs.binary(max_size=12)), max_size=8),
    hs.lists(hs.integers(1, 50), min_size=1, max_size=8),
    hs.sampled_from([None, BACKEND_TAGS, FRONTEND_TAGS]),
)
def test_it_refuses_garbage_streams_only_with_protocol_violation(parts, steps, tags):
    stream = b"".join(parts)
    splitter = MessageSplitter(max_message=200, allowed_tags=tags)
    taken = 0
    pos = 0
    try:
        for i in itertools.count():
            if pos >= len(stream):
                break
            step = steps[i % len(steps)]
            splitter.feed(stream[pos : pos + step])
            pos += step
            for tag, payload, raw in splitter.drain():
                assert raw == stream[taken : taken + len(raw)] and raw[5:] == payload
                assert tags is None or tag in tags
                taken += len(raw)
    except ProtocolViolation as exc:
        assert exc.sqlstate == "08P01"
    else:
        assert taken + splitter.buffered == len(stream)


def test_it_validates_its_limits():
    for bad in (3, 2**31):
        with pytest.raises(ValueError):
            MessageSplitter(max_message=bad)
    assert MessageSplitter(4).max_message == 4


# -- frontend messages ---------------------------------------------------------------------


@given(_text)
def test_it_round_trips_query(sql):
    frame = pg.build_query(sql)
    assert frame[0] == ord("Q")
    assert pg.parse_query(_payload(frame)) == sql


@given(_text, _text, hs.lists(_oids, max_size=10))
def test_it_round_trips_parse(name, query, oids):
    frame = pg.build_parse(name, query, oids)
    assert frame[0] == ord("P")
    assert pg.parse_parse(_payload(frame)) == (name, query, tuple(oids))


@settings(max_examples=200)
@given(_binds())
def test_it_round_trips_bind(bind):
    frame = pg.build_bind(
        bind.portal, bind.statement, bind.params, bind.param_formats, bind.result_formats
    )
    assert frame[0] == ord("B")
    parsed = pg.parse_bind(_payload(frame))
    assert parsed == bind
    for index in range(len(bind.params)):
        assert parsed.param_format(index) in (0, 1)


def test_it_gives_the_format_of_each_bind_parameter():
    assert Bind("", "", (), (b"1", b"2"), ()).param_format(1) == 0
    assert Bind("", "", (1,), (b"1", b"2"), ()).param_format(1) == 1
    assert Bind("", "", (0, 1), (b"1", b"2"), ()).param_format(1) == 1


def test_it_round_trips_a_bind_with_65535_parameters():
    params = (b"x",) * 65535
    bind = pg.parse_bind(_payload(pg.build_bind("", "s", params, (1,))))
    assert len(bind.params) == 65535 and bind.param_formats == (1,)
    with pytest.raises(ValueError):
        pg.build_bind("", "", (b"x",) * 65536)


@given(hs.sampled_from(["S", "P"]), _text)
def test_it_round_trips_describe_and_close(kind, name):
    describe, close = pg.build_describe(kind, name), pg.build_close(kind, name)
    assert (describe[0], close[0]) == (ord("D"), ord("C"))
    assert pg.parse_describe(_payload(describe)) == (kind, name)
    assert pg.parse_close(_payload(close)) == (kind, name)


@given(_text, hs.integers(0, 0xFFFFFFFF))
def test_it_round_trips_execute(portal, max_rows):
    frame = pg.build_execute(portal, max_rows)
    assert frame[0] == ord("E")
    assert pg.parse_execute(_payload(frame)) == (portal, max_rows)


@given(_oids, hs.lists(_values, max_size=6), _formats, hs.data())
def test_it_round_trips_function_call(oid, args, result_format, data):
    arg_formats = data.draw(_format_codes(len(args)))
    frame = pg.build_function_call(oid, args, arg_formats, result_format)
    assert frame[0] == ord("F")
    assert pg.parse_function_call(_payload(frame)) == FunctionCall(
        oid, arg_formats, tuple(args), result_format
    )


@given(hs.binary(max_size=40).filter(lambda b: 0 not in b))
def test_it_round_trips_password(password):
    assert pg.parse_password(_payload(pg.build_password(password))) == password
    assert pg.build_password("gh_token") == pg.build_password(b"gh_token")


@given(_names, hs.one_of(hs.none(), hs.binary(max_size=60)))
def test_it_round_trips_sasl_messages(mechanism, data):
    initial = pg.build_sasl_initial_response(mechanism, data)
    assert initial[0] == ord("p")
    assert pg.parse_sasl_initial_response(_payload(initial)) == (mechanism, data or b"")
    response = pg.build_sasl_response(data or b"")
    assert pg.parse_sasl_response(_payload(response)) == (data or b"")


@given(_text, hs.binary(max_size=100))
def test_it_round_trips_copy_messages(message, data):
    assert pg.parse_copy_fail(_payload(pg.build_copy_fail(message))) == message
    assert _payload(pg.build_copy_data(data)) == data


def test_it_refuses_unbuildable_frontend_messages():
    with pytest.raises(ValueError, match="NUL"):
        pg.build_query("select 1\0; drop table x")
    with pytest.raises(ValueError):
        pg.build_parse("", "select 1", [2**32])
    with pytest.raises(ValueError):
        pg.build_bind("", "", [b"1", b"2"], [0, 1, 0])
    with pytest.raises(ValueError):
        pg.build_bind("", "", [b"1"], [2])
    with pytest.raises(ValueError):
        pg.build_describe("X", "")
    with pytest.raises(ValueError):
        pg.build_execute("", -1)
    with pytest.raises(ValueError):
        pg.build_password(b"pass\0word")
    with pytest.raises(ValueError):
        pg.build_function_call(1, [b"1"], [], 2)


# -- backend messages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "data"),
    [
        (0, b""),
        (2, b""),
        (3, b""),
        (5, b"salt"),
        (7, b""),
        (8, b"gss"),
        (9, b""),
        (10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
        (11, b"r=abc,s=def,i=4096"),
        (12, b"v=xyz"),
        (12, b""),
    ],
)
def test_it_round_trips_authentication(code, data):
    frame = pg.build_authentication(code, data)
    assert frame[0] == ord("R")
    assert pg.parse_authentication(_payload(frame)) == (code, data)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\0\0\0",
        struct.pack("!i", 0) + b"x",
        struct.pack("!i", 3) + b"\0",
        struct.pack("!i", 5) + b"abc",
        struct.pack("!i", 5) + b"abcde",
        struct.pack("!i", 10) + b"SCRAM-SHA-256\0",
        struct.pack("!i", 10) + b"SCRAM-SHA-256\0\0x",
        struct.pack("!i", 6),
        struct.pack("!i", -1),
    ],
)
def test_it_refuses_malformed_authentication(payload):
    with pytest.raises(ProtocolViolation):
        pg.parse_authentication(payload)


@given(hs.lists(_names, max_size=4))
def test_it_round_trips_sasl_mechanisms(names):
    assert pg.parse_sasl_mechanisms(pg.build_sasl_mechanisms(names)) == names


@given(_names, _text)
def test_it_round_trips_parameter_status(name, value):
    frame = pg.build_parameter_status(name, value)
    assert frame[0] == ord("S")
    assert pg.parse_parameter_status(_payload(frame)) == (name, value)


@given(_int32, hs.binary(min_size=4, max_size=256))
def test_it_round_trips_backend_key_data(pid, key):
    frame = pg.build_backend_key_data(pid, key)
    assert frame[0] == ord("K")
    assert pg.parse_backend_key_data(_payload(frame)) == (pid, key)


def test_it_refuses_integers_out_of_range_with_value_error():
    for build in (
        lambda: pg.build_authentication(2**31),
        lambda: pg.build_backend_key_data(-(2**31) - 1, b"abcd"),
        lambda: pg.build_notification_response(2**32, "c"),
        lambda: pg.build_parameter_description([-1]),
        lambda: pg.build_row_description([FieldDescription("a", -1, 0, 0, 0, 0, 0)]),
        lambda: pg.build_function_call(2**32),
        lambda: pg.build_negotiate_protocol_version(2**16),
    ):
        with pytest.raises(ValueError):
            build()


def test_it_refuses_bad_backend_keys():
    for payload in (b"", b"\0\0\0\x01abc", b"\0\0\0\x01" + b"k" * 257):
        with pytest.raises(ProtocolViolation):
            pg.parse_backend_key_data(payload)
    with pytest.raises(ValueError):
        pg.build_backend_key_data(1, b"k" * 257)


def test_it_round_trips_ready_for_query():
    for status in "ITE":
        frame = pg.build_ready_for_query(status)
        assert frame == b"Z\0\0\0\x05" + status.encode()
        assert pg.parse_ready_for_query(_payload(frame)) == status
    for payload in (b"", b"X", b"II"):
        with pytest.raises(ProtocolViolation):
            pg.parse_ready_for_query(payload)
    with pytest.raises(ValueError):
        pg.build_ready_for_query("X")


@settings(max_examples=200)
@given(hs.lists(_fields, max_size=8))
def test_it_round_trips_row_description(fields):
    frame = pg.build_row_description(fields)
    assert frame[0] == ord("T")
    parsed = pg.parse_row_description(_payload(frame))
    assert parsed == tuple(fields)
    assert all(type(f) is FieldDescription for f in parsed)
    assert pg.parse_row_description(bytearray(_payload(frame))) == parsed  # memoized


def test_it_decodes_row_description_names_in_the_client_encoding():
    payload = _payload(pg.build_row_description([FieldDescription("é", 0, 0, 25, -1, -1, 0)]))
    latin1 = payload.replace("é".encode(), "é".encode("latin-1"))
    assert pg.parse_row_description(latin1, "latin-1")[0].name == "é"
    with pytest.raises(ProtocolViolation, match="invalid byte sequence") as exc:
        pg.parse_row_description(latin1)
    assert exc.value.sqlstate == "22021"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\0",
        b"\0\x01",  # one field declared, none sent
        b"\xff\xff" + b"a\0" + bytes(18),  # 65535 fields declared
        b"\0\x01a" + bytes(18),  # name without NUL... the zeros end it: 1 byte short
        b"\0\x01a\0" + bytes(17),
        b"\0\x01a\0" + bytes(18) + b"x",
        b"\0\x01a\0" + bytes(16) + b"\0\x02",  # format code 2
        b"\0\x01a\0" + bytes(16) + b"\xff\xff",  # format code -1
    ],
)
def test_it_refuses_malformed_row_descriptions(payload):
    with pytest.raises(ProtocolViolation):
        pg.parse_row_description(payload)
    with pytest.raises(ProtocolViolation):
        pg.parse_row_description(payload)  # refusals are not memoized


@settings(max_examples=200)
@given(hs.lists(_values, max_size=12))
def test_it_round_trips_data_row(values):
    frame = pg.build_data_row(values)
    assert frame[0] == ord("D")
    assert pg.parse_data_row(_payload(frame)) == values


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\0",
        b"\0\x01",
        b"\0\x01\xff\xff\xff\xfe",  # length -2
        b"\0\x01\x80\0\0\0",  # length -2**31
        b"\0\x01\0\0\0\x05abcd",  # value shorter than declared
        b"\0\x01\0\0\0\x01ab",  # trailing byte
        b"\xff\xff\0\0\0\0",  # 65535 columns declared
        b"\0\x02\xff\xff\xff\xff",  # second column missing
    ],
)
def test_it_refuses_malformed_data_rows(payload):
    with pytest.raises(ProtocolViolation):
        pg.parse_data_row(payload)


@given(_text)
def test_it_round_trips_command_complete(tag):
    frame = pg.build_command_complete(tag)
    assert frame[0] == ord("C")
    assert pg.parse_command_complete(_payload(frame)) == tag


@pytest.mark.parametrize(
    ("tag", "rows"),
    [
        ("SELECT 5", 5),
        ("SELECT 0", 0),
        ("INSERT 0 3", 3),
        ("INSERT 0 1", 1),
        ("COPY 10", 10),
        ("UPDATE 2", 2),
        ("DELETE 1", 1),
        ("MERGE 4", 4),
        ("FETCH 3", 3),
        ("MOVE 2", 2),
        ("SELECT 12345678901", 12345678901),
        ("COPY", None),
        ("CREATE TABLE", None),
        ("BEGIN", None),
        ("SET", None),
        ("INSERT 3", None),
        ("UPDATE x", None),
        ("UPDATE -1", None),
        ("SELECT ²", None),
        ("", None),
        ("DROP TABLE 5", None),
    ],
)
def test_it_reads_the_row_count_of_command_tags(tag, rows):
    assert pg.command_tag_rows(tag) == rows


def test_it_builds_error_fields_in_order_and_parses_them_back():
    frame = pg.build_error(
        'relation "x" does not exist',
        sqlstate="42P01",
        detail="d",
        hint="h",
        extra={"P": "15", "R": "parserOpenTable"},
    )
    assert frame[0] == ord("E")
    payload = _payload(frame)
    assert payload == (
        b'SERROR\0VERROR\0C42P01\0Mrelation "x" does not exist\0Dd\0Hh\0P15\0RparserOpenTable\0\0'
    )
    fields = pg.parse_error_fields(payload)
    assert list(fields) == ["S", "V", "C", "M", "D", "H", "P", "R"]
    assert fields["C"] == "42P01" and fields["P"] == "15"
    assert pg.build_error("m", sqlstate="08P01") == pg.frame(
        b"E", b"SERROR\0VERROR\0C08P01\0Mm\0\0"
    )
    notice = pg.build_notice("hello")
    assert notice[0] == ord("N")
    assert pg.parse_error_fields(_payload(notice)) == {
        "S": "NOTICE",
        "V": "NOTICE",
        "C": "00000",
        "M": "hello",
    }


@given(_text, hs.sampled_from(["ERROR", "FATAL", "PANIC"]), hs.one_of(hs.none(), _text))
def test_it_round_trips_errors(message, severity, detail):
    fields = pg.parse_error_fields(
        _payload(pg.build_error(message, sqlstate="XX000", severity=severity, detail=detail))
    )
    assert fields["M"] == message and fields["S"] == fields["V"] == severity
    assert fields.get("D") == detail


def test_it_turns_a_violation_into_an_error_response():
    exc = ProtocolViolation("invalid message length 2")
    assert exc.sqlstate == "08P01" and str(exc) == "invalid message length 2"
    assert isinstance(exc, ValueError)
    fields = pg.parse_error_fields(_payload(exc.error_response()))
    assert fields == {"S": "FATAL", "V": "FATAL", "C": "08P01", "M": "invalid message length 2"}


def test_it_refuses_unbuildable_errors():
    for kwargs in (
        {"sqlstate": "4242"},
        {"sqlstate": "42p01"},
        {"sqlstate": "42P01", "extra": {"M": "again"}},
        {"sqlstate": "42P01", "extra": {"PP": "x"}},
        {"sqlstate": "42P01", "extra": {"\0": "x"}},
        {"sqlstate": "42P01", "detail": "a\0b"},
        {"sqlstate": "42P01", "severity": ""},
    ):
        with pytest.raises(ValueError):
            pg.build_error("m", **kwargs)


@pytest.mark.parametrize(
    "payload",
    [b"", b"SERROR", b"SERROR\0", b"SERROR\0\0x", b"\0\0", b"SERROR\0Mm"],
)
def test_it_refuses_malformed_error_fields(payload):
    with pytest.raises(ProtocolViolation):
        pg.parse_error_fields(payload)


def test_it_reads_error_fields_leniently_on_request():
    payload = b"SERROR\0M\xff\0\0"
    with pytest.raises(ProtocolViolation) as exc:
        pg.parse_error_fields(payload)
    assert exc.value.sqlstate == "22021"
    assert pg.parse_error_fields(payload, errors="replace")["M"] == "\ufffd"
    assert pg.parse_error_fields(b"Ma\0Mb\0\0") == {"M": "b"}  # the last one wins
    assert pg.parse_error_fields(b"\0") == {}


@given(hs.sampled_from([b"G", b"H", b"W"]), _formats, hs.data())
def test_it_round_trips_copy_responses(tag, overall, data):
    formats = data.draw(hs.lists(_formats if overall else hs.just(0), max_size=6))
    frame = pg.build_copy_response(tag, overall, formats)
    assert frame[:1] == tag
    assert pg.parse_copy_response(_payload(frame)) == (overall, tuple(formats))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\0\0",
        b"\x02\0\0",
        b"\0\0\x01\0\x01",
        b"\x01\0\x01\0\x02",
        b"\0\0\x02\0\0",
        b"\0\0\0x",
    ],
)
def test_it_refuses_malformed_copy_responses(payload):
    with pytest.raises(ProtocolViolation):
        pg.parse_copy_response(payload)


@given(hs.lists(_oids, max_size=10))
def test_it_round_trips_parameter_description(oids):
    frame = pg.build_parameter_description(oids)
    assert frame[0] == ord("t")
    assert pg.parse_parameter_description(_payload(frame)) == tuple(oids)


@given(hs.integers(0, 0xFFFF), hs.lists(_names, max_size=4))
def test_it_round_trips_negotiate_protocol_version(minor, options):
    frame = pg.build_negotiate_protocol_version(minor, options)
    assert frame[0] == ord("v")
    assert pg.parse_negotiate_protocol_version(_payload(frame)) == (3 << 16 | minor, tuple(options))


@given(_int32, _text, _text)
def test_it_round_trips_notification_response(pid, channel, text):
    frame = pg.build_notification_response(pid, channel, text)
    assert frame[0] == ord("A")
    assert pg.parse_notification_response(_payload(frame)) == (pid, channel, text)


@given(_values)
def test_it_round_trips_function_call_response(value):
    frame = pg.build_function_call_response(value)
    assert frame[0] == ord("V")
    assert pg.parse_function_call_response(_payload(frame)) == value


# -- every parser against hostile payloads -------------------------------------------------

#: (parser, generator of valid whole frames) for messages whose every strict prefix and
#: every extension by one byte is malformed.
_STRICT = [
    (pg.parse_query, _text.map(pg.build_query)),
    (pg.parse_parse, hs.builds(pg.build_parse, _text, _text, hs.lists(_oids, max_size=3))),
    (
        pg.parse_bind,
        _binds().map(
            lambda b: pg.build_bind(
                b.portal, b.statement, b.params, b.param_formats, b.result_formats
            )
        ),
    ),
    (pg.parse_describe, hs.builds(pg.build_describe, hs.sampled_from("SP"), _text)),
    (pg.parse_close, hs.builds(pg.build_close, hs.sampled_from("SP"), _text)),
    (pg.parse_execute, hs.builds(pg.build_execute, _text, hs.integers(0, 0xFFFFFFFF))),
    (
        pg.parse_function_call,
        hs.builds(pg.build_function_call, _oids, hs.lists(_values, max_size=3)),
    ),
    (
        pg.parse_password,
        hs.builds(pg.build_password, hs.binary(max_size=9).filter(lambda b: 0 not in b)),
    ),
    (pg.parse_copy_fail, _text.map(pg.build_copy_fail)),
    (pg.parse_parameter_status, hs.builds(pg.build_parameter_status, _names, _text)),
    (pg.parse_ready_for_query, hs.sampled_from("ITE").map(pg.build_ready_for_query)),
    (pg.parse_row_description, hs.lists(_fields, max_size=3).map(pg.build_row_description)),
    (pg.parse_data_row, hs.lists(_values, max_size=5).map(pg.build_data_row)),
    (pg.parse_command_complete, _text.map(pg.build_command_complete)),
    (pg.parse_error_fields, hs.builds(pg.build_error, _text, sqlstate=hs.just("22012"))),
    (
        pg.parse_copy_response,
        hs.builds(
            pg.build_copy_response, hs.just(b"H"), hs.just(1), hs.lists(_formats, max_size=4)
        ),
    ),
    (
        pg.parse_parameter_description,
        hs.lists(_oids, max_size=4).map(pg.build_parameter_description),
    ),
    (
        pg.parse_negotiate_protocol_version,
        hs.builds(pg.build_negotiate_protocol_version, hs.just(0), hs.lists(_names, max_size=3)),
    ),
    (
        pg.parse_notification_response,
        hs.builds(pg.build_notification_response, _int32, _text, _text),
    ),
    (pg.parse_function_call_response, _values.map(pg.build_function_call_response)),
    (
        pg.parse_sasl_initial_response,
        hs.builds(pg.build_sasl_initial_response, _names, hs.binary(max_size=10)),
    ),
]


@pytest.mark.parametrize(("parser", "frames"), _STRICT, ids=[p.__name__ for p, _ in _STRICT])
@settings(max_examples=60)
@given(data=hs.data())
def test_it_refuses_every_truncation_and_extension(parser, frames, data):
    payload = _payload(data.draw(frames))
    parser(payload)
    for end in range(len(payload)):
        with pytest.raises(ProtocolViolation):
            parser(payload[:end])
    for extra in (b"\0", b"x", b"\xff\xff\xff\xff"):
        with pytest.raises(ProtocolViolation):
            parser(payload + extra)


_ALL_PARSERS = [
    *(parser for parser, _ in _STRICT),
    pg.parse_authentication,
    pg.parse_sasl_mechanisms,
    pg.parse_backend_key_data,
    pg.parse_sasl_response,
    pg.parse_startup,
]


@pytest.mark.parametrize("parser", _ALL_PARSERS, ids=lambda p: p.__name__)
@settings(max_examples=150)
@given(payload=hs.binary(max_size=80))
def test_it_refuses_garbage_only_with_protocol_violation(parser, payload):
    try:
        parser(payload)
    except ProtocolViolation as exc:
        assert exc.sqlstate in ("08P01", "22021", "0A000")
        assert str(exc)


def test_it_refuses_malformed_binds_with_clear_messages():
    def bind(body: bytes) -> bytes:
        return b"portal\0stmt\0" + body

    cases = [
        (bind(b"\0\x02\0\0\0\0" + b"\0\x01\xff\xff\xff\xff\0\0"), "2 parameter format codes for 1"),
        (bind(b"\0\x01\0\x02\0\0\0\0"), "unsupported format code 2"),
        (bind(b"\0\0\0\x01\xff\xff\xff\xfe\0\0"), "invalid length -2 of parameter 0"),
        (bind(b"\0\0\xff\xff\0\0\0\0"), "declares 65535 parameter"),
        (bind(b"\0\0\0\x01\0\0\0\x09abc\0\0"), "parameter 0 declares 9 bytes"),
        (bind(b"\0\0\0\0\0\x01"), "declares 1 result format codes"),
        (b"portal", "portal name is not NUL-terminated"),
        (b"p\0s", "statement name is not NUL-terminated"),
        (bind(b"\0\0\0\0\0\0" + b"junk"), "4 unexpected bytes at the end"),
    ]
    for payload, message in cases:
        with pytest.raises(ProtocolViolation, match=message):
            pg.parse_bind(payload)
    with pytest.raises(ProtocolViolation, match="invalid byte sequence") as exc:
        pg.parse_bind(b"\xff\0\0\0\0\0\0\0\0")
    assert exc.value.sqlstate == "22021"
    assert pg.parse_bind(b"\xe9\0\0\0\0\0\0\0\0", "latin-1").portal == "é"


def test_it_refuses_malformed_frontend_messages():
    cases = [
        (pg.parse_query, b"select 1", "not NUL-terminated"),
        (pg.parse_query, b"select 1\0\0", "1 unexpected bytes after the query string"),
        (pg.parse_describe, b"Xname\0", "unknown target type 'X'"),
        (pg.parse_describe, b"", "empty payload"),
        (pg.parse_close, b"S", "not NUL-terminated"),
        (pg.parse_execute, b"\0\0\0\0", "row limit"),
        (pg.parse_parse, b"\0select\0\0\x02\0\0\0\x17", "declares 2 parameter types"),
        (pg.parse_function_call, b"\0\0\0\x01\0\0\0\0\0\x02", "unsupported result format"),
        (pg.parse_password, b"pw\0x\0", "one NUL-terminated string"),
        (pg.parse_password, b"", "one NUL-terminated string"),
        (pg.parse_sasl_initial_response, b"SCRAM\0\0\0\0\x05abc", "does not match"),
        (pg.parse_sasl_initial_response, b"SCRAM\0\xff\xff\xff\xfe", "does not match"),
    ]
    for parser, payload, message in cases:
        with pytest.raises(ProtocolViolation, match=message):
            parser(payload)
    assert pg.parse_sasl_initial_response(b"SCRAM\0\xff\xff\xff\xff") == ("SCRAM", b"")


# -- against the real server ---------------------------------------------------------------

PG_ADDRESS = ("127.0.0.1", 5432)
PG_PARAMS = {"user": "postgres", "database": "postgres", "application_name": "gh-protocol-test"}


class _Conn:
    """A bare socket speaking through the codecs under test."""

    def __init__(self) -> None:
        self.sock = socket.create_connection(PG_ADDRESS, timeout=10)
        self.splitter = MessageSplitter(allowed_tags=BACKEND_TAGS)
        self.queue: deque[pg.Message] = deque()

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def read_until(self, tag: str = "Z") -> list[tuple[str, bytes]]:
        """Messages up to and including the first with ``tag``: ``[(tag, payload)]``."""
        out: list[tuple[str, bytes]] = []
        while True:
            while self.queue:
                code, payload, _raw = self.queue.popleft()
                out.append((chr(code), payload))
                if chr(code) == tag:
                    return out
            data = self.sock.recv(65536)
            assert data, f"server closed the connection after {out!r}"
            self.splitter.feed(data)
            self.queue.extend(self.splitter.drain())

    def startup(self, params=PG_PARAMS, version=PROTOCOL_3_0) -> list[tuple[str, bytes]]:
        self.send(pg.build_startup(params, version))
        messages = self.read_until("Z")
        auth = [pg.parse_authentication(p) for t, p in messages if t == "R"]
        assert auth[-1] == (0, b""), f"the test server must trust user postgres: {messages!r}"
        return messages

    def close(self) -> None:
        try:
            self.send(pg.build_terminate())
        finally:
            self.sock.close()


def _connect() -> _Conn:
    """A new connection to the test server (the test is skipped when it is unreachable)."""
    try:
        return _Conn()
    except OSError as exc:
        pytest.skip(f"no PostgreSQL server at {PG_ADDRESS}: {exc}")


@pytest.fixture
def conn():
    c = _connect()
    c.startup()
    yield c
    c.close()


def test_it_logs_into_the_real_server(conn):
    conn.send(pg.build_query("show server_version_num"))
    messages = conn.read_until()
    (row,) = [pg.parse_data_row(p) for t, p in messages if t == "D"]
    assert int(row[0]) >= 90600


def test_it_reads_the_startup_answer_of_the_real_server():
    c = _connect()
    try:
        messages = c.startup()
        tags = [t for t, _ in messages]
        assert tags[0] == "R" and tags[-1] == "Z" and "K" in tags
        status = dict(pg.parse_parameter_status(p) for t, p in messages if t == "S")
        assert status["application_name"] == "gh-protocol-test"
        assert status["client_encoding"] == "UTF8"
        ((pid, key),) = [pg.parse_backend_key_data(p) for t, p in messages if t == "K"]
        assert pid > 0 and len(key) == 4  # protocol 3.0
        assert pg.parse_ready_for_query(messages[-1][1]) == "I"
    finally:
        c.close()


def test_it_runs_a_simple_query_on_the_real_server(conn):
    conn.send(pg.build_query("select 1 as a, 'x'::text as b"))
    messages = conn.read_until()
    assert [t for t, _ in messages] == ["T", "D", "C", "Z"]
    fields = pg.parse_row_description(messages[0][1])
    assert [(f.name, f.type_oid, f.format_code) for f in fields] == [("a", 23, 0), ("b", 25, 0)]
    assert fields[0].type_size == 4 and fields[1].type_size == -1
    assert pg.parse_data_row(messages[1][1]) == [b"1", b"x"]
    tag = pg.parse_command_complete(messages[2][1])
    assert tag == "SELECT 1" and pg.command_tag_rows(tag) == 1
    assert pg.parse_ready_for_query(messages[3][1]) == "I"


def test_it_runs_an_extended_query_with_a_binary_result_on_the_real_server(conn):
    conn.send(
        pg.build_parse("", "select $1::int4 + 1 as n, $2::text as t, null::int4 as z", [23, 0]),
        pg.build_bind("", "", [struct.pack("!i", 41), b"hi"], [1, 0], [1, 0, 1]),
        pg.build_describe("P", ""),
        pg.build_execute("", 0),
        pg.build_sync(),
    )
    messages = conn.read_until()
    assert [t for t, _ in messages] == ["1", "2", "T", "D", "C", "Z"]
    fields = pg.parse_row_description(messages[2][1])
    assert [(f.name, f.type_oid, f.format_code) for f in fields] == [
        ("n", 23, 1),
        ("t", 25, 0),
        ("z", 23, 1),
    ]
    assert pg.parse_data_row(messages[3][1]) == [struct.pack("!i", 42), b"hi", None]
    assert pg.parse_command_complete(messages[4][1]) == "SELECT 1"


def test_it_describes_a_named_statement_and_pages_a_portal_on_the_real_server(conn):
    conn.send(
        pg.build_query("begin"),
        pg.build_parse("s1", "select g from generate_series(1, $1) g", [23]),
        pg.build_describe("S", "s1"),
        pg.build_bind("p1", "s1", [b"3"]),
        pg.build_execute("p1", 2),
        pg.build_execute("p1", 2),
        pg.build_close("P", "p1"),
        pg.build_close("S", "s1"),
        pg.build_sync(),
    )
    conn.read_until()  # begin
    messages = conn.read_until()
    assert [t for t, _ in messages] == [
        "1", "t", "T", "2", "D", "D", "s", "D", "C", "3", "3", "Z"
    ]  # fmt: skip
    assert pg.parse_parameter_description(messages[1][1]) == (23,)
    assert pg.parse_row_description(messages[2][1])[0].format_code == 0
    assert pg.parse_command_complete(messages[8][1]) == "SELECT 1"
    assert pg.parse_ready_for_query(messages[-1][1]) == "T"
    conn.send(pg.build_query("rollback"))
    assert pg.parse_ready_for_query(conn.read_until()[-1][1]) == "I"


def test_it_reads_errors_and_notices_of_the_real_server(conn):
    conn.send(pg.build_query("begin; select 1/0"))
    messages = conn.read_until()
    (error,) = [pg.parse_error_fields(p) for t, p in messages if t == "E"]
    assert error["C"] == "22012" and error["V"] == "ERROR" and error["M"] == "division by zero"
    assert pg.parse_ready_for_query(messages[-1][1]) == "E"
    conn.send(pg.build_query("rollback; do $$ begin raise notice 'hello %', 7; end $$"))
    messages = conn.read_until()
    (notice,) = [pg.parse_error_fields(p) for t, p in messages if t == "N"]
    assert notice["M"] == "hello 7" and notice["V"] == "NOTICE" and notice["C"] == "00000"
    conn.send(pg.build_query(""))
    assert [t for t, _ in conn.read_until()] == ["I", "Z"]


def test_it_copies_out_and_in_with_the_real_server(conn):
    conn.send(pg.build_query("copy (select g, 'v' || g from generate_series(1, 3) g) to stdout"))
    messages = conn.read_until()
    assert [t for t, _ in messages] == ["H", "d", "d", "d", "c", "C", "Z"]
    assert pg.parse_copy_response(messages[0][1]) == (0, (0, 0))
    assert [p for t, p in messages if t == "d"] == [b"1\tv1\n", b"2\tv2\n", b"3\tv3\n"]
    assert pg.command_tag_rows(pg.parse_command_complete(messages[5][1])) == 3
    conn.send(pg.build_query("create temp table gh_copy (n int); copy gh_copy from stdin"))
    messages = conn.read_until("G")
    assert pg.parse_copy_response(messages[-1][1]) == (0, (0,))
    conn.send(pg.build_copy_data(b"1\n2\n"), pg.build_copy_data(b"3\n"), pg.build_copy_done())
    messages = conn.read_until()
    assert pg.parse_command_complete(messages[0][1]) == "COPY 3"
    conn.send(pg.build_query("copy gh_copy from stdin"))
    conn.read_until("G")
    conn.send(pg.build_copy_fail("client gave up"))
    messages = conn.read_until()
    (error,) = [pg.parse_error_fields(p) for t, p in messages if t == "E"]
    assert error["C"] == "57014" and "client gave up" in error["M"]


def test_it_negotiates_the_protocol_version_with_the_real_server():
    c = _connect()
    try:
        messages = c.startup({**PG_PARAMS, "_pq_.gatehouse_probe": "1"}, version=PROTOCOL_3_2)
        negotiations = [pg.parse_negotiate_protocol_version(p) for t, p in messages if t == "v"]
        assert len(negotiations) == 1
        version, options = negotiations[0]
        assert version >> 16 == 3 and version & 0xFFFF in (0, 2)
        assert options == ("_pq_.gatehouse_probe",)
        ((_pid, key),) = [pg.parse_backend_key_data(p) for t, p in messages if t == "K"]
        assert len(key) == (4 if version == PROTOCOL_3_0 else 32)
    finally:
        c.close()


def test_it_cancels_a_query_on_the_real_server():
    c = _connect()
    try:
        messages = c.startup()
        ((pid, key),) = [pg.parse_backend_key_data(p) for t, p in messages if t == "K"]
        c.send(pg.build_query("select pg_sleep(30)"))
        time.sleep(0.3)
        with socket.create_connection(PG_ADDRESS, timeout=10) as cancel:
            cancel.sendall(pg.build_cancel_request(pid, key))
            assert cancel.recv(1) == b""  # the server answers nothing and closes
        messages = c.read_until()
        (error,) = [pg.parse_error_fields(p) for t, p in messages if t == "E"]
        assert error["C"] == "57014"  # query_canceled
    finally:
        c.close()


def test_it_asks_the_real_server_for_tls():
    c = _connect()
    with c.sock:
        c.sock.sendall(pg.build_ssl_request())
        assert c.sock.recv(1) in (b"S", b"N")


def test_the_real_server_refuses_what_the_parser_refuses():
    """Protocol 2.0 and 4.0 startups: PostgreSQL refuses both, as parse_startup does."""
    for version in (2 << 16, 4 << 16):
        packet = pg.build_startup(PG_PARAMS, version=version)
        with pytest.raises(ProtocolViolation, match="unsupported frontend protocol") as exc:
            pg.parse_startup(packet)
        assert exc.value.sqlstate == "0A000"
        c = _connect()
        try:
            c.send(packet)
            data = c.sock.recv(65536)
        finally:
            c.sock.close()
        assert data[:1] == b"E"
        if version == 2 << 16:  # answered in the 2.0 format: no length word, no fields
            assert b"unsupported frontend protocol 2.0" in data
        else:
            fields = pg.parse_error_fields(_payload(data))
            assert fields["C"] == "0A000" and "unsupported frontend protocol 4.0" in fields["M"]
