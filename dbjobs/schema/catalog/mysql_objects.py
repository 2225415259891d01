"""Read every object of a MySQL/MariaDB database as the server itself writes it.

Tables come from `SHOW CREATE TABLE`: each column and key is kept as the server's own line, so a
migration can `MODIFY` a column with its full definition (collation, `ON UPDATE`, generated
expression, invisible, comment) and `ADD` a key exactly (FULLTEXT, SPATIAL, prefix lengths,
IGNORED). Views, triggers, routines, events and sequences come from their `SHOW CREATE`, without
the `DEFINER` (the applier owns what it creates) and, for views, without the database's own name
(MariaDB's `SHOW CREATE VIEW` already leaves it out), so the same schema reads the same in every
database and a migration never reaches back into the database it was generated from.
The `AUTO_INCREMENT=` counter is data, not schema: it is left out.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, text

from dbjobs.schema.builder import LEDGER_TABLE
from dbjobs.schema.sqlparse import (
    balanced,
    code_find,
    code_identifiers,
    drop_definer,
    identifier_end,
    split_top_level,
    unquote,
)

Objects = dict[str, dict[str, Any]]
_TABLES = "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
_COLUMNS = """
SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, COLLATION_NAME IS NOT NULL FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = DATABASE()
"""
_TRIGGERS = """
SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER
FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()
"""
_ROUTINES = "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()"
_EVENTS = "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()"
WHAT = {"VIEW": "VIEW", "SEQUENCE": "SEQUENCE"}
PARALLEL_FROM, SHOW_CONNECTIONS = 200, 3
KEY_STARTS = {"PRIMARY": "primary", "UNIQUE": "index", "KEY": "index", "INDEX": "index", "FULLTEXT": "index",
              "SPATIAL": "index", "CONSTRAINT": "constraint"}


def qi(name: str) -> str:
    """A MySQL identifier in backquotes."""
    return "`" + name.replace("`", "``") + "`"


def read_objects(conn: Connection) -> Objects:
    """Every table, view, trigger, routine, event and sequence of the connection's database, by id."""
    objects: Objects = {}
    kinds = {name: kind for name, kind in conn.execute(text(_TABLES)) if name != LEDGER_TABLE}
    columns = list(conn.execute(text(_COLUMNS)))
    textual = {(t, c) for t, c, _, has_collation in columns if has_collation}
    types = {(t, c): ty for t, c, ty, _ in columns}
    shown = _show_all(conn, [(WHAT.get(kind, "TABLE"), name) for name, kind in sorted(kinds.items())
                             if kind != "TEMPORARY"])
    for (what, name), sql in shown.items():
        if what == "VIEW":
            objects[f"view:{name}"] = {"kind": "view", "name": name, "definition": drop_definer(sql)}
        elif what == "SEQUENCE":
            objects[f"sequence:{name}"] = {"kind": "sequence", "name": name, "definition": sql}
        else:
            objects[f"table:{name}"] = parse_table(name, sql, textual, types)
    views = {o["name"].lower() for o in objects.values() if o["kind"] == "view"}
    for obj in objects.values():
        if obj["kind"] == "view":
            body = obj["definition"][code_find(obj["definition"], "AS"):]
            obj["reads"] = sorted((code_identifiers(body) & views) - {obj["name"].lower()})
    for name, table, timing, event, order in conn.execute(text(_TRIGGERS)):
        objects[f"trigger:{name}"] = {"kind": "trigger", "name": name, "table": table, "timing": timing,
                                      "event": event, "order": int(order),
                                      "definition": drop_definer(_show(conn, "TRIGGER", name, 2))}
    for name, routine in conn.execute(text(_ROUTINES)):
        kind = routine.lower()
        objects[f"{kind}:{name}"] = {"kind": kind, "name": name,
                                     "definition": drop_definer(_show(conn, routine, name, 2))}
    for (name,) in conn.execute(text(_EVENTS)):
        objects[f"event:{name}"] = {"kind": "event", "name": name,
                                    "definition": drop_definer(_show(conn, "EVENT", name, 3))}
    return objects


