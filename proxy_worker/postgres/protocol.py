"""PostgreSQL frontend/backend protocol 3.0 (and 3.2): framing and message codecs (pure).

Reference: PostgreSQL documentation, chapter "Frontend/Backend Protocol", sections
"Message Flow", "Message Formats" and "Error and Notice Message Fields". No I/O, no
asyncio, no Django: the relay reads bytes, hands them to :class:`MessageSplitter` and
to the ``parse_*`` functions, and writes what the ``build_*`` functions return.

Framing
    *Startup phase*: the client's first packet has no tag: ``Int32 length`` (counting
    itself) then ``Int32 code``: a protocol version ``major << 16 | minor``
    (:data:`PROTOCOL_3_0`) followed by NUL-terminated name/value pairs and a final NUL,
    or one of the special request codes (:data:`SSL_REQUEST_CODE`,
    :data:`GSSENC_REQUEST_CODE`, :data:`CANCEL_REQUEST_CODE`). :func:`startup_length`
    checks the length word as soon as it has arrived, :func:`parse_startup` the
    whole packet.

    *Everything after*: ``Byte1 tag``, ``Int32 length`` (counting itself, not the tag),
    ``length - 4`` bytes of payload. :class:`MessageSplitter` cuts a byte stream into
    such frames.

Limits (hostile input)
    * startup packet: 8 to ``MAX_STARTUP_PACKET + 4`` bytes including the length word,
      exactly as PostgreSQL (``MAX_STARTUP_PACKET_LENGTH`` bounds the packet after its
      length word); only protocol major version 3 is accepted (any minor: the relay
      answers newer minors with NegotiateProtocolVersion); parameter names and values
      must be strict UTF-8, unique, and the packet must end with the NUL terminator.
    * messages: length word >= 4 and <= ``max_message`` (default
      :data:`DEFAULT_MAX_MESSAGE`, 64 MiB), refused as soon as the 5-byte header has
      arrived; optionally only the tags of one direction (:data:`FRONTEND_TAGS`,
      :data:`BACKEND_TAGS`).
    * payloads: every parser checks every count against the bytes left, refuses
      truncated payloads, trailing bytes, missing NUL terminators, value lengths
      below -1, format codes other than 0 (text) and 1 (binary); strings are decoded
      strictly in the given ``encoding``, a Python codec name (the client encoding,
      mapped from PostgreSQL's names by the caller; an unknown name raises
      ``LookupError``, a bug of the caller).
    * cancel keys: 4 bytes in protocol 3.0, 4 to 256 bytes in 3.2 (PostgreSQL 18
      sends 32), in BackendKeyData and CancelRequest alike.

Every refusal of peer input is a :class:`ProtocolViolation` (a ``ValueError``) whose
``sqlstate`` and message are meant for the ErrorResponse sent before closing; no
``IndexError``/``struct.error``/``UnicodeDecodeError`` escapes a parser. The builders
raise a plain ``ValueError`` for values that cannot be put on the wire (a NUL inside a
string, a count or size out of range): that is a bug of the caller, not of the peer.

Integer conventions (as PostgreSQL reads them, ``pq_getmsgint``): Int16 counts are
unsigned (0..65535; libpq allows 65535 bind parameters), OIDs are unsigned 32-bit,
Execute's row limit is unsigned 32-bit; lengths of values are signed (-1 = NULL);
process IDs are signed Int32.

Speed: every fixed layout is a precompiled ``struct.Struct``; :class:`MessageSplitter`
and :func:`parse_row_description` (memoized by payload) are the hot paths, see
``bench/pg_protocol.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

PROTOCOL_3_0 = 196608  # 3 << 16 | 0
PROTOCOL_3_2 = 196610  # 3 << 16 | 2 (PostgreSQL 18: variable-length cancel keys)
SSL_REQUEST_CODE = 80877103  # 1234 << 16 | 5679
GSSENC_REQUEST_CODE = 80877104  # 1234 << 16 | 5680
CANCEL_REQUEST_CODE = 80877102  # 1234 << 16 | 5678

MAX_STARTUP_PACKET = 10_000  # PostgreSQL's MAX_STARTUP_PACKET_LENGTH (after the length word)
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024  # largest length word accepted by default
MIN_CANCEL_KEY = 4  # protocol 3.0 keys are exactly 4 bytes
MAX_CANCEL_KEY = 256  # protocol 3.2: 4 to 256 bytes

#: Every tag a frontend may send after startup ("Message Formats", marked F): Query,
#: Parse, Bind, Describe, Execute, Close, Sync, Flush, FunctionCall, CopyData, CopyDone,
#: CopyFail, Terminate, and 'p' (PasswordMessage, SASLInitialResponse, SASLResponse,
#: GSSResponse).
FRONTEND_TAGS = b"QPBDECSHFdcfXp"
#: Every tag a backend may send (marked B): Authentication*, BackendKeyData,
#: BindComplete, CloseComplete, CommandComplete, CopyData, CopyDone,
#: CopyIn/Out/BothResponse, DataRow, EmptyQueryResponse, ErrorResponse,
#: FunctionCallResponse, NegotiateProtocolVersion, NoData, NoticeResponse,
#: NotificationResponse, ParameterDescription, ParameterStatus, ParseComplete,
#: PortalSuspended, ReadyForQuery, RowDescription.
BACKEND_TAGS = b"RK23CdcGHWDIEVvnNAtS1sZT"

# Authentication request codes ('R').
AUTH_OK = 0
AUTH_KERBEROS_V5 = 2
AUTH_CLEARTEXT_PASSWORD = 3
AUTH_MD5_PASSWORD = 5
AUTH_GSS = 7
AUTH_GSS_CONTINUE = 8
AUTH_SSPI = 9
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12
_AUTH_EMPTY = frozenset({AUTH_OK, AUTH_KERBEROS_V5, AUTH_CLEARTEXT_PASSWORD, AUTH_GSS, AUTH_SSPI})
_AUTH_DATA = frozenset({AUTH_GSS_CONTINUE, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL})

_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I32_I32 = struct.Struct("!ii")
_HEADER = struct.Struct("!Bi")  # tag, length word
_FIELD = struct.Struct("!IhIhih")  # RowDescription field after its name (18 bytes)
_COPY_HEAD = struct.Struct("!bH")

_NULL_LENGTH = b"\xff\xff\xff\xff"
_MAX_INT32 = 0x7FFFFFFF
_MAX_U16 = 0xFFFF
_MAX_U32 = 0xFFFFFFFF
_FORMATS = (0, 1)
_SQLSTATE_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")

#: One message taken from a :class:`MessageSplitter`: ``(tag, payload, raw)`` with
#: ``tag`` the tag byte's value (``ord("Q")``), ``payload`` the bytes after the length
#: word and ``raw`` the whole frame (tag and length included), both ``bytes``.
Message = tuple[int, bytes, bytes]


class FieldDescription(NamedTuple):
    """One field of a ``RowDescription`` ('T') message.

    Attributes:
        name: the column name (decoded from the client encoding).
        table_oid: OID of the table the column comes from, 0 when it is not a plain
            column reference.
        column_attnum: the column's attribute number in that table, 0 otherwise.
        type_oid: OID of the field's data type.
        type_size: ``pg_type.typlen`` (negative: variable width).
        type_modifier: ``pg_attribute.atttypmod`` (type-specific).
        format_code: 0 text, 1 binary (always 0 in a statement's ``Describe``
            answer, where the format is not known yet).
    """

    name: str
    table_oid: int
    column_attnum: int
    type_oid: int
    type_size: int
    type_modifier: int
    format_code: int


class ProtocolViolation(ValueError):
    """Hostile or broken framing or content received from a peer.

    ``str(exc)`` is a short English sentence saying what is wrong (never payload
    bytes; at most a tag character or a startup parameter name), fit for the ``M``
    field of the ErrorResponse the relay sends before it closes the connection
    (:meth:`error_response`). ``exc.sqlstate`` is its SQLSTATE: ``08P01``
    (protocol_violation) by default, ``22021`` (character_not_in_repertoire) for
    undecodable text, ``0A000`` (feature_not_supported) for an unsupported protocol
    version.
    """

    def __init__(self, message: str, sqlstate: str = "08P01") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    def error_response(self, severity: str = "FATAL") -> bytes:
        """The whole ErrorResponse ('E') frame reporting this violation to the peer."""
        return build_error(str(self), sqlstate=self.sqlstate, severity=severity)


def _violation(message: str, detail: str) -> ProtocolViolation:
    return ProtocolViolation(f"invalid {message} message: {detail}")


def _tag_text(tag: int) -> str:
    return chr(tag) if 0x20 <= tag < 0x7F else f"\\x{tag:02x}"


def _as_bytes(payload: bytes | bytearray | memoryview) -> bytes:
    return payload if type(payload) is bytes else bytes(payload)


# --------------------------------------------------------------------------- strings


def _read_str(payload: bytes, pos: int, encoding: str, message: str, what: str) -> tuple[str, int]:
    """Decode the NUL-terminated string at ``pos``: ``(text, position after the NUL)``."""
    end = payload.find(0, pos)
    if end < 0:
        raise _violation(message, f"{what} is not NUL-terminated")
    try:
        return payload[pos:end].decode(encoding), end + 1
    except UnicodeDecodeError:
        raise ProtocolViolation(
            f"invalid byte sequence for encoding {encoding!r} in the {what} of a {message} message",
            sqlstate="22021",
        ) from None


def _only_str(payload: bytes, encoding: str, message: str, what: str) -> str:
    """The payload is exactly one NUL-terminated string."""
    text, pos = _read_str(payload, 0, encoding, message, what)
    if pos != len(payload):
        raise _violation(message, f"{len(payload) - pos} unexpected bytes after the {what}")
    return text


def _cstr(value: str | bytes, encoding: str, what: str) -> bytes:
    """Encode a string for the wire and append its NUL; ``ValueError`` on an inner NUL."""
    data = value.encode(encoding) if isinstance(value, str) else bytes(value)
    if 0 in data:
        raise ValueError(f"{what} contains a NUL character")
    return data + b"\0"


def _int16(payload: bytes, pos: int, message: str, what: str) -> int:
    if pos + 2 > len(payload):
        raise _violation(message, f"truncated before the {what}")
    return _U16.unpack_from(payload, pos)[0]


def _int32(payload: bytes, pos: int, message: str, what: str, st: struct.Struct = _I32) -> int:
    if pos + 4 > len(payload):
        raise _violation(message, f"truncated before the {what}")
    return st.unpack_from(payload, pos)[0]


def _read_formats(payload: bytes, pos: int, message: str, what: str) -> tuple[tuple[int, ...], int]:
    """An Int16 count then that many Int16 format codes (each 0 or 1)."""
    count = _int16(payload, pos, message, f"number of {what}")
    pos += 2
    if pos + 2 * count > len(payload):
        raise _violation(
            message, f"declares {count} {what} but only {len(payload) - pos} bytes remain"
        )
    codes = struct.unpack_from(f"!{count}h", payload, pos)
    for code in codes:
        if code != 0 and code != 1:
            raise _violation(message, f"unsupported format code {code} in the {what}")
    return codes, pos + 2 * count


def _read_values(
    payload: bytes, pos: int, message: str, what: str
) -> tuple[tuple[bytes | None, ...], int]:
    """An Int16 count then that many (Int32 length, bytes) values; -1 = NULL."""
    count = _int16(payload, pos, message, f"number of {what}")
    pos += 2
    size = len(payload)
    if pos + 4 * count > size:
        raise _violation(message, f"declares {count} {what} but only {size - pos} bytes remain")
    values: list[bytes | None] = []
    unpack = _I32.unpack_from
    for index in range(count):
        if pos + 4 > size:
            raise _violation(message, f"truncated in {what} {index}")
        (length,) = unpack(payload, pos)
        pos += 4
        if length < 0:
            if length != -1:
                raise _violation(message, f"invalid length {length} of {what} {index}")
            values.append(None)
            continue
        end = pos + length
        if end > size:
            raise _violation(
                message, f"{what} {index} declares {length} bytes but only {size - pos} remain"
            )
        values.append(payload[pos:end])
        pos = end
    return tuple(values), pos


def _pack_i32(value: int, what: str) -> bytes:
    try:
        return _I32.pack(value)
    except struct.error:
        raise ValueError(f"{what} {value!r} is out of Int32 range") from None


def _end(payload: bytes, pos: int, message: str) -> None:
    if pos != len(payload):
        raise _violation(message, f"{len(payload) - pos} unexpected bytes at the end")


def _pack_formats(codes: Sequence[int], what: str) -> bytes:
    if len(codes) > _MAX_U16:
        raise ValueError(f"too many {what} ({len(codes)}, at most 65535)")
    for code in codes:
        if code not in _FORMATS:
            raise ValueError(f"unsupported format code {code!r} in the {what}")
    return _U16.pack(len(codes)) + struct.pack(f"!{len(codes)}h", *codes)


def _pack_values(values: Sequence[bytes | None], what: str) -> list[bytes]:
    if len(values) > _MAX_U16:
        raise ValueError(f"too many {what} ({len(values)}, at most 65535)")
    parts = [_U16.pack(len(values))]
    for value in values:
        if value is None:
            parts.append(_NULL_LENGTH)
        else:
            parts.append(_I32.pack(len(value)))
            parts.append(value)
    return parts


def frame(tag: bytes | int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """The whole frame: ``tag`` (one byte, or its value), ``Int32`` length, ``payload``.

    Raises ``ValueError`` when the tag is not one byte or the payload is too long for
    the length word (more than 2**31 - 5 bytes).
    """
    if isinstance(tag, int):
        if not 0 <= tag <= 0xFF:
            raise ValueError(f"message tag {tag!r} is not a byte value")
        tag = bytes((tag,))
    elif len(tag) != 1:
        raise ValueError(f"message tag {tag!r} is not one byte")
    length = len(payload) + 4
    if length > _MAX_INT32:
        raise ValueError(f"message payload of {len(payload)} bytes is too long to frame")
    return tag + _I32.pack(length) + payload


# --------------------------------------------------------------------- startup phase


@dataclass(frozen=True, slots=True)
class StartupPacket:
    """The client's first packet, decoded by :func:`parse_startup`.

    Attributes:
        kind: ``"startup"``, ``"ssl"`` (SSLRequest), ``"gssenc"`` (GSSENCRequest) or
            ``"cancel"`` (CancelRequest).
        version: the packet's code: for ``"startup"`` the protocol version
            ``major << 16 | minor`` (see :attr:`major`, :attr:`minor`), otherwise the
            request code.
        params: ``"startup"`` only: the parameters in the order sent (``user``,
            ``database``, ``options``, ``application_name``, ``_pq_.*`` protocol
            options, other run-time settings).
        process_id: ``"cancel"`` only: the target backend's process ID.
        secret_key: ``"cancel"`` only: its secret key (4 bytes in protocol 3.0, 4 to
            256 bytes in 3.2).
    """

    kind: str
    version: int
    params: dict[str, str] = field(default_factory=dict)
    process_id: int = 0
    secret_key: bytes = b""

    @property
    def major(self) -> int:
        """Major protocol version (3 for a startup packet)."""
        return self.version >> 16

    @property
    def minor(self) -> int:
        """Minor protocol version (0 for 3.0, 2 for 3.2)."""
        return self.version & 0xFFFF


def startup_length(first4: bytes | bytearray | memoryview) -> int:
    """Validate the startup packet's length word, as soon as its 4 bytes have arrived.

    Returns the whole packet's length in bytes (length word included): 8 to
    ``MAX_STARTUP_PACKET + 4``. Raises :class:`ProtocolViolation` for fewer or more
    than 4 bytes ("incomplete startup packet") or a length out of that range.
    """
    if len(first4) != 4:
        raise ProtocolViolation("incomplete startup packet")
    (length,) = _I32.unpack_from(first4)
    if length < 8 or length > MAX_STARTUP_PACKET + 4:
        raise ProtocolViolation("invalid length of startup packet")
    return length


def parse_startup(packet: bytes | bytearray | memoryview) -> StartupPacket:
    """Decode the client's first packet (``packet`` includes its 4-byte length word).

    Accepts SSLRequest and GSSENCRequest (exactly 8 bytes), CancelRequest (process ID
    and a 4 to 256 byte key) and StartupMessage of protocol major version 3 with any
    minor version. Raises :class:`ProtocolViolation`: length word not matching the
    packet or out of range, unknown request code (08P01), major version other than 3
    (0A000), parameters that are not NUL-terminated name/value pairs ending with the
    final NUL, a duplicate parameter name, text that is not strict UTF-8 (22021).
    """
    packet = _as_bytes(packet)
    length = startup_length(packet[:4])
    if length != len(packet):
        raise ProtocolViolation(
            f"invalid startup packet: length word says {length} bytes, got {len(packet)}"
        )
    (code,) = _U32.unpack_from(packet, 4)
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
        if length != 8:
            raise ProtocolViolation("invalid length of startup packet")
        return StartupPacket("ssl" if code == SSL_REQUEST_CODE else "gssenc", code)
    if code == CANCEL_REQUEST_CODE:
        if not MIN_CANCEL_KEY <= length - 12 <= MAX_CANCEL_KEY:
            raise ProtocolViolation("invalid length of cancel request packet")
        (pid,) = _I32.unpack_from(packet, 8)
        return StartupPacket("cancel", code, process_id=pid, secret_key=packet[12:])
    major, minor = code >> 16, code & 0xFFFF
    if major == 1234:
        raise ProtocolViolation(f"unsupported startup request code 1234.{minor}")
    if major != 3:
        raise ProtocolViolation(
            f"unsupported frontend protocol {major}.{minor}: only protocol 3 is supported",
            sqlstate="0A000",
        )
    if length < 9 or packet[-1] != 0:  # the version's own last byte is no terminator
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    params: dict[str, str] = {}
    pos, last = 8, len(packet) - 1  # packet[last] is the terminator
    try:
        while pos < last:
            name_end = packet.find(0, pos)
            if name_end == pos:  # an empty name is the terminator, but this is not the end
                raise ProtocolViolation(
                    "invalid startup packet layout: expected terminator as last byte"
                )
            if name_end == last:
                raise ProtocolViolation("invalid startup packet layout: parameter without a value")
            value_end = packet.find(0, name_end + 1)
            if value_end == last:  # the value took the terminator
                raise ProtocolViolation(
                    "invalid startup packet layout: expected terminator as last byte"
                )
            name = packet[pos:name_end].decode("utf-8")
            if name in params:
                raise ProtocolViolation(f"duplicate startup parameter {name!r}")
            params[name] = packet[name_end + 1 : value_end].decode("utf-8")
            pos = value_end + 1
    except UnicodeDecodeError:
        raise ProtocolViolation(
            "startup packet parameters are not valid UTF-8", sqlstate="22021"
        ) from None
    return StartupPacket("startup", code, params)


def build_startup(params: Mapping[str, str], version: int = PROTOCOL_3_0) -> bytes:
    """StartupMessage: length, ``version``, the name/value pairs (UTF-8) and the final NUL.

    Raises ``ValueError`` for an empty name, a NUL in a name or value, or a packet
    larger than PostgreSQL accepts (``MAX_STARTUP_PACKET`` after the length word).
    """
    parts = [_U32.pack(version)]
    for name, value in params.items():
        if not name:
            raise ValueError("startup parameter name is empty")
        parts.append(_cstr(name, "utf-8", "startup parameter name"))
        parts.append(_cstr(value, "utf-8", f"startup parameter {name!r}"))
    parts.append(b"\0")
    body = b"".join(parts)
    if len(body) > MAX_STARTUP_PACKET:
        raise ValueError(f"startup packet of {len(body) + 4} bytes is too long")
    return _I32.pack(len(body) + 4) + body


def build_ssl_request() -> bytes:
    """SSLRequest: 8 bytes (the server answers one byte, ``S`` or ``N``)."""
    return _I32_I32.pack(8, SSL_REQUEST_CODE)


def build_gssenc_request() -> bytes:
    """GSSENCRequest: 8 bytes (the server answers one byte, ``G`` or ``N``)."""
    return _I32_I32.pack(8, GSSENC_REQUEST_CODE)


def build_cancel_request(pid: int, secret: bytes) -> bytes:
    """CancelRequest for backend ``pid`` (signed Int32) with its 4 to 256 byte key.

    Raises ``ValueError`` for a key of another length or a pid out of Int32 range.
    """
    if not MIN_CANCEL_KEY <= len(secret) <= MAX_CANCEL_KEY:
        raise ValueError(f"cancel key of {len(secret)} bytes (4 to 256 expected)")
    head = _I32_I32.pack(12 + len(secret), CANCEL_REQUEST_CODE)
    return head + _pack_i32(pid, "process ID") + secret


# -------------------------------------------------------------------------- framing


_ALL_TAGS = b"\x01" * 256


class MessageSplitter:
    """Incremental splitter of a post-startup byte stream into messages.

    Usage: ``feed(data)`` every chunk read, then take the complete messages with
    :meth:`drain` (a list, fastest), :meth:`next_message` (one at a time) or by
    iterating; each message is ``(tag, payload, raw)`` (:data:`Message`): the tag byte's
    value, the payload after the length word, the whole frame to forward unchanged.
    Both are ``bytes``: a frame that fills a chunk by itself is returned without a copy
    (``raw is data``); otherwise each frame costs one copy for ``raw`` and one for
    ``payload``.

    The buffer is the last chunk (``bytes``) and an offset; chunks that arrive while a
    frame is incomplete are kept in a list and joined once, when enough bytes are
    there for the frame to complete, so a large frame arriving in small chunks is
    copied a bounded number of times (no quadratic growth). Take messages after each
    :meth:`feed`.

    Limits: ``max_message`` bounds the length word (payload + 4 bytes, the tag not
    included); ``allowed_tags`` (e.g. :data:`FRONTEND_TAGS`) restricts the tags. The
    header is checked as soon as it has arrived (the tag as soon as its byte has):
    :class:`ProtocolViolation` ``"message of N bytes exceeds the limit of M"``,
    ``"invalid message length N"`` (below 4, or negative as 0xffffffff),
    ``"unknown message type 'x'"``. :meth:`drain` first returns the valid messages
    before a bad frame and raises on the next call; the splitter stays at the bad
    frame (every later call raises again): close the connection.

    Backpressure: :attr:`buffered` (bytes held, not yet taken), :attr:`next_size`
    (declared size of the next frame once its header has arrived, before its body
    has) and :attr:`missing` (bytes still needed to complete the next frame).
    """

    __slots__ = ("_allowed", "_buf", "_max", "_need_end", "_off", "_pending", "_pending_len")

    def __init__(
        self, max_message: int = DEFAULT_MAX_MESSAGE, allowed_tags: bytes | None = None
    ) -> None:
        """``max_message``: largest length word accepted (4 to 2**31 - 1, bytes);
        ``allowed_tags``: the tags accepted (``None``: any). ``ValueError`` otherwise."""
        if not 4 <= max_message <= _MAX_INT32:
            raise ValueError(f"max_message {max_message!r} out of range (4 to 2**31 - 1)")
        self._max = max_message
        if allowed_tags is None:
            self._allowed = _ALL_TAGS
        else:
            table = bytearray(256)
            for tag in allowed_tags:
                table[tag] = 1
            self._allowed = bytes(table)
        self._buf = b""
        self._off = 0
        self._pending: list[bytes] = []
        self._pending_len = 0
        # Position in _buf (as if the pending chunks were appended) where the first
        # incomplete frame, or its header, ends: joining before is useless.
        self._need_end = 5

    @property
    def max_message(self) -> int:
        """The largest length word accepted, in bytes."""
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as messages."""
        return len(self._buf) - self._off + self._pending_len

    @property
    def next_size(self) -> int | None:
        """Declared size in bytes (tag + length word) of the next frame, once its
        5-byte header has arrived (its body may not have); ``None`` before."""
        if len(self._buf) - self._off < 5:
            return None
        return 1 + _HEADER.unpack_from(self._buf, self._off)[1]

    @property
    def missing(self) -> int:
        """Bytes still to receive before the next frame is complete (at least its
        header: 5 - buffered while the header is incomplete); 0 when it is complete."""
        have = self.buffered
        size = self.next_size
        if size is None:
            return 5 - have
        return max(0, size - have)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (copied unless ``bytes``). Never raises."""
        if not data:
            return
        if self._off >= len(self._buf) and not self._pending_len:  # everything taken
            self._buf = data if type(data) is bytes else bytes(data)
            self._off = 0
            self._need_end = 5
            return
        self._pending.append(data if type(data) is bytes else bytes(data))
        self._pending_len += len(data)
        if len(self._buf) + self._pending_len >= self._need_end:
            self._join()

    def _join(self) -> None:
        parts = self._pending
        if self._off < len(self._buf):
            parts.insert(0, self._buf[self._off :])
        self._buf = parts[0] if len(parts) == 1 else b"".join(parts)
        self._off = 0
        self._pending = []
        self._pending_len = 0
        self._need_end = self._need_from(0)

    def _taken_to_end(self) -> None:
        """Everything in ``_buf`` is taken: continue with the pending chunks, if any
        (they hold less than the next frame, or its header)."""
        if self._pending_len:
            self._buf, self._off = b"", 0
            self._join()
        else:
            self._buf, self._off, self._need_end = b"", 0, 5

    def _need_from(self, pos: int) -> int:
        """Where (in ``_buf``) the first incomplete frame at or after ``pos`` ends, or
        its header while that is incomplete; very far after a bad header (a join would
        not help: the splitter refuses it anyway)."""
        buf = self._buf
        size = len(buf)
        limit = self._max
        while size - pos >= 5:
            length = _HEADER.unpack_from(buf, pos)[1]
            if length < 4 or length > limit:
                return _MAX_INT32 * 4
            end = pos + 1 + length
            if end > size:
                return end
            pos = end
        return pos + 5

    def _check(self, tag: int, length: int) -> None:
        if not self._allowed[tag]:
            raise ProtocolViolation(f"unknown message type '{_tag_text(tag)}'")
        if length < 4:
            raise ProtocolViolation(f"invalid message length {length}")
        if length > self._max:
            raise ProtocolViolation(f"message of {length} bytes exceeds the limit of {self._max}")

    def next_message(self) -> Message | None:
        """Take the next complete message, or ``None`` when it has not fully arrived.

        Raises :class:`ProtocolViolation` for a bad header (see the class).
        """
        buf, off = self._buf, self._off
        have = len(buf) - off
        if have < 5:
            if have and not self._allowed[buf[off]]:
                raise ProtocolViolation(f"unknown message type '{_tag_text(buf[off])}'")
            return None
        tag, length = _HEADER.unpack_from(buf, off)
        if length < 4 or length > self._max or not self._allowed[tag]:
            self._check(tag, length)
        end = off + 1 + length
        if end > len(buf):
            self._need_end = end
            return None
        if end == len(buf):
            self._taken_to_end()
        else:
            self._off = end
        return tag, buf[off + 5 : end], buf[off:end]

    def drain(self) -> list[Message]:
        """Take every complete message (possibly none), in order.

        When a bad frame follows valid ones, returns the valid ones and raises
        :class:`ProtocolViolation` on the next call.
        """
        buf, off = self._buf, self._off
        size = len(buf)
        out: list[Message] = []
        append = out.append
        unpack = _HEADER.unpack_from
        allowed = self._allowed
        limit = self._max
        while size - off >= 5:
            tag, length = unpack(buf, off)
            if length < 4 or length > limit or not allowed[tag]:
                self._off = off
                if out:
                    return out
                self._check(tag, length)
            end = off + 1 + length
            if end > size:
                break
            append((tag, buf[off + 5 : end], buf[off:end]))
            off = end
        else:
            if off < size and not allowed[buf[off]]:
                self._off = off
                if out:
                    return out
                raise ProtocolViolation(f"unknown message type '{_tag_text(buf[off])}'")
        if off == size:
            self._taken_to_end()
        else:
            self._off = off
            self._need_end = self._need_from(off)
        return out

    def __iter__(self) -> Iterator[Message]:
        """Yield complete messages until none is left (lazily, one at a time)."""
        while (message := self.next_message()) is not None:
            yield message

    def take_buffered(self) -> bytes:
        """Remove and return every byte not yet taken (e.g. before handing the socket
        to another reader); the splitter is empty afterwards."""
        data = b"".join([self._buf[self._off :], *self._pending])
        self._buf, self._off, self._need_end = b"", 0, 5
        self._pending = []
        self._pending_len = 0
        return data


# ------------------------------------------------------------ frontend: inspecting


class Bind(NamedTuple):
    """A Bind ('B') message.

    Attributes:
        portal: destination portal name ("" = the unnamed portal).
        statement: source prepared statement name ("" = the unnamed statement).
        param_formats: parameter format codes: empty (all text), one (applies to all)
            or one per parameter; 0 text, 1 binary.
        params: parameter values as sent (``None`` = NULL).
        result_formats: result column format codes, with the same 0/1/n convention.
    """

    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]

    def param_format(self, index: int) -> int:
        """Format code (0 text, 1 binary) of parameter ``index``."""
        formats = self.param_formats
        if not formats:
            return 0
        return formats[0] if len(formats) == 1 else formats[index]


class FunctionCall(NamedTuple):
    """A FunctionCall ('F') message (the legacy fast-path interface).

    Attributes:
        oid: the function's OID.
        arg_formats: argument format codes (0/1/n convention as in :class:`Bind`).
        args: argument values (``None`` = NULL).
        result_format: 0 text, 1 binary.
    """

    oid: int
    arg_formats: tuple[int, ...]
    args: tuple[bytes | None, ...]
    result_format: int


def parse_query(payload: bytes | bytearray | memoryview, encoding: str = "utf-8") -> str:
    """Query ('Q'): the SQL text (one NUL-terminated string in the client encoding).

    Raises :class:`ProtocolViolation`: missing NUL, bytes after it, undecodable (22021).
    """
    return _only_str(_as_bytes(payload), encoding, "Query", "query string")


def parse_parse(
    payload: bytes | bytearray | memoryview, encoding: str = "utf-8"
) -> tuple[str, str, tuple[int, ...]]:
    """Parse ('P'): ``(statement name, query, parameter type OIDs)`` (OID 0 = unspecified).

    Raises :class:`ProtocolViolation` for a malformed payload.
    """
    payload = _as_bytes(payload)
    name, pos = _read_str(payload, 0, encoding, "Parse", "statement name")
    query, pos = _read_str(payload, pos, encoding, "Parse", "query string")
    count = _int16(payload, pos, "Parse", "number of parameter types")
    pos += 2
    if pos + 4 * count != len(payload):
        raise _violation("Parse", f"declares {count} parameter types in {len(payload) - pos} bytes")
    return name, query, struct.unpack_from(f"!{count}I", payload, pos)


def parse_bind(payload: bytes | bytearray | memoryview, encoding: str = "utf-8") -> Bind:
    """Bind ('B') as a :class:`Bind`; names decoded in ``encoding``, values left as bytes.

    Raises :class:`ProtocolViolation`: truncated, trailing bytes, a count larger than
    the payload, a parameter length below -1, a format code other than 0/1, or a
    number of parameter format codes other than 0, 1 or the number of parameters.
    """
    payload = _as_bytes(payload)
    portal, pos = _read_str(payload, 0, encoding, "Bind", "portal name")
    statement, pos = _read_str(payload, pos, encoding, "Bind", "statement name")
    param_formats, pos = _read_formats(payload, pos, "Bind", "parameter format codes")
    params, pos = _read_values(payload, pos, "Bind", "parameter")
    if len(param_formats) > 1 and len(param_formats) != len(params):
        raise _violation(
            "Bind",
            f"{len(param_formats)} parameter format codes for {len(params)} parameters",
        )
    result_formats, pos = _read_formats(payload, pos, "Bind", "result format codes")
    _end(payload, pos, "Bind")
    return Bind(portal, statement, param_formats, params, result_formats)


def _kind_and_name(payload: bytes, encoding: str, message: str) -> tuple[str, str]:
    if not payload:
        raise _violation(message, "empty payload")
    kind = payload[0]
    if kind != 0x53 and kind != 0x50:  # 'S', 'P'
        raise _violation(message, f"unknown target type '{_tag_text(kind)}' (S or P expected)")
    name, pos = _read_str(payload, 1, encoding, message, "name")
    _end(payload, pos, message)
    return chr(kind), name


def parse_describe(
    payload: bytes | bytearray | memoryview, encoding: str = "utf-8"
) -> tuple[str, str]:
    """Describe ('D'): ``(kind, name)``, kind ``"S"`` (statement) or ``"P"`` (portal).

    Raises :class:`ProtocolViolation` for another kind or a malformed payload.
    """
    return _kind_and_name(_as_bytes(payload), encoding, "Describe")


def parse_close(
    payload: bytes | bytearray | memoryview, encoding: str = "utf-8"
) -> tuple[str, str]:
    """Close ('C'): ``(kind, name)``, kind ``"S"`` (statement) or ``"P"`` (portal).

    Raises :class:`ProtocolViolation` for another kind or a malformed payload.
    """
    return _kind_and_name(_as_bytes(payload), encoding, "Close")


def parse_execute(
    payload: bytes | bytearray | memoryview, encoding: str = "utf-8"
) -> tuple[str, int]:
    """Execute ('E'): ``(portal name, max rows)``; max rows 0 = no limit (unsigned,
    as PostgreSQL reads it). Raises :class:`ProtocolViolation` when malformed."""
    payload = _as_bytes(payload)
    portal, pos = _read_str(payload, 0, encoding, "Execute", "portal name")
    if pos + 4 != len(payload):
        raise _violation("Execute", "the row limit must be the last 4 bytes")
    return portal, _U32.unpack_from(payload, pos)[0]


def parse_function_call(payload: bytes | bytearray | memoryview) -> FunctionCall:
    """FunctionCall ('F') as a :class:`FunctionCall`.

    Raises :class:`ProtocolViolation` with the same checks as :func:`parse_bind`.
    """
    payload = _as_bytes(payload)
    oid = _int32(payload, 0, "FunctionCall", "function OID", _U32)
    arg_formats, pos = _read_formats(payload, 4, "FunctionCall", "argument format codes")
    args, pos = _read_values(payload, pos, "FunctionCall", "argument")
    if len(arg_formats) > 1 and len(arg_formats) != len(args):
        raise _violation(
            "FunctionCall",
            f"{len(arg_formats)} argument format codes for {len(args)} arguments",
        )
    if pos + 2 != len(payload):
        raise _violation("FunctionCall", "the result format code must be the last 2 bytes")
    result_format = _I16.unpack_from(payload, pos)[0]
    if result_format not in _FORMATS:
        raise _violation("FunctionCall", f"unsupported result format code {result_format}")
    return FunctionCall(oid, arg_formats, args, result_format)


def parse_password(payload: bytes | bytearray | memoryview) -> bytes:
    """PasswordMessage ('p'): the password (cleartext or ``md5...``) without its NUL.

    Raises :class:`ProtocolViolation` unless the payload is one NUL-terminated string
    (PostgreSQL: "invalid password packet size").
    """
    payload = _as_bytes(payload)
    if payload.find(0) != len(payload) - 1 or not payload:
        raise _violation("password", "expected one NUL-terminated string")
    return payload[:-1]


def parse_sasl_initial_response(payload: bytes | bytearray | memoryview) -> tuple[str, bytes]:
    """SASLInitialResponse ('p'): ``(mechanism, client-first data)``.

    The length -1 ("no initial response") gives ``b""``. Raises
    :class:`ProtocolViolation` when the mechanism is not a NUL-terminated UTF-8 string
    or the data length does not match the rest of the payload.
    """
    payload = _as_bytes(payload)
    mechanism, pos = _read_str(payload, 0, "utf-8", "SASLInitialResponse", "mechanism name")
    length = _int32(payload, pos, "SASLInitialResponse", "data length")
    pos += 4
    if length == -1 and pos == len(payload):
        return mechanism, b""
    if length < 0 or pos + length != len(payload):
        raise _violation(
            "SASLInitialResponse",
            f"data length {length} does not match the {len(payload) - pos} bytes sent",
        )
    return mechanism, payload[pos:]


def parse_sasl_response(payload: bytes | bytearray | memoryview) -> bytes:
    """SASLResponse ('p', also GSSResponse): the mechanism data (the whole payload)."""
    return _as_bytes(payload)


def parse_copy_fail(payload: bytes | bytearray | memoryview, encoding: str = "utf-8") -> str:
    """CopyFail ('f'): the client's error message. ``ProtocolViolation`` when malformed."""
    return _only_str(_as_bytes(payload), encoding, "CopyFail", "error message")


