"""Per-connection bookkeeping of the PostgreSQL relay: what each pending message expects.

The relay forwards frontend messages in order and the server answers them in order
(PostgreSQL docs, "Extended Query" and "Pipelining"), so one FIFO of *expectations*
says what every backend message belongs to. After an error in the extended protocol the
server skips messages until ``Sync``; the relay pops their expectations the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from proxy_worker.policy import AccessDecision
from proxy_worker.postgres.protocol import FieldDescription
from proxy_worker.postgres.sql import StatementAnalysis


@dataclass
class StatementRecord:
    """One statement being executed and recorded as one exchange.

    Times: ``started_at`` Unix epoch seconds, ``started_perf`` ``perf_counter`` seconds.
    ``decision`` and ``rule_id`` come from the access rules; ``approval_id`` and
    ``grant_id`` when an approval or a grant let it through.
    """

    analysis: StatementAnalysis | None
    sql: str
    kind: str
    extended: bool
    parameters: tuple[str | None, ...] = ()
    statement_index: int = 0
    decision: str = "allowed"
    rule_id: int | None = None
    approval_id: str | None = None
    grant_id: int | None = None
    started_at: float = field(default_factory=time.time)
    started_perf: float = field(default_factory=time.perf_counter)
    approval_wait_ms: float = 0.0
    #: Set when the result is known.
    status: int = 200
    command_tag: str = ""
    sqlstate: str = ""
    error: str = ""
    row_masker: Any = None  # rowmask.RowMasker
    copy_masker: Any = None  # rowmask.CopyMasker
    copy: dict[str, Any] | None = None
    portal_suspended: bool = False
    finished: bool = False


@dataclass
class PreparedStatement:
    """A protocol-level prepared statement (``Parse``): its analysis and what ``Describe``
    told about it. ``refused``: Gatehouse refused the ``Parse`` (the server never had it)."""

    name: str
    sql: str
    analyses: list[StatementAnalysis]
    param_oids: tuple[int, ...] = ()
    fields: tuple[FieldDescription, ...] | None = None
    refused: bool = False
    #: The relay's segment (see :class:`Portal`) the ``Parse`` was sent in, and the
    #: sequence number of that message.
    segment: int = 0
    seq: int = 0


@dataclass
class Portal:
    """A bound portal (``Bind``): the statement, parameters, decision and result shape.

    ``segment``: the relay's count of ``Sync``/``Query``/``FunctionCall`` messages sent
    before the ``Bind`` (an error makes the server skip the rest of a segment, so what a
    later message of the same segment meets is known). ``described_epoch``: the relay's
    count of messages that can change the portal namespace (``Query``, ``Close``,
    ``Sync``, ``FunctionCall``) when the ``Describe`` whose answer set ``fields`` /
    ``no_data`` was sent: an ``Execute`` in a later epoch describes the portal again, so
    rows are always masked with the description of the portal the server runs.
    """

    name: str
    statement: PreparedStatement | None
    analysis: StatementAnalysis | None
    parameters: tuple[str | None, ...]
    result_formats: tuple[int, ...]
    decision: AccessDecision | None = None
    refused: bool = False
    fields: tuple[FieldDescription, ...] | None = None
    no_data: bool = False
    record: StatementRecord | None = None
    segment: int = 0
    described_epoch: int = -1
    #: Sequence number of the ``Bind`` (frontend messages are numbered from 1).
    seq: int = 0


# --- expectations ------------------------------------------------------------------------


@dataclass
class Expect:
    """Base: what one forwarded frontend message will be answered with."""

    #: ``True`` for messages of the extended protocol (errors skip to the next Sync).
    extended = True


@dataclass
class QueryExpect(Expect):
    """A simple ``Query``: results of each statement in turn, then ``ReadyForQuery``."""

    records: list[StatementRecord]
    index: int = 0
    #: The relay's segment this message ends (see :class:`Portal`), and its sequence
    #: number (what its statements drop was created by earlier messages only).
    segment: int = 0
    seq: int = 0
    extended = False

    @property
    def current(self) -> StatementRecord | None:
        return self.records[self.index] if self.index < len(self.records) else None


@dataclass
class RefusalExpect(Expect):
    """A placeholder Gatehouse sent instead of a refused message: the server's error for
    it is replaced by ``error`` (a whole ``ErrorResponse`` frame). ``simple``: it was a
    ``Query`` (then ``ReadyForQuery`` follows and is consumed here too). ``restore``:
    for a refused ``Bind``, the portal the relay knew by that name before (the server
    still has it: the placeholder fails before replacing anything)."""

    error: bytes
    simple: bool = False
    record: StatementRecord | None = None
    restore: tuple[str, Portal | None] | None = None
    segment: int = 0

    @property
    def extended(self) -> bool:  # type: ignore[override]
        return not self.simple


@dataclass
class ParseExpect(Expect):
    """A ``Parse``; ``previous``: the statement the relay knew by that name before (put
    back when the server refuses or skips the ``Parse``: it then keeps the old one)."""

    statement: PreparedStatement
    previous: PreparedStatement | None = None


@dataclass
class BindExpect(Expect):
    """A ``Bind``; ``previous`` as for :class:`ParseExpect`, for the portal's name."""

    portal: Portal
    previous: Portal | None = None


@dataclass
class DescribeExpect(Expect):
    kind: str  # "S" | "P"
    target: PreparedStatement | Portal | None
    #: Injected by Gatehouse to learn a portal's result shape: the answer is not relayed.
    internal: bool = False
    #: The relay's namespace epoch when it was sent (see :class:`Portal`).
    epoch: int = 0


@dataclass
class ExecuteExpect(Expect):
    portal: Portal
    seq: int = 0


@dataclass
class CloseExpect(Expect):
    kind: str
    name: str
    seq: int = 0


@dataclass
class SyncExpect(Expect):
    #: The relay's segment this ``Sync`` ends (see :class:`Portal`).
    segment: int = 0


@dataclass
class FunctionCallExpect(Expect):
    record: StatementRecord
    segment: int = 0
    extended = False


#: Expectations that end a segment: after an error the server resumes after them.
BOUNDARIES = (QueryExpect, SyncExpect, FunctionCallExpect)


def is_boundary(e: Expect) -> bool:
    """Whether ``e`` ends a segment (a ``Sync``, or a simple ``Query``/``FunctionCall``,
    refused or not)."""
    return isinstance(e, BOUNDARIES) or (isinstance(e, RefusalExpect) and e.simple)
