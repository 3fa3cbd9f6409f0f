"""Recorded PostgreSQL statements as a psql session reads: prompt, SQL, result.

Pure text builders over an exchange's (or approval request's) recorded fields and
``details`` (shape: :class:`proxy_worker.contract.ExchangeMessage`). They return plain
text; templates escape it (``masked`` filter: escape first, then highlight masking
placeholders), so nothing recorded ever becomes markup.

The result table follows psql's default ``aligned`` format (PostgreSQL docs, "psql",
``\\pset format aligned``): header names centred, cells padded with one space and
separated by ``|``, a ``-``/``+`` rule under the header, NULL shown as an empty cell,
a ``+`` at a cell's right edge where it continues on the next line, and ``(N rows)``.
psql right-aligns numeric columns by their type; types are not recorded, so a column
is right-aligned when every sampled value in it is a number.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Characters of one cell shown in the replay table (the rest is cut with ``…``).
CELL_LIMIT = 500
#: SQL longer than this is shown as recorded, without formatting.
FORMAT_LIMIT = 20_000
#: A one-line statement up to this long is shown as recorded (as typed at a psql prompt).
ONE_LINE = 100

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(Infinity|NaN)")


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: East Asian wide and full-width characters
    count 2, combining marks and other zero-width characters 0."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _pad(text: str, width: int, align: str) -> str:
    gap = max(width - display_width(text), 0)
    if align == "right":
        return " " * gap + text
    if align == "center":
        left = gap // 2
        return " " * left + text + " " * (gap - left)
    return text + " " * gap


def cell_text(value: Any) -> str:
    """A recorded cell as text: ``None`` (NULL) is empty, as psql shows it; tabs become
    spaces; carriage returns are dropped; cut at :data:`CELL_LIMIT` characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\r\n", "\n").replace("\r", "").replace("\t", "    ")
    return text if len(text) <= CELL_LIMIT else text[:CELL_LIMIT] + "…"


def aligned_table(columns: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """``columns`` and ``rows`` in psql's aligned format, without the ``(N rows)`` footer.

    Rows shorter than ``columns`` are padded with NULLs, longer ones cut (a malformed
    record still renders). Returns ``""`` when there is no column.
    """
    names = [cell_text(c) for c in columns]
    if not names:
        return ""
    n = len(names)
    cells: list[list[list[str]]] = []
    for row in rows:
        values = list(row)[:n] if isinstance(row, list | tuple) else [row]
        values += [None] * (n - len(values))
        cells.append([cell_text(v).split("\n") for v in values])
    head = [name.split("\n") for name in names]
    widths = [
        max(
            [display_width(line) for line in head[i]]
            + [display_width(line) for r in cells for line in r[i]]
        )
        for i in range(n)
    ]
    numeric = [
        any(r[i] != [""] for r in cells)
        and all(r[i] == [""] or (len(r[i]) == 1 and _NUMBER.fullmatch(r[i][0])) for r in cells)
        for i in range(n)
    ]
    out = _lines(head, widths, ["center"] * n)
    out.append("+".join("-" * (w + 2) for w in widths))
    for r in cells:
        out.extend(_lines(r, widths, ["right" if numeric[i] else "left" for i in range(n)]))
    return "\n".join(out)


def _lines(row: list[list[str]], widths: list[int], aligns: list[str]) -> list[str]:
    """The text lines of one row whose cells may span several lines (``+`` marks a cell
    that continues on the next line, at its right edge, as psql does)."""
    height = max(len(c) for c in row)
    lines = []
    for k in range(height):
        parts = []
        for i, cell in enumerate(row):
            text = cell[k] if k < len(cell) else ""
            more = "+" if k < len(cell) - 1 else " "
            parts.append(" " + _pad(text, widths[i], aligns[i]) + more)
        lines.append("|".join(parts).rstrip())
    return lines


def rows_footer(count: int) -> str:
    """psql's footer: ``(1 row)``, ``(3 rows)``."""
    return f"({count} row{'' if count == 1 else 's'})"


def sql_literal(value: str | None) -> str:
    """A bound parameter as a SQL literal: ``'it''s'``, or ``NULL``."""
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def parameter_lines(parameters: Sequence[Any]) -> list[str]:
    """``$1 = 'value'`` lines of an extended-protocol statement's bound (masked) values."""
    return [
        f"${i} = {sql_literal(None if v is None else str(v))}" for i, v in enumerate(parameters, 1)
    ]


def formatted_sql(sql: str) -> str:
    """``sql`` as shown at the prompt: a short one-line statement as recorded; a longer
    one laid out by ``pglast.prettify`` (comments kept) when it parses; otherwise as
    recorded. The recorded text is always shown next to it when they differ."""
    text = sql.strip()
    if not text or len(text) > FORMAT_LIMIT or ("\n" not in text and len(text) <= ONE_LINE):
        return text
    try:
        import pglast

        pretty = pglast.prettify(text, preserve_comments=True)
    except Exception:  # any parse or printer error: show it as recorded
        return text
    return pretty.strip() or text


def _str_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return None


@dataclass
class Transcript:
    """What the replay page shows of one recorded statement.

    ``lines`` are ``(kind, prompt, text)`` triples in display order; ``kind`` is one of
    ``sql``, ``param``, ``table``, ``footer``, ``note``, ``tag``, ``error`` (a CSS class),
    ``prompt`` the psql prompt before a SQL line (``""`` otherwise), ``text`` recorded
    text (to be escaped). ``recorded_sql`` is set when the prompt shows a formatted form.
    """

    prompt: str
    lines: list[tuple[str, str, str]] = field(default_factory=list)
    recorded_sql: str = ""
    kinds: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)


