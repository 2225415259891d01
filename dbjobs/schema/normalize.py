"""Spellings of the same schema fact, made equal.

Each engine reports a type, a default or a check in its own words (`character varying(50)`,
`int(11)`, `'a'::text`, `(price > (0)::numeric)`), and SQLAlchemy models compile to yet
another spelling. Reflection and models both pass through these functions, so a database
created from the models snapshots exactly as the models do: no false positives.
"""

from __future__ import annotations

import re
from functools import lru_cache

_QUOTED = re.compile(r"('(?:[^']|'')*')")

PG_TYPE_ALIASES = {
    "int": "integer", "int4": "integer", "serial": "integer", "serial4": "integer",
    "int8": "bigint", "bigserial": "bigint", "serial8": "bigint",
    "int2": "smallint", "smallserial": "smallint",
    "bool": "boolean",
    "float8": "double precision", "float": "double precision", "float(53)": "double precision",
    "float4": "real", "float(24)": "real",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
    "time without time zone": "time", "time with time zone": "timetz",
    "character varying": "varchar", "bpchar": "char", "character": "char",
    "decimal": "numeric",
}
MYSQL_TYPE_ALIASES = {
    "integer": "int", "bool": "boolean", "tinyint(1)": "boolean",
    "numeric": "decimal", "double precision": "double", "real": "double",
    "character varying": "varchar", "character": "char",
}
_PG_PARAM_TYPES = re.compile(r"^(character varying|character|decimal|timestamp|time)"
                             r"(\(\s*\d+(?:\s*,\s*\d+)?\s*\))(.*)$")
_MYSQL_INT_WIDTH = re.compile(r"^(tinyint|smallint|mediumint|int|integer|bigint)\(\d+\)")
_PG_CAST = re.compile(r"::(?:\"[^\"]+\"|[a-z_][a-z0-9_]*)(?:\s+(?:varying|precision|with(?:out)? time zone))*(?:\[\])?"
                      r"(?:\(\d+(?:,\d+)?\))?", re.IGNORECASE)
_PAREN_LITERAL = re.compile(r"\((-?\d+(?:\.\d+)?|'(?:[^']|'')*')\)")
_NUMERIC_TYPES = ("int", "integer", "bigint", "smallint", "tinyint", "mediumint", "decimal", "numeric", "float",
                  "double", "real", "boolean", "bool", "bit", "serial", "money")
_QUOTED_IDENTIFIER = re.compile(r"[`\"]([A-Za-z_][A-Za-z0-9_]*)[`\"]")
_QUOTED_NUMBER = re.compile(r"^'(-?\d+(?:\.\d+)?)'$")
_NUMBER = re.compile(r"^(-?\d+)(\.\d+)$")


def outside_quotes(text: str, transform) -> str:  # type: ignore[no-untyped-def]
    """Apply `transform` to the parts of `text` that are not single-quoted string literals."""
    parts = _QUOTED.split(text)
    return "".join(part if i % 2 else transform(part) for i, part in enumerate(parts))


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def strip_outer_parens(text: str) -> str:
    """`((a > 0))` → `a > 0`, only when the outer parentheses wrap the whole expression."""
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, char in enumerate(text):
            depth += char == "("
            depth -= char == ")"
            if depth == 0 and i < len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


@lru_cache(maxsize=4096)
def normalize_type(engine: str, raw: str) -> str:
    """One spelling per type and engine, e.g. PostgreSQL `character varying(50)` → `varchar(50)`."""
    text = outside_quotes(_squash(raw), str.lower)
    text = re.sub(r"\s*,\s*", ",", re.sub(r"\(\s+|\s+\)", lambda m: m.group(0).strip(), text))
    if engine == "postgresql":
        param = _PG_PARAM_TYPES.match(text)
        if param:
            base, args, rest = param.groups()
            base = PG_TYPE_ALIASES.get(base, base)
            rest = rest.strip()
            if base in {"timestamp", "time"}:
                return base + args + ("tz" if rest == "with time zone" else "")
            return base + args + (" " + rest if rest else "")
        return PG_TYPE_ALIASES.get(text, text)
    if engine == "mysql":
        if text.startswith("tinyint(1)"):
            return "boolean" + text[len("tinyint(1)"):]
        text = _MYSQL_INT_WIDTH.sub(lambda m: m.group(1), text)
        head, _, tail = text.partition("(")
        first, space, attributes = head.partition(" ")  # `integer unsigned`: the attributes stay
        head = MYSQL_TYPE_ALIASES.get(head, MYSQL_TYPE_ALIASES.get(first, first) + space + attributes)
        return head + ("(" + tail if tail else "")
    return text