def _show_all(conn: Connection, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """`SHOW CREATE` of each (kind, name), on `conn` and on a few more connections of its engine at once
    (one round trip per table is what a big schema waits for)."""
    if len(wanted) < PARALLEL_FROM or SHOW_CONNECTIONS < 2:
        return {(what, name): _show(conn, what, name, 1) for what, name in wanted}
    chunks = [wanted[i::SHOW_CONNECTIONS] for i in range(SHOW_CONNECTIONS)]

    def on_own_connection(chunk: list[tuple[str, str]]) -> list[str]:
        with conn.engine.connect() as other:
            return [_show(other, what, name, 1) for what, name in chunk]

    with ThreadPoolExecutor(max_workers=SHOW_CONNECTIONS - 1) as pool:
        others = [pool.submit(on_own_connection, chunk) for chunk in chunks[1:]]
        texts = [[_show(conn, what, name, 1) for what, name in chunks[0]]] + [f.result() for f in others]
    shown = {key: sql for chunk, found in zip(chunks, texts, strict=True)
             for key, sql in zip(chunk, found, strict=True)}
    return {key: shown[key] for key in wanted}


def _show(conn: Connection, what: str, name: str, column: int) -> str:
    """One `SHOW CREATE` column, through the driver's own cursor (a thousand of them add up)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"SHOW CREATE {what} {qi(name)}")
        return str(cursor.fetchone()[column])
    finally:
        cursor.close()


def parse_table(name: str, sql: str, textual: set[tuple[str, str]], types: dict[tuple[str, str], str]
                ) -> dict[str, Any]:
    """A table from its `SHOW CREATE TABLE`: columns and keys as the server's lines, options, partitioning.

    An element that is neither a column nor a key the planner knows is kept as `unknown`: the
    table is then not altered but reported."""
    elements, tail = _elements(sql)
    columns, keys, unknown = [], [], []
    for element in elements:
        if element.startswith("`"):
            column = unquote(element[:identifier_end(element, 0)])
            columns.append({"name": column, "definition": element, "textual": (name, column) in textual,
                            "type": types.get((name, column), "")})
            continue
        key = parse_key(element)
        (keys if key else unknown).append(key or element)
    cut = code_find(tail, "PARTITION")
    options_text, partition = (tail, None) if cut < 0 else (tail[:cut], tail[cut:].strip())
    options = {}
    tokens = split_top_level(options_text.replace("\n", " "), " ")
    for i, token in enumerate(tokens):
        if token.upper() == "DEFAULT" or token.upper().startswith("AUTO_INCREMENT="):
            continue
        key = token.split("=", 1)[0].upper()
        options[key] = ("DEFAULT " if i and tokens[i - 1].upper() == "DEFAULT" else "") + token
    return {"kind": "table", "name": name, "columns": columns, "keys": keys, "options": options,
            "partition": partition, "unknown": unknown}


def _elements(sql: str) -> tuple[list[str], str]:
    """The column and key lines of a `SHOW CREATE TABLE`, and the text after them.

    The server writes one element per line, indented by two spaces (newlines inside literals are
    escaped), which is read directly; any other text is split at its top-level commas."""
    lines = sql.split("\n")
    end = next((i for i, line in enumerate(lines) if i and line.startswith(")")), 0)
    if end and lines[0].endswith("(") and all(line.startswith("  ") for line in lines[1:end]):
        return [line[2:].removesuffix(",") for line in lines[1:end]], "\n".join(lines[end:])[1:]
    open_at = sql.index("(")
    close = balanced(sql, open_at)
    return split_top_level(sql[open_at + 1:close]), sql[close + 1:]


def parse_key(element: str) -> dict[str, Any] | None:
    """`PRIMARY KEY (...)`, `[UNIQUE|FULLTEXT|SPATIAL] KEY `n` (...)`, `CONSTRAINT `n` FOREIGN KEY|CHECK ...`."""
    first = element.split(None, 1)[0].upper()
    kind = KEY_STARTS.get(first)
    if kind == "primary":
        return {"id": "PRIMARY", "type": "primary", "name": None, "definition": element, "shape": element}
    if kind is None:
        return None
    at = element.find("`")
    if at < 0:
        return None
    end = identifier_end(element, at)
    key_name = unquote(element[at:end])
    shape = element[:at] + element[end:]
    if kind == "index":
        return {"id": f"index:{key_name}", "type": "index", "name": key_name, "definition": element, "shape": shape}
    rest = element[end:].lstrip().upper()
    what = "fk" if rest.startswith("FOREIGN") else "check" if rest.startswith("CHECK") else None
    if what is None:
        return None
    return {"id": f"{what}:{key_name}", "type": what, "name": key_name, "definition": element, "shape": shape}