# --------------------------------------------------------------- frontend: building

_SYNC = b"S\0\0\0\x04"
_FLUSH = b"H\0\0\0\x04"
_TERMINATE = b"X\0\0\0\x04"
_COPY_DONE = b"c\0\0\0\x04"


def build_query(sql: str | bytes, encoding: str = "utf-8") -> bytes:
    """Query ('Q') frame. ``ValueError`` when the text contains a NUL."""
    return frame(b"Q", _cstr(sql, encoding, "query"))


def build_parse(
    name: str | bytes,
    query: str | bytes,
    param_oids: Sequence[int] = (),
    encoding: str = "utf-8",
) -> bytes:
    """Parse ('P') frame: statement ``name`` ("" = unnamed), ``query``, parameter type
    OIDs (0 = let the server infer). ``ValueError`` on a NUL or an OID out of range."""
    if len(param_oids) > _MAX_U16:
        raise ValueError(f"too many parameter types ({len(param_oids)}, at most 65535)")
    try:
        oids = struct.pack(f"!H{len(param_oids)}I", len(param_oids), *param_oids)
    except struct.error:
        raise ValueError("parameter type OIDs must be unsigned 32-bit integers") from None
    return frame(
        b"P", _cstr(name, encoding, "statement name") + _cstr(query, encoding, "query") + oids
    )


