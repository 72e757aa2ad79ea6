"""The PostgREST stand-in server: aiohttp on 127.0.0.1 (port 0) in front of a real Postgres.

Like Supabase's gateway + PostgREST: `/rest/v1/<table>` (and `POST /rest/v1/rpc/<function>`,
named arguments in a JSON object) answers only with an `apikey` header;
the `Authorization: Bearer <JWT>` (HS256, signed with the stand-in's secret) picks the role,
and each request runs in one transaction after
`set_config('role', <role>, true)` and `set_config('request.jwt.claims', <claims>, true)`,
so row-level security and grants apply exactly as in production. No JWT → `anon`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import jwt
from aiohttp import web

from sandbox.postgrest.query import (
    RequestError,
    Statement,
    Table,
    build_delete,
    build_insert,
    build_read,
    build_update,
    http_status,
    parse_limit,
    parse_prefer,
)
from sandbox.serving import LoopbackServer

API_ROLES = frozenset({"anon", "authenticated", "service_role"})
EXPOSED_SCHEMAS = ("public",)

_CATALOG = """
select a.attname::text, format_type(a.atttypid, a.atttypmod),
       coalesce(a.attnum = any(i.indkey), false)
  from pg_attribute a
  left join pg_index i on i.indrelid = a.attrelid and i.indisprimary
 where a.attrelid = to_regclass(quote_ident($1) || '.' || quote_ident($2))
   and a.attnum > 0 and not a.attisdropped
 order by a.attnum
