"""Small, quote-aware scanning of SQL text: balanced parentheses, top-level splits, statements.

Needed where the engine only hands back SQL (SQLite's `sqlite_master.sql`) and to split
migration files into statements without tripping over `;` inside string literals.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_QUOTES = "'\"`"
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _scan(sql: str) -> Iterator[tuple[int, str, str]]:
    """Yield (index, char, kind) with kind `code`, `quote` (inside a literal or identifier) or `comment`."""
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char in _QUOTES:
            end = i + 1
            while end < n:
                if sql[end] == char:
                    if end + 1 < n and sql[end + 1] == char:
                        end += 2
                        continue
                    break
                end += 1
            for j in range(i, min(end + 1, n)):
                yield j, sql[j], "quote"
            i = end + 1
        elif char == "$" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] in "_$")) and _DOLLAR.match(sql, i):
            tag = _DOLLAR.match(sql, i).group(0)  # type: ignore[union-attr]
            close = sql.find(tag, i + len(tag))
            end = n if close == -1 else close + len(tag)
            for j in range(i, end):  # a PostgreSQL dollar-quoted body: `;` and quotes inside are text
                yield j, sql[j], "quote"
            i = end
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            for j in range(i, end):
                yield j, sql[j], "comment"
            i = end
        else:
            yield i, char, "code"
            i += 1


def balanced(sql: str, open_at: int) -> int:
    """Index of the `)` closing the `(` at `open_at`; -1 if unbalanced."""
    depth = 0
    for i, char, kind in _scan(sql[open_at:]):
        if kind == "code" and char == "(":
            depth += 1
        elif kind == "code" and char == ")":
            depth -= 1
            if depth == 0:
                return open_at + i
    return -1


def split_top_level(sql: str, sep: str = ",") -> list[str]:
    """Split on `sep` where it is outside quotes, comments and parentheses."""
    parts, depth, start = [], 0, 0
    for i, char, kind in _scan(sql):
        if kind != "code":
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(sql[start:i])
            start = i + 1
    parts.append(sql[start:])
    return [p.strip() for p in parts if p.strip()]


def split_statements(sql: str) -> list[str]:
    """The statements of a script, split on `;` outside quotes and comments, comment-only parts dropped."""
    statements, start = [], 0
    for i, char, kind in _scan(sql):
        if kind == "code" and char == ";":
            statements.append(sql[start:i])
            start = i + 1
    statements.append(sql[start:])
    return [text for text in (strip_comments(s).strip() for s in statements) if text]


def strip_comments(sql: str) -> str:
    """The SQL with its `--` comments removed."""
    return "".join(char for _, char, kind in _scan(sql) if kind != "comment")


def find_clauses(sql: str, keyword: str) -> Iterator[tuple[str | None, str]]:
    """Yield (constraint name, parenthesized body) for each `[CONSTRAINT name] KEYWORD (...)` in a CREATE TABLE."""
    pattern = re.compile(rf"(?:CONSTRAINT\s+([`\"\[]?[\w$]+[`\"\]]?)\s+)?{keyword}\s*\(", re.IGNORECASE)
    pos = 0
    while True:
        match = pattern.search(sql, pos)
        if not match:
            return
        close = balanced(sql, match.end() - 1)
        if close < 0:
            return
        name = match.group(1).strip('`"[]') if match.group(1) else None
        yield name, sql[match.end():close]
        pos = close + 1
