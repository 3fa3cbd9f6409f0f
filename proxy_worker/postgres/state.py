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


@dataclass
class Portal:
    """A bound portal (``Bind``): the statement, parameters, decision and result shape."""

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
    extended = False

    @property
    def current(self) -> StatementRecord | None:
        return self.records[self.index] if self.index < len(self.records) else None


@dataclass
class RefusalExpect(Expect):
    """A placeholder Gatehouse sent instead of a refused message: the server's error for
    it is replaced by ``error`` (a whole ``ErrorResponse`` frame). ``simple``: it was a
    ``Query`` (then ``ReadyForQuery`` follows and is consumed here too)."""

    error: bytes
    simple: bool = False
    record: StatementRecord | None = None

    @property
    def extended(self) -> bool:  # type: ignore[override]
        return not self.simple


@dataclass
class ParseExpect(Expect):
    statement: PreparedStatement


@dataclass
class BindExpect(Expect):
    portal: Portal


@dataclass
class DescribeExpect(Expect):
    kind: str  # "S" | "P"
    target: PreparedStatement | Portal | None
    #: Injected by Gatehouse to learn a portal's result shape: the answer is not relayed.
    internal: bool = False


@dataclass
class ExecuteExpect(Expect):
    portal: Portal


@dataclass
class CloseExpect(Expect):
    kind: str
    name: str


@dataclass
class SyncExpect(Expect):
    pass


@dataclass
class FunctionCallExpect(Expect):
    record: StatementRecord
    extended = False