"""


# The functions of one name in an exposed schema: argument names and types, and what they return.
_FUNCTIONS = """
select coalesce(p.proargnames[1:p.pronargs], array[]::text[]),
       array(select format_type(t, null) from unnest(p.proargtypes) t),
       p.pronargdefaults, p.proretset
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where n.nspname = $1 and p.proname = $2 and p.prokind = 'f'
"""


def make_jwt(secret: str, role: str, sub: str | None = None, **claims: Any) -> str:
    """A Supabase-style API JWT: `role` claim, and `sub` for a signed-in user."""
    payload: dict[str, Any] = {"role": role, "iss": "powabot-standin", **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, secret, algorithm="HS256")


@dataclass(frozen=True)
class RecordedRequest:
    """What the stand-in saw of one request (never the key itself)."""

    method: str
    table: str
    query: tuple[tuple[str, str], ...]
    prefer: str | None
    accept_profile: str | None
    content_profile: str | None
    role: str
    body: Any
    status: int


@dataclass
class Fault:
    method: str
    table: str
    status: int
    remaining: int
    body: dict[str, Any] | None = None


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)


def _error(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


class PostgrestStandin(LoopbackServer):
    """Start with `async with PostgrestStandin(dsn, secret) as rest:`; `rest.url` is the
    project URL to give supabase-py (the stand-in serves `<url>/rest/v1/...`)."""

    def __init__(self, dsn: str, jwt_secret: str) -> None:
        self._dsn = dsn
        self._secret = jwt_secret
        self._state = _State()
        self._pool: asyncpg.Pool | None = None
        self.url = ""

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._state.requests)

    def inject_fault(
        self,
        method: str,
        table: str,
        status: int,
        *,
        times: int = 1,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `times` `method` requests on `table` with `status` (PostgREST JSON)."""
        self._state.faults.append(Fault(method.upper(), table, status, times, body))

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=10)
        app = web.Application()
        app.router.add_route("*", "/rest/v1/{table}", self._handle)
        app.router.add_route("*", "/rest/v1/rpc/{function}", self._handle)
        port = await self.serve(app, shutdown_timeout=0.5)
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.close_server()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- request handling -------------------------------------------------------------------

    def _claims(self, request: web.Request) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        if not auth:
            return {"role": "anon"}
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise RequestError(401, "PGRST301", "Expected a Bearer token")
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            raise RequestError(401, "PGRST301", f"JWSError ({type(exc).__name__})") from exc
        if claims.get("role") not in API_ROLES:
            raise RequestError(401, "PGRST301", "JWT role is not an API role")
        return claims

    def _take_fault(self, method: str, table: str) -> Fault | None:
        for fault in self._state.faults:
            if fault.method == method and fault.table == table and fault.remaining > 0:
                fault.remaining -= 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.Response:
        function = request.match_info.get("function")
        # Calls are recorded (and faults matched) as table "rpc/<function>".
        table_name = f"rpc/{function}" if function else request.match_info["table"]
        body: Any = None
        role = "?"
        try:
            if not (request.headers.get("apikey") or request.headers.get("Authorization")):
                # Supabase's gateway, before PostgREST: shape {"message": ...}.
                return self._record(
                    request,
                    table_name,
                    role,
                    None,
                    _error(401, {"message": "No API key found in request"}),
                )
            claims = self._claims(request)
            role = str(claims["role"])
            if request.can_read_body:
                try:
                    body = json.loads(await request.read())
                except ValueError as exc:
                    raise RequestError(400, "PGRST102", "Empty or invalid json") from exc
            fault = self._take_fault(request.method, table_name)
            if fault is not None:
                fault_body = fault.body or {
                    "code": "XX000",
                    "message": "injected fault",
                    "details": None,
                    "hint": None,
                }
                return self._record(
                    request, table_name, role, body, _error(fault.status, fault_body)
                )
            response = await self._execute(request, table_name, claims, body)
        except RequestError as exc:
            response = _error(exc.status, exc.body)
        except asyncpg.PostgresError as exc:
            sqlstate = getattr(exc, "sqlstate", None) or "XX000"
            response = _error(
                http_status(sqlstate, anonymous=role == "anon"),
                {
                    "code": sqlstate,
                    "message": getattr(exc, "message", str(exc)),
                    "details": getattr(exc, "detail", None),
                    "hint": getattr(exc, "hint", None),
                },
            )
        return self._record(request, table_name, role, body, response)

    def _record(
        self, request: web.Request, table: str, role: str, body: Any, response: web.Response
    ) -> web.Response:
        self._state.requests.append(
            RecordedRequest(
                method=request.method,
                table=table,
                query=tuple(request.query.items()),
                prefer=request.headers.get("Prefer"),
                accept_profile=request.headers.get("Accept-Profile"),
                content_profile=request.headers.get("Content-Profile"),
                role=role,
                body=body,
                status=response.status,
            )
        )
        return response

    async def _execute(
        self, request: web.Request, table_name: str, claims: dict[str, Any], body: Any
    ) -> web.Response:
        method = request.method
        profile_header = "Accept-Profile" if method in ("GET", "HEAD") else "Content-Profile"
        schema = request.headers.get(profile_header, "public")
        if schema not in EXPOSED_SCHEMAS:
            raise RequestError(
                406,
                "PGRST106",
                f"The schema must be one of the following: {', '.join(EXPOSED_SCHEMAS)}",
            )
        params = list(request.query.items())
        query = request.query
        prefer = parse_prefer(request.headers.getall("Prefer", []))
        select = query.get("select")
        assert self._pool is not None
        if table_name.startswith("rpc/"):
            if method != "POST":
                raise RequestError(405, "PGRST117", f"Unsupported HTTP method: {method}")
            async with self._pool.acquire() as conn, conn.transaction():
                stmt = await self._call(conn, schema, table_name[len("rpc/") :], body)
                result = await self._run_as(conn, claims, stmt)
            return web.Response(text=result, status=200, content_type="application/json")
        async with self._pool.acquire() as conn, conn.transaction():
            table = await self._table(conn, schema, table_name)
            if method == "GET":
                stmt = build_read(
                    table, params, select, parse_limit(query.get("limit")), query.get("order")
                )
            elif method == "POST":
                stmt = build_insert(
                    table,
                    body,
                    prefer=prefer,
                    on_conflict=query.get("on_conflict"),
                    columns_param=query.get("columns"),
                    select=select,
                )
            elif method == "PATCH":
                stmt = build_update(table, body, params, select)
            elif method == "DELETE":
                stmt = build_delete(table, params, select)
            else:
                raise RequestError(405, "PGRST117", f"Unsupported HTTP method: {method}")
            result = await self._run_as(conn, claims, stmt)
        return self._respond(method, prefer, result)

    async def _call(self, conn: asyncpg.Connection, schema: str, name: str, body: Any) -> Statement:
        """`select` of function `name` with the body's named arguments, as PostgREST answers:
        a set as a JSON array of rows, anything else as its JSON value."""
        args = body if isinstance(body, dict) else {}
        for names, types, defaults, returns_set in await conn.fetch(_FUNCTIONS, schema, name):
            required = set(names[: len(names) - defaults])
            if not required <= set(args) or not set(args) <= set(names):
                continue
            values: list[Any] = []
            named: list[str] = []
            for arg, value in args.items():
                sql_type = types[names.index(arg)]
                if value is not None and not isinstance(value, str):
                    value = json.dumps(value)  # numbers, booleans, arrays, objects: JSON text
                values.append(value)
                named.append(f'"{arg}" => ${len(values)}::text::{sql_type}')
            call = f'"{schema}"."{name}"({", ".join(named)})'
            if returns_set:
                sql = f"select coalesce(json_agg(r), '[]')::text from {call} r"
            else:
                sql = f"select coalesce(to_json({call})::text, 'null')"
            return Statement(sql, values)
        raise RequestError(
            404,
            "PGRST202",
            f"Could not find the function {schema}.{name}({', '.join(sorted(args))})"
            " in the schema cache",
        )

    async def _table(self, conn: asyncpg.Connection, schema: str, name: str) -> Table:
        rows = await conn.fetch(_CATALOG, schema, name)
        if not rows:
            raise RequestError(
                404, "PGRST205", f"Could not find the table '{schema}.{name}' in the schema cache"
            )
        return Table(
            schema=schema,
            name=name,
            columns={r[0]: r[1] for r in rows},
            primary_key=tuple(r[0] for r in rows if r[2]),
        )

    async def _run_as(
        self, conn: asyncpg.Connection, claims: dict[str, Any], stmt: Statement
    ) -> str:
        await conn.execute(
            "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
            claims["role"],
            json.dumps(claims),
        )
        return str(await conn.fetchval(stmt.sql, *stmt.args))

    @staticmethod
    def _respond(method: str, prefer: dict[str, str], result: str) -> web.Response:
        headers: dict[str, str] = {}
        applied = [f"{k}={prefer[k]}" for k in ("resolution", "missing") if k in prefer]
        if applied:
            headers["Preference-Applied"] = ",".join(applied)
        if method == "GET":
            count = len(json.loads(result))
            headers["Content-Range"] = f"0-{count - 1}/*" if count else "*/*"
            return web.Response(
                text=result, status=200, content_type="application/json", headers=headers
            )
        headers["Content-Range"] = "*/*"
        wants_body = prefer.get("return") == "representation"
        if method == "POST":
            if wants_body:
                return web.Response(
                    text=result, status=201, content_type="application/json", headers=headers
                )
            return web.Response(status=201, headers=headers)
        if wants_body:
            return web.Response(
                text=result, status=200, content_type="application/json", headers=headers
            )
        return web.Response(status=204, headers=headers)