def build_bind(
    portal: str | bytes = "",
    statement: str | bytes = "",
    params: Sequence[bytes | None] = (),
    param_formats: Sequence[int] = (),
    result_formats: Sequence[int] = (),
    encoding: str = "utf-8",
) -> bytes:
    """Bind ('B') frame. Format codes 0 (text) or 1 (binary); ``param_formats`` has 0,
    1 or ``len(params)`` entries. ``ValueError`` otherwise or on a NUL in a name."""
    if len(param_formats) > 1 and len(param_formats) != len(params):
        raise ValueError(
            f"{len(param_formats)} parameter format codes for {len(params)} parameters"
        )
    parts = [
        _cstr(portal, encoding, "portal name"),
        _cstr(statement, encoding, "statement name"),
        _pack_formats(param_formats, "parameter format codes"),
        *_pack_values(params, "parameters"),
        _pack_formats(result_formats, "result format codes"),
    ]
    return frame(b"B", b"".join(parts))


def _build_kind_name(tag: bytes, kind: str, name: str | bytes, encoding: str) -> bytes:
    if kind not in ("S", "P"):
        raise ValueError(f"kind must be 'S' (statement) or 'P' (portal), not {kind!r}")
    return frame(tag, kind.encode("ascii") + _cstr(name, encoding, "name"))