def prompt_for(agent: str, target: str) -> tuple[str, str]:
    """psql's first-line and continuation prompts for ``agent`` on ``target``:
    ``agent@target=> `` and ``agent@target-> ``."""
    base = f"{agent or '?'}@{target or '?'}"
    return f"{base}=> ", f"{base}-> "


def statement_lines(sql: str, agent: str, target: str) -> list[tuple[str, str, str]]:
    """``sql`` at the prompt: the first line after ``agent@target=>``, the following ones
    after the continuation prompt ``agent@target->``."""
    first, more = prompt_for(agent, target)
    lines = sql.split("\n") if sql else [""]
    return [("sql", first if i == 0 else more, line) for i, line in enumerate(lines)]


def transcript(
    *,
    sql: str,
    details: dict[str, Any] | None,
    agent: str,
    target: str,
    status_code: int,
    error: str = "",
) -> Transcript:
    """The psql-like rendering of one recorded statement.

    ``sql`` is the recorded (masked) statement text, ``details`` the exchange's details
    (any key may be missing), ``status_code`` and ``error`` the exchange's: 400/403/502
    or a ``details["error"]`` show an ``ERROR:`` line with the SQLSTATE.
    """
    d = details if isinstance(details, dict) else {}
    first, _ = prompt_for(agent, target)
    shown = formatted_sql(sql)
    out = Transcript(
        prompt=first,
        recorded_sql=sql if shown != sql.strip() else "",
        kinds=_str_list(d.get("statement_kinds"))
        or ([str(d["statement_kind"])] if d.get("statement_kind") else []),
        tables=_str_list(d.get("tables")),
        functions=_str_list(d.get("functions")),
    )
    out.lines.extend(statement_lines(shown, agent, target))
    params = d.get("parameters")
    if isinstance(params, list) and params:
        out.lines.extend(("param", "", line) for line in parameter_lines(params))
    columns = _str_list(d.get("columns"))
    rows = d.get("rows") if isinstance(d.get("rows"), list) else []
    message = str(d.get("error") or "") or (error if status_code >= 400 else "")
    if columns:
        table = aligned_table(columns, rows)
        out.lines.extend(("table", "", line) for line in table.split("\n"))
        count = _int_or_none(d.get("row_count"))
        out.lines.append(("footer", "", rows_footer(count if count is not None else len(rows))))
        if d.get("rows_truncated") or (count is not None and count > len(rows)):
            out.lines.append(
                ("note", "", f"-- only the first {rows_footer(len(rows))[1:-1]} were recorded")
            )
    tag = str(d.get("command_tag") or "")
    if tag and (not columns or tag.split(" ", 1)[0] in ("INSERT", "UPDATE", "DELETE", "MERGE")):
        out.lines.append(("tag", "", tag))
    copy = d.get("copy")
    if isinstance(copy, dict):
        direction = "FROM STDIN" if copy.get("direction") == "in" else "TO STDOUT"
        out.lines.append(
            (
                "note",
                "",
                f"-- COPY {direction}, {copy.get('format', 'text')} format, "
                f"{copy.get('rows', '?')} rows",
            )
        )
    if d.get("portal_suspended"):
        out.lines.append(("note", "", "-- portal suspended: the client asked for rows in batches"))
    if message or (status_code >= 400 and not tag and not columns):
        out.lines.append(("error", "", f"ERROR:  {message or f'status {status_code}'}"))
        if d.get("sqlstate"):
            out.lines.append(("error", "", f"SQLSTATE: {d['sqlstate']}"))
    return out
