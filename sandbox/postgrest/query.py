"""Pure translation of PostgREST requests into SQL (no I/O).

Supported, as PostgREST 12 does them: `select=` with plain column names or `*`; horizontal
filters `col=op.value` with eq, neq, lt, lte, gt, gte and is (null/true/false); `order=`
(`col[.asc|.desc][.nullsfirst|.nullslast]`, comma-separated) and `limit=` on reads;
`on_conflict=` and `columns=` on POST; `Prefer: return=…, resolution=…, missing=default`.
Anything else is answered with PostgREST's parse error (PGRST100) rather than guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OPERATORS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
IS_VALUES = {"null": "null", "true": "true", "false": "false", "unknown": "unknown"}
RESERVED_PARAMS = frozenset({"select", "limit", "offset", "order", "on_conflict", "columns"})


class RequestError(Exception):
    """A request PostgREST would reject before reaching the database."""

    def __init__(self, status: int, code: str, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message, "details": details, "hint": None}


@dataclass(frozen=True)
class Table:
    """A table as the schema cache knows it: name and column → SQL type."""

    schema: str
    name: str
    columns: Mapping[str, str]
    primary_key: tuple[str, ...] = ()

    @property
    def sql_name(self) -> str:
        return f"{ident(self.schema)}.{ident(self.name)}"

    def column(self, name: str) -> str:
        if name not in self.columns:
            raise RequestError(400, "42703", f"column {self.name}.{name} does not exist")
        return name


@dataclass
class Statement:
    sql: str
    args: list[Any] = field(default_factory=list)

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parse_prefer(values: Iterable[str]) -> dict[str, str]:
    """`Prefer: return=representation,resolution=ignore-duplicates` → {"return": ..., ...}."""
    prefs: dict[str, str] = {}
    for header in values:
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            if name:
                prefs[name] = value
    return prefs


def select_list(table: Table, select: str | None, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    if select is None or select.strip() in ("", "*"):
        return f"{prefix}*"
    names = [part.strip() for part in select.split(",")]
    for name in names:
        if not name.replace("_", "").isalnum():
            raise RequestError(400, "PGRST100", f'"failed to parse select parameter ({select})"')
        table.column(name)
    return ", ".join(prefix + ident(n) for n in names)


def where_clause(
    stmt: Statement, table: Table, filters: Sequence[tuple[str, str]], alias: str = ""
) -> str:
    """`col=op.value` pairs → a SQL condition, values as text parameters cast to the column type."""
    conditions: list[str] = []
    prefix = f"{alias}." if alias else ""
    for column, expression in filters:
        table.column(column)
        op, dot, value = expression.partition(".")
        negate = False
        if op == "not" and dot:
            negate = True
            op, dot, value = value.partition(".")
        if not dot:
            raise RequestError(400, "PGRST100", f'"failed to parse filter ({expression})"')
        target = prefix + ident(column)
        if op in OPERATORS:
            placeholder = stmt.param(value)
            condition = f"{target} {OPERATORS[op]} {placeholder}::text::{table.columns[column]}"
        elif op == "is" and value in IS_VALUES:
            condition = f"{target} is {IS_VALUES[value]}"
        else:
            raise RequestError(400, "PGRST100", f'"failed to parse filter ({expression})"')
        conditions.append(f"not ({condition})" if negate else condition)
    return " and ".join(conditions) if conditions else "true"


def json_result(stmt: Statement, source: str, table: Table, select: str | None) -> str:
    """Wrap a row source (subquery or CTE name) so Postgres returns the JSON array body."""
    return (
        f"select coalesce(json_agg(_postgrest_t), '[]')::text from"
        f" (select {select_list(table, select, '_r')} from {source} _r) _postgrest_t"
    )


def parse_limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise RequestError(400, "PGRST100", f'"failed to parse limit ({raw})"')
    return int(raw)


ORDER_DIRECTIONS = {"asc": "asc", "desc": "desc"}
ORDER_NULLS = {"nullsfirst": "nulls first", "nullslast": "nulls last"}


def order_clause(table: Table, raw: str | None) -> str:
    """`order=updated_at.desc,id` → ` order by "updated_at" desc, "id"` (PostgREST's grammar:
    a column, then optionally a direction and a nulls position, each after a dot)."""
    if raw is None:
        return ""
    terms: list[str] = []
    for term in raw.split(","):
        column, *modifiers = term.strip().split(".")
        if not column:
            raise RequestError(400, "PGRST100", f'"failed to parse order ({raw})"')
        sql = ident(table.column(column))
        if modifiers and modifiers[0] in ORDER_DIRECTIONS:
            sql += f" {ORDER_DIRECTIONS[modifiers.pop(0)]}"
        if modifiers and modifiers[0] in ORDER_NULLS:
            sql += f" {ORDER_NULLS[modifiers.pop(0)]}"
        if modifiers:
            raise RequestError(400, "PGRST100", f'"failed to parse order ({raw})"')
        terms.append(sql)
    return " order by " + ", ".join(terms)


def build_read(
    table: Table,
    params: Sequence[tuple[str, str]],
    select: str | None,
    limit: int | None,
    order: str | None = None,
) -> Statement:
    stmt = Statement("")
    where = where_clause(stmt, table, _filters(params))
    order_sql = order_clause(table, order)
    limit_sql = f" limit {limit}" if limit is not None else ""
    source = f"(select * from {table.sql_name} where {where}{order_sql}{limit_sql})"
    stmt.sql = json_result(stmt, source, table, select)
    return stmt


def payload_columns(table: Table, body: Any, columns_param: str | None) -> list[str]:
    rows = body if isinstance(body, list) else [body]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise RequestError(400, "PGRST102", "All object keys must match")
    if columns_param:
        names = [c.strip().strip('"') for c in columns_param.split(",")]
    else:
        names = sorted({k for r in rows for k in r})
    return [table.column(n) for n in names]


def build_insert(
    table: Table,
    body: Any,
    *,
    prefer: Mapping[str, str],
    on_conflict: str | None,
    columns_param: str | None,
    select: str | None,
) -> Statement:
    """INSERT … SELECT FROM json_populate_recordset, like PostgREST, with its ON CONFLICT forms."""
    stmt = Statement("")
    columns = payload_columns(table, body, columns_param)
    column_list = ", ".join(ident(c) for c in columns)
    payload = stmt.param(json.dumps(body if isinstance(body, list) else [body]))
    sql = (
        f"insert into {table.sql_name} ({column_list})"
        f" select {column_list} from json_populate_recordset(null::{table.sql_name},"
        f" {payload}::json)"
    )
    resolution = prefer.get("resolution")
    if resolution in ("ignore-duplicates", "merge-duplicates"):
        targets = (
            [table.column(c.strip()) for c in on_conflict.split(",")]
            if on_conflict
            else list(table.primary_key)
        )
        conflict = ", ".join(ident(c) for c in targets)
        if resolution == "ignore-duplicates":
            sql += f" on conflict ({conflict}) do nothing"
        else:
            updates = ", ".join(f"{ident(c)} = excluded.{ident(c)}" for c in columns)
            sql += f" on conflict ({conflict}) do update set {updates}"
    stmt.sql = f"with _postgrest_w as ({sql} returning *) " + json_result(
        stmt, "_postgrest_w", table, select
    )
    return stmt


def build_update(
    table: Table, body: Any, params: Sequence[tuple[str, str]], select: str | None
) -> Statement:
    if not isinstance(body, dict):
        raise RequestError(400, "PGRST102", "Update body must be a JSON object")
    stmt = Statement("")
    columns = [table.column(c) for c in body]
    payload = stmt.param(json.dumps(body))
    assignments = ", ".join(f"{ident(c)} = _p.{ident(c)}" for c in columns)
    where = where_clause(stmt, table, _filters(params), alias="_target")
    sql = (
        f"update {table.sql_name} _target set {assignments}"
        f" from (select * from json_populate_record(null::{table.sql_name}, {payload}::json)) _p"
        f" where {where} returning _target.*"
    )
    stmt.sql = f"with _postgrest_w as ({sql}) " + json_result(stmt, "_postgrest_w", table, select)
    return stmt


def build_delete(table: Table, params: Sequence[tuple[str, str]], select: str | None) -> Statement:
    stmt = Statement("")
    where = where_clause(stmt, table, _filters(params))
    sql = f"delete from {table.sql_name} where {where} returning *"
    stmt.sql = f"with _postgrest_w as ({sql}) " + json_result(stmt, "_postgrest_w", table, select)
    return stmt


def _filters(params: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k.strip('"'), v) for k, v in params if k not in RESERVED_PARAMS]


# PostgREST's SQLSTATE → HTTP status table (the rows that can occur here).
def http_status(sqlstate: str, *, anonymous: bool) -> int:
    if sqlstate == "42501":
        return 401 if anonymous else 403
    exact = {"23503": 409, "23505": 409, "25006": 405, "P0001": 400, "42883": 404, "42P01": 404}
    if sqlstate in exact:
        return exact[sqlstate]
    by_class = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500,
        "39": 500, "3B": 500, "40": 500, "53": 503, "54": 413, "55": 500, "57": 500, "58": 500,
        "F0": 500, "HV": 500, "P0": 500, "XX": 500,
    }  # fmt: skip
    return by_class.get(sqlstate[:2], 400)