def build_describe(kind: str, name: str | bytes = "", encoding: str = "utf-8") -> bytes:
    """Describe ('D') frame for a statement (``kind="S"``) or portal (``"P"``)."""
    return _build_kind_name(b"D", kind, name, encoding)


def build_close(kind: str, name: str | bytes = "", encoding: str = "utf-8") -> bytes:
    """Close ('C') frame for a statement (``kind="S"``) or portal (``"P"``)."""
    return _build_kind_name(b"C", kind, name, encoding)


def build_execute(portal: str | bytes = "", max_rows: int = 0, encoding: str = "utf-8") -> bytes:
    """Execute ('E') frame; ``max_rows`` 0 = no limit (0 to 2**32 - 1)."""
    if not 0 <= max_rows <= _MAX_U32:
        raise ValueError(f"max_rows {max_rows!r} out of range")
    return frame(b"E", _cstr(portal, encoding, "portal name") + _U32.pack(max_rows))


def build_function_call(
    oid: int,
    args: Sequence[bytes | None] = (),
    arg_formats: Sequence[int] = (),
    result_format: int = 0,
) -> bytes:
    """FunctionCall ('F') frame (conventions as :func:`build_bind`)."""
    if len(arg_formats) > 1 and len(arg_formats) != len(args):
        raise ValueError(f"{len(arg_formats)} argument format codes for {len(args)} arguments")
    if result_format not in _FORMATS:
        raise ValueError(f"unsupported result format code {result_format!r}")
    if not 0 <= oid <= _MAX_U32:
        raise ValueError(f"function OID {oid!r} out of range")
    parts = [
        _U32.pack(oid),
        _pack_formats(arg_formats, "argument format codes"),
        *_pack_values(args, "arguments"),
        _I16.pack(result_format),
    ]
    return frame(b"F", b"".join(parts))