def _unwrap_literals(text: str) -> str:
    """`(0)` → `0` and `('a')` → `'a'` where the parentheses only group, never where they are a call's or a
    list's (`count(1)`, `current_timestamp(6)`, `IN ('a')` keep theirs)."""
    def unwrap(match: re.Match[str]) -> str:
        before = text[:match.start()].rstrip()
        grouping = not before or not (before[-1].isalnum() or before[-1] in "_$`\"")
        return match.group(1) if grouping else match.group(0)
    return _PAREN_LITERAL.sub(unwrap, text)


def is_numeric_type(type_: str) -> bool:
    """Whether a (normalized) column type holds numbers: only their defaults are compared as numbers."""
    return type_.split("(")[0].split()[0] in _NUMERIC_TYPES if type_ else False


@lru_cache(maxsize=4096)
def normalize_default(engine: str, raw: str | None, numeric: bool = True) -> str | None:
    """A server default as comparable SQL text: casts, outer parens and case of keywords removed. A number's
    spelling (`1.00` = `1`) is ignored only for a `numeric` column: `'1.00'` and `'1'` are different strings."""
    if raw is None:
        return None
    text = _squash(raw)
    if engine == "postgresql":
        text = outside_quotes(text, lambda part: _PG_CAST.sub("", part))
    text = strip_outer_parens(_unwrap_literals(text))
    if text.upper() == "NULL" or not text:
        return None
    text = outside_quotes(text, str.lower)
    text = re.sub(r"^(current_timestamp|current_date|current_time|localtimestamp)\(\)$", r"\1", text)
    if text == "now()":
        text = "current_timestamp"
    if engine == "mysql" and text in {"true", "false"}:
        text = "1" if text == "true" else "0"
    quoted_number = _QUOTED_NUMBER.match(text)
    text = quoted_number.group(1) if quoted_number else text
    if not numeric:
        return text
    return _NUMBER.sub(lambda m: m.group(1) if set(m.group(2)) <= {"0", "."} else m.group(0).rstrip("0"), text)


@lru_cache(maxsize=4096)
def normalize_expression(engine: str, raw: str) -> str:
    """A check or index expression as valid SQL without engine decoration (casts, quoting, outer parens)."""
    text = _squash(raw)
    if text.upper().startswith("CHECK"):
        text = text[5:].strip()
    if engine == "postgresql":
        text = outside_quotes(text, lambda part: _PG_CAST.sub("", part))
    quote = _quoter(engine)
    text = outside_quotes(text, lambda part: _QUOTED_IDENTIFIER.sub(
        lambda m: m.group(1) if quote(m.group(1)) == m.group(1) else m.group(0), part))
    return strip_outer_parens(_unwrap_literals(text))


@lru_cache(maxsize=4)
def _quoter(engine: str):  # type: ignore[no-untyped-def]
    """The engine's identifier quoting: an identifier it would not quote can lose its quotes."""
    from dbjobs.schema.models import dialect_for

    return dialect_for(engine).identifier_preparer.quote


@lru_cache(maxsize=4096)
def expression_key(text: str) -> str:
    """A comparison key that ignores parentheses, spacing, identifier quotes and case (engines re-parenthesize
    checks and quote identifiers their own way)."""
    return outside_quotes(text, lambda part: re.sub(r"[\s()`\"]", "", part.lower()))


@lru_cache(maxsize=4096)
def normalize_action(engine: str, raw: str | None) -> str | None:
    """ON DELETE / ON UPDATE: the engine's default (NO ACTION, and RESTRICT on MySQL) becomes None."""
    if raw is None:
        return None
    action = _squash(raw).upper()
    defaults = {"NO ACTION", "RESTRICT"} if engine == "mysql" else {"NO ACTION"}
    return None if action in defaults or not action else action