def build_sync() -> bytes:
    """Sync ('S') frame."""
    return _SYNC


def build_flush() -> bytes:
    """Flush ('H') frame."""
    return _FLUSH


def build_terminate() -> bytes:
    """Terminate ('X') frame."""
    return _TERMINATE


def build_password(password: bytes | str) -> bytes:
    """PasswordMessage ('p') frame (cleartext or ``md5`` hash; ``str`` as UTF-8)."""
    return frame(b"p", _cstr(password, "utf-8", "password"))


def build_sasl_initial_response(mechanism: str, data: bytes | None) -> bytes:
    """SASLInitialResponse ('p') frame; ``data=None`` sends length -1 (no response)."""
    head = _cstr(mechanism, "utf-8", "SASL mechanism")
    if data is None:
        return frame(b"p", head + _NULL_LENGTH)
    return frame(b"p", head + _I32.pack(len(data)) + data)


def build_sasl_response(data: bytes) -> bytes:
    """SASLResponse ('p') frame: ``data`` as is."""
    return frame(b"p", data)


def build_copy_data(data: bytes | bytearray | memoryview) -> bytes:
    """CopyData ('d') frame (either direction)."""
    return frame(b"d", data)


def build_copy_done() -> bytes:
    """CopyDone ('c') frame (either direction)."""
    return _COPY_DONE


def build_copy_fail(message: str, encoding: str = "utf-8") -> bytes:
    """CopyFail ('f') frame with the reason the client gives up."""
    return frame(b"f", _cstr(message, encoding, "CopyFail message"))


# ------------------------------------------------------------- backend: inspecting


def parse_authentication(payload: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """Authentication request ('R'): ``(code, rest)``.

    Codes: 0 ok, 2 Kerberos V5, 3 cleartext password, 7 GSSAPI, 9 SSPI (rest empty);
    5 MD5 (rest = 4-byte salt); 10 SASL (rest = mechanism list, see
    :func:`parse_sasl_mechanisms`); 8 GSS continue, 11 SASL continue, 12 SASL final
    (rest = mechanism data). Raises :class:`ProtocolViolation` for another code or a
    rest of the wrong size.
    """
    payload = _as_bytes(payload)
    code = _int32(payload, 0, "authentication request", "request code")
    rest = payload[4:]
    if code in _AUTH_EMPTY:
        if rest:
            raise _violation("authentication request", f"{len(rest)} unexpected bytes")
    elif code == AUTH_MD5_PASSWORD:
        if len(rest) != 4:
            raise _violation("authentication request", "MD5 salt is not 4 bytes")
    elif code == AUTH_SASL:
        parse_sasl_mechanisms(rest)
    elif code not in _AUTH_DATA:
        raise ProtocolViolation(f"unsupported authentication request code {code}")
    return code, rest


def parse_sasl_mechanisms(data: bytes | bytearray | memoryview) -> list[str]:
    """The mechanism list of AuthenticationSASL: NUL-terminated names then an empty
    one (``b"SCRAM-SHA-256\\0\\0"`` -> ``["SCRAM-SHA-256"]``). ``ProtocolViolation``
    for a missing terminator, bytes after it or non-UTF-8 names."""
    data = _as_bytes(data)
    names: list[str] = []
    pos = 0
    while True:
        name, pos = _read_str(data, pos, "utf-8", "AuthenticationSASL", "mechanism name")
        if not name:
            break
        names.append(name)
    _end(data, pos, "AuthenticationSASL")
    return names


def parse_parameter_status(
    payload: bytes | bytearray | memoryview, encoding: str = "utf-8"
) -> tuple[str, str]:
    """ParameterStatus ('S'): ``(name, value)``. ``ProtocolViolation`` when malformed."""
    payload = _as_bytes(payload)
    name, pos = _read_str(payload, 0, encoding, "ParameterStatus", "parameter name")
    value, pos = _read_str(payload, pos, encoding, "ParameterStatus", "parameter value")
    _end(payload, pos, "ParameterStatus")
    return name, value


def parse_backend_key_data(payload: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """BackendKeyData ('K'): ``(process ID, secret key)``; the key is 4 bytes in
    protocol 3.0 and 4 to 256 bytes in 3.2. ``ProtocolViolation`` otherwise."""
    payload = _as_bytes(payload)
    if not 4 + MIN_CANCEL_KEY <= len(payload) <= 4 + MAX_CANCEL_KEY:
        raise _violation("BackendKeyData", f"secret key of {len(payload) - 4} bytes")
    return _I32.unpack_from(payload)[0], payload[4:]


def parse_ready_for_query(payload: bytes | bytearray | memoryview) -> str:
    """ReadyForQuery ('Z'): transaction status ``"I"`` idle, ``"T"`` in a transaction,
    ``"E"`` in a failed transaction. ``ProtocolViolation`` otherwise."""
    if len(payload) != 1 or payload[0] not in b"ITE":
        raise _violation("ReadyForQuery", "transaction status is not one of I, T, E")
    return chr(payload[0])


_new_tuple = tuple.__new__
_ROW_DESCRIPTION_CACHE: dict[tuple[bytes, str], tuple[FieldDescription, ...]] = {}
_ROW_DESCRIPTION_CACHE_SIZE = 512  # entries; the cache is emptied when it is full
_ROW_DESCRIPTION_CACHE_MAX_PAYLOAD = 8192  # bytes; larger descriptions are not cached


def parse_row_description(
    payload: bytes | bytearray | memoryview, encoding: str = "utf-8"
) -> tuple[FieldDescription, ...]:
    """RowDescription ('T'): one :class:`FieldDescription` per result column.

    Names are decoded in ``encoding`` (22021 when they do not decode). Raises
    :class:`ProtocolViolation` for a count larger than the payload, a truncated
    field, a format code other than 0/1 or trailing bytes.

    Hot path: the same statement yields the same bytes every time, so results (tuples
    of named tuples: immutable, safe to share) are memoized by ``(payload,
    encoding)`` for payloads up to 8 KiB, at most 512 of them.
    """
    if type(payload) is not bytes:
        payload = bytes(payload)
    key = (payload, encoding)
    cached = _ROW_DESCRIPTION_CACHE.get(key)
    if cached is not None:
        return cached
    size = len(payload)
    if size < 2:
        raise _violation("RowDescription", "truncated before the number of fields")
    count = (payload[0] << 8) | payload[1]
    if 2 + 19 * count > size:
        raise _violation(
            "RowDescription", f"declares {count} fields but only {size - 2} bytes remain"
        )
    fields = []
    append = fields.append
    find = payload.find
    unpack = _FIELD.unpack_from
    pos = 2
    try:
        for _ in range(count):
            nul = find(0, pos)
            if nul < 0 or nul + 19 > size:
                raise _violation("RowDescription", "truncated field")
            rest = unpack(payload, nul + 1)
            if rest[5] & ~1:  # format code neither 0 nor 1
                raise _violation("RowDescription", f"unsupported format code {rest[5]}")
            append(_new_tuple(FieldDescription, (payload[pos:nul].decode(encoding),) + rest))
            pos = nul + 19
    except UnicodeDecodeError:
        raise ProtocolViolation(
            f"invalid byte sequence for encoding {encoding!r} in a RowDescription field name",
            sqlstate="22021",
        ) from None
    if pos != size:
        raise _violation("RowDescription", f"{size - pos} unexpected bytes at the end")
    result = tuple(fields)
    if size <= _ROW_DESCRIPTION_CACHE_MAX_PAYLOAD:
        if len(_ROW_DESCRIPTION_CACHE) >= _ROW_DESCRIPTION_CACHE_SIZE:
            _ROW_DESCRIPTION_CACHE.clear()
        _ROW_DESCRIPTION_CACHE[key] = result
    return result


def parse_data_row(payload: bytes | bytearray | memoryview) -> list[bytes | None]:
    """DataRow ('D'): the column values as sent (``None`` = NULL).

    Raises :class:`ProtocolViolation` for a count larger than the payload, a length
    below -1, a value longer than the rest, or trailing bytes.
    """
    if type(payload) is not bytes:
        payload = bytes(payload)
    size = len(payload)
    if size < 2:
        raise _violation("DataRow", "truncated before the number of columns")
    count = (payload[0] << 8) | payload[1]
    if 2 + 4 * count > size:
        raise _violation("DataRow", f"declares {count} columns but only {size - 2} bytes remain")
    values: list[bytes | None] = []
    append = values.append
    unpack = _I32.unpack_from
    pos = 2
    for index in range(count):
        if pos + 4 > size:
            raise _violation("DataRow", f"truncated in column {index}")
        (length,) = unpack(payload, pos)
        pos += 4
        if length >= 0:
            end = pos + length
            if end > size:
                raise _violation(
                    "DataRow", f"column {index} declares {length} bytes but {size - pos} remain"
                )
            append(payload[pos:end])
            pos = end
        elif length == -1:
            append(None)
        else:
            raise _violation("DataRow", f"invalid length {length} of column {index}")
    if pos != size:
        raise _violation("DataRow", f"{size - pos} unexpected bytes at the end")
    return values


def parse_command_complete(payload: bytes | bytearray | memoryview, encoding: str = "utf-8") -> str:
    """CommandComplete ('C'): the command tag (``"SELECT 5"``, ``"INSERT 0 3"``)."""
    return _only_str(_as_bytes(payload), encoding, "CommandComplete", "command tag")


_ROWS_TAGS = frozenset({"SELECT", "UPDATE", "DELETE", "MERGE", "FETCH", "MOVE", "COPY"})


def command_tag_rows(tag: str) -> int | None:
    """Rows processed according to a command tag, or ``None`` when it has no count.

    ``"SELECT 5"`` -> 5 (also CREATE TABLE AS / SELECT INTO), ``"INSERT 0 3"`` -> 3
    (the 0 is the obsolete OID), ``"UPDATE 2"``, ``"DELETE 1"``, ``"MERGE 4"``,
    ``"FETCH 3"``, ``"MOVE 2"``, ``"COPY 10"``; ``"CREATE TABLE"``, ``"BEGIN"``, a bare
    ``"COPY"`` or a malformed tag -> ``None``.
    """
    parts = tag.split(" ")
    if parts[0] == "INSERT":
        if len(parts) != 3:
            return None
        count = parts[2]
    elif len(parts) == 2 and parts[0] in _ROWS_TAGS:
        count = parts[1]
    else:
        return None
    return int(count) if count.isascii() and count.isdigit() else None


def parse_error_fields(
    payload: bytes | bytearray | memoryview, encoding: str = "utf-8", errors: str = "strict"
) -> dict[str, str]:
    """ErrorResponse ('E') / NoticeResponse ('N'): ``{field code: value}``.

    Codes ("Error and Notice Message Fields"): ``S`` severity (localized), ``V``
    severity, ``C`` SQLSTATE, ``M`` message, ``D`` detail, ``H`` hint, ``P`` position,
    ``p``/``q`` internal position/query, ``W`` where, ``s``/``t``/``c``/``d``/``n``
    schema/table/column/data type/constraint, ``F``/``L``/``R`` file/line/routine;
    unknown codes are kept. A repeated code keeps the last value (as libpq). With
    ``errors="replace"`` undecodable values are repaired instead of refused. Raises
    :class:`ProtocolViolation` for a missing final terminator, a value without its NUL
    or bytes after the terminator.
    """
    payload = _as_bytes(payload)
    fields: dict[str, str] = {}
    size = len(payload)
    pos = 0
    while True:
        if pos >= size:
            raise _violation("ErrorResponse", "missing the final terminator")
        code = payload[pos]
        if code == 0:
            break
        end = payload.find(0, pos + 1)
        if end < 0:
            raise _violation("ErrorResponse", f"field '{_tag_text(code)}' is not NUL-terminated")
        try:
            fields[chr(code)] = payload[pos + 1 : end].decode(encoding, errors)
        except UnicodeDecodeError:
            raise ProtocolViolation(
                f"invalid byte sequence for encoding {encoding!r} in an ErrorResponse field",
                sqlstate="22021",
            ) from None
        pos = end + 1
    _end(payload, pos + 1, "ErrorResponse")
    return fields


def parse_copy_response(payload: bytes | bytearray | memoryview) -> tuple[int, tuple[int, ...]]:
    """CopyInResponse ('G'), CopyOutResponse ('H'), CopyBothResponse ('W'):
    ``(overall format, per-column formats)``; 0 text (then every column is 0), 1 binary.
    ``ProtocolViolation`` when malformed."""
    payload = _as_bytes(payload)
    if len(payload) < 3:
        raise _violation("CopyResponse", "truncated")
    overall, count = _COPY_HEAD.unpack_from(payload)
    if overall not in _FORMATS:
        raise _violation("CopyResponse", f"unsupported overall format {overall}")
    if 3 + 2 * count != len(payload):
        raise _violation("CopyResponse", f"declares {count} columns in {len(payload) - 3} bytes")
    formats = struct.unpack_from(f"!{count}h", payload, 3)
    for code in formats:
        if code not in _FORMATS or (overall == 0 and code != 0):
            raise _violation("CopyResponse", f"unsupported column format {code}")
    return overall, formats


def parse_parameter_description(payload: bytes | bytearray | memoryview) -> tuple[int, ...]:
    """ParameterDescription ('t'): the parameter type OIDs of a prepared statement."""
    payload = _as_bytes(payload)
    count = _int16(payload, 0, "ParameterDescription", "number of parameters")
    if 2 + 4 * count != len(payload):
        raise _violation(
            "ParameterDescription", f"declares {count} parameters in {len(payload) - 2} bytes"
        )
    return struct.unpack_from(f"!{count}I", payload, 2)


def parse_negotiate_protocol_version(
    payload: bytes | bytearray | memoryview,
) -> tuple[int, tuple[str, ...]]:
    """NegotiateProtocolVersion ('v'): ``(version, unrecognized options)``.

    ``version`` is the full ``major << 16 | minor`` the server will speak (what
    PostgreSQL sends; the docs call it the newest minor version), e.g. 196608 for 3.0.
    """
    payload = _as_bytes(payload)
    if len(payload) < 8:
        raise _violation("NegotiateProtocolVersion", "truncated")
    version, count = _I32_I32.unpack_from(payload)
    if count < 0 or 8 + count > len(payload):
        raise _violation(
            "NegotiateProtocolVersion", f"declares {count} options in {len(payload) - 8} bytes"
        )
    names = []
    pos = 8
    for _ in range(count):
        name, pos = _read_str(payload, pos, "utf-8", "NegotiateProtocolVersion", "option name")
        names.append(name)
    _end(payload, pos, "NegotiateProtocolVersion")
    return version, tuple(names)


def parse_notification_response(
    payload: bytes | bytearray | memoryview, encoding: str = "utf-8"
) -> tuple[int, str, str]:
    """NotificationResponse ('A'): ``(notifying process ID, channel, payload)``."""
    payload = _as_bytes(payload)
    pid = _int32(payload, 0, "NotificationResponse", "process ID")
    channel, pos = _read_str(payload, 4, encoding, "NotificationResponse", "channel name")
    text, pos = _read_str(payload, pos, encoding, "NotificationResponse", "payload string")
    _end(payload, pos, "NotificationResponse")
    return pid, channel, text


def parse_function_call_response(payload: bytes | bytearray | memoryview) -> bytes | None:
    """FunctionCallResponse ('V'): the result value (``None`` = NULL)."""
    payload = _as_bytes(payload)
    length = _int32(payload, 0, "FunctionCallResponse", "result length")
    if length == -1 and len(payload) == 4:
        return None
    if length < 0 or 4 + length != len(payload):
        raise _violation(
            "FunctionCallResponse", f"result length {length} in {len(payload) - 4} bytes"
        )
    return payload[4:]


# --------------------------------------------------------------- backend: building

_EMPTY_QUERY = b"I\0\0\0\x04"
_PARSE_COMPLETE = b"1\0\0\0\x04"
_BIND_COMPLETE = b"2\0\0\0\x04"
_CLOSE_COMPLETE = b"3\0\0\0\x04"
_NO_DATA = b"n\0\0\0\x04"
_PORTAL_SUSPENDED = b"s\0\0\0\x04"
_READY = {status: b"Z\0\0\0\x05" + status.encode() for status in "ITE"}


def build_authentication(code: int, data: bytes = b"") -> bytes:
    """Authentication request ('R') frame: ``code`` (see :func:`parse_authentication`)
    then ``data`` (MD5 salt, SASL mechanism list or data)."""
    return frame(b"R", _pack_i32(code, "authentication request code") + data)


def build_sasl_mechanisms(mechanisms: Sequence[str]) -> bytes:
    """The data of AuthenticationSASL (code 10): names, each NUL-terminated, then NUL."""
    return b"".join(_cstr(name, "utf-8", "SASL mechanism") for name in mechanisms) + b"\0"


def build_parameter_status(name: str, value: str, encoding: str = "utf-8") -> bytes:
    """ParameterStatus ('S') frame."""
    return frame(
        b"S", _cstr(name, encoding, "parameter name") + _cstr(value, encoding, "parameter value")
    )


def build_backend_key_data(pid: int, secret: bytes) -> bytes:
    """BackendKeyData ('K') frame: ``pid`` (signed Int32) and a 4 to 256 byte key
    (exactly 4 for a protocol 3.0 client). ``ValueError`` otherwise."""
    if not MIN_CANCEL_KEY <= len(secret) <= MAX_CANCEL_KEY:
        raise ValueError(f"cancel key of {len(secret)} bytes (4 to 256 expected)")
    return frame(b"K", _pack_i32(pid, "process ID") + secret)


def build_ready_for_query(status: str = "I") -> bytes:
    """ReadyForQuery ('Z') frame; ``status`` ``"I"``, ``"T"`` or ``"E"``."""
    try:
        return _READY[status]
    except KeyError:
        raise ValueError(f"transaction status {status!r} is not one of I, T, E") from None


def build_negotiate_protocol_version(newest_minor: int, unsupported: Sequence[str] = ()) -> bytes:
    """NegotiateProtocolVersion ('v') frame: the newest minor version of protocol 3 the
    relay speaks (sent as ``3 << 16 | newest_minor``, as PostgreSQL does) and the
    ``_pq_.`` options it did not recognize."""
    if not 0 <= newest_minor <= 0xFFFF:
        raise ValueError(f"minor protocol version {newest_minor!r} out of range")
    parts = [_I32_I32.pack(3 << 16 | newest_minor, len(unsupported))]
    parts.extend(_cstr(name, "utf-8", "protocol option") for name in unsupported)
    return frame(b"v", b"".join(parts))


def build_row_description(fields: Sequence[FieldDescription], encoding: str = "utf-8") -> bytes:
    """RowDescription ('T') frame from :class:`FieldDescription` tuples."""
    if len(fields) > _MAX_U16:
        raise ValueError(f"too many fields ({len(fields)})")
    parts = [_U16.pack(len(fields))]
    pack = _FIELD.pack
    try:
        for f in fields:
            parts.append(_cstr(f.name, encoding, "field name"))
            parts.append(pack(*f[1:]))
    except struct.error as exc:
        raise ValueError(f"field attribute out of range: {exc}") from None
    return frame(b"T", b"".join(parts))


def build_data_row(values: Sequence[bytes | None]) -> bytes:
    """DataRow ('D') frame (whole frame) from column values (``None`` = NULL). Hot path
    of result masking. ``ValueError`` for more than 65535 columns or a row over 2 GiB."""
    count = len(values)
    if count > _MAX_U16:
        raise ValueError(f"too many columns ({count})")
    parts = [b"", _U16.pack(count)]
    append = parts.append
    pack = _I32.pack
    size = 6
    for value in values:
        if value is None:
            append(_NULL_LENGTH)
            size += 4
        else:
            n = len(value)
            append(pack(n))
            append(value)
            size += 4 + n
    if size > _MAX_INT32:
        raise ValueError(f"data row of {size} bytes is too long to frame")
    parts[0] = b"D" + pack(size)
    return b"".join(parts)


def build_command_complete(tag: str, encoding: str = "utf-8") -> bytes:
    """CommandComplete ('C') frame with the command tag (``"SELECT 5"``)."""
    return frame(b"C", _cstr(tag, encoding, "command tag"))


def build_empty_query_response() -> bytes:
    """EmptyQueryResponse ('I') frame."""
    return _EMPTY_QUERY


def build_parse_complete() -> bytes:
    """ParseComplete ('1') frame."""
    return _PARSE_COMPLETE


def build_bind_complete() -> bytes:
    """BindComplete ('2') frame."""
    return _BIND_COMPLETE


def build_close_complete() -> bytes:
    """CloseComplete ('3') frame."""
    return _CLOSE_COMPLETE


def build_no_data() -> bytes:
    """NoData ('n') frame."""
    return _NO_DATA


def build_portal_suspended() -> bytes:
    """PortalSuspended ('s') frame."""
    return _PORTAL_SUSPENDED


def build_parameter_description(oids: Sequence[int]) -> bytes:
    """ParameterDescription ('t') frame from parameter type OIDs."""
    if len(oids) > _MAX_U16:
        raise ValueError(f"too many parameters ({len(oids)})")
    try:
        return frame(b"t", struct.pack(f"!H{len(oids)}I", len(oids), *oids))
    except struct.error:
        raise ValueError("parameter type OIDs must be unsigned 32-bit integers") from None


def build_copy_response(tag: bytes, overall: int, formats: Sequence[int]) -> bytes:
    """CopyInResponse (``tag=b"G"``), CopyOutResponse (``b"H"``) or CopyBothResponse
    (``b"W"``) frame: overall format 0 text / 1 binary and one format per column."""
    if tag not in (b"G", b"H", b"W"):
        raise ValueError(f"copy response tag {tag!r} is not G, H or W")
    if overall not in _FORMATS or any(
        code not in _FORMATS or (overall == 0 and code) for code in formats
    ):
        raise ValueError("copy formats must be 0 or 1 (all 0 for a text copy)")
    if len(formats) > _MAX_U16:
        raise ValueError(f"too many columns ({len(formats)})")
    return frame(
        tag, _COPY_HEAD.pack(overall, len(formats)) + struct.pack(f"!{len(formats)}h", *formats)
    )


def build_notification_response(
    pid: int, channel: str, payload: str = "", encoding: str = "utf-8"
) -> bytes:
    """NotificationResponse ('A') frame."""
    return frame(
        b"A",
        _pack_i32(pid, "process ID")
        + _cstr(channel, encoding, "channel")
        + _cstr(payload, encoding, "payload"),
    )


def build_function_call_response(value: bytes | None) -> bytes:
    """FunctionCallResponse ('V') frame (``None`` = NULL result)."""
    if value is None:
        return frame(b"V", _NULL_LENGTH)
    return frame(b"V", _I32.pack(len(value)) + value)


_ERROR_MAIN_FIELDS = frozenset("SVCMDH")


def _build_fields(
    tag: bytes,
    message: str,
    sqlstate: str,
    severity: str,
    detail: str | None,
    hint: str | None,
    extra: Mapping[str, str] | None,
    encoding: str,
) -> bytes:
    if len(sqlstate) != 5 or not set(sqlstate) <= _SQLSTATE_CHARS:
        raise ValueError(f"SQLSTATE {sqlstate!r} is not five digits or upper-case letters")
    if not severity:
        raise ValueError("severity is empty")
    parts = [
        b"S" + _cstr(severity, encoding, "severity"),
        b"V" + _cstr(severity, encoding, "severity"),
        b"C" + sqlstate.encode("ascii") + b"\0",
        b"M" + _cstr(message, encoding, "message"),
    ]
    if detail is not None:
        parts.append(b"D" + _cstr(detail, encoding, "detail"))
    if hint is not None:
        parts.append(b"H" + _cstr(hint, encoding, "hint"))
    for code, value in (extra or {}).items():
        if len(code) != 1 or not 0x20 < ord(code) < 0x7F or code in _ERROR_MAIN_FIELDS:
            raise ValueError(f"invalid extra field code {code!r}")
        parts.append(code.encode("ascii") + _cstr(value, encoding, f"field {code!r}"))
    parts.append(b"\0")
    return frame(tag, b"".join(parts))


def build_error(
    message: str,
    *,
    sqlstate: str,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
    extra: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
) -> bytes:
    """ErrorResponse ('E') frame: fields S, V (both ``severity``: ERROR, FATAL or
    PANIC), C, M, then D and H when given, then ``extra`` (field code -> value, e.g.
    ``{"P": "15"}``) in its order, then the terminator.

    Raises ``ValueError`` for a malformed SQLSTATE, a NUL in a value, or an extra code
    that is not one printable ASCII character or repeats S, V, C, M, D, H.
    """
    return _build_fields(b"E", message, sqlstate, severity, detail, hint, extra, encoding)


def build_notice(
    message: str,
    *,
    sqlstate: str = "00000",
    severity: str = "NOTICE",
    detail: str | None = None,
    hint: str | None = None,
    extra: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
) -> bytes:
    """NoticeResponse ('N') frame, fields as :func:`build_error` (severity WARNING,
    NOTICE, DEBUG, INFO or LOG; SQLSTATE ``00000`` successful_completion by default)."""
    return _build_fields(b"N", message, sqlstate, severity, detail, hint, extra, encoding)
