"""Small, quote-aware scanning of SQL text: balanced parentheses, top-level splits, statements.

Needed where the engine only hands back SQL (SQLite's `sqlite_master.sql`, MySQL's `SHOW CREATE`)
and to split migration files into statements without tripping over `;` inside string literals.
The text is cut once into runs of code, quoted text and comments; the scans look for their few
characters inside the code runs only.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from functools import lru_cache

_QUOTES = "'\"`"
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_SPECIAL = re.compile(r"['\"`$]|--")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
DELIMITER = "//"
_DELIMITER_LINE = "DELIMITER "
Segment = tuple[int, int, str]


@lru_cache(maxsize=512)
def _segments(sql: str) -> tuple[Segment, ...]:
    """(start, end, kind) runs of `sql`, kind `code`, `quote` (a literal or quoted identifier, quotes
    included; a PostgreSQL dollar-quoted body, where `;` and quotes are text) or `comment` (`--` to the
    end of the line)."""
    out: list[Segment] = []
    n, at, code_start = len(sql), 0, 0
    while (match := _SPECIAL.search(sql, at)) is not None:
        start, char = match.start(), sql[match.start()]
        if char in _QUOTES:
            end = _quote_end(sql, start)
        elif char == "$":
            dollar = _DOLLAR.match(sql, start)
            if not dollar or (start and (sql[start - 1].isalnum() or sql[start - 1] in "_$")):
                at = start + 1
                continue
            close = sql.find(dollar.group(0), dollar.end())
            end = n if close == -1 else close + len(dollar.group(0))
        else:
            newline = sql.find("\n", start)
            end = n if newline == -1 else newline
        if start > code_start:
            out.append((code_start, start, "code"))
        out.append((start, end, "comment" if char == "-" else "quote"))
        at = code_start = end
    if code_start < n:
        out.append((code_start, n, "code"))
    return tuple(out)


def _quote_end(sql: str, start: int) -> int:
    """The index after the quote closing the one at `start` (a doubled quote is part of the text)."""
    char, at = sql[start], start + 1
    while True:
        close = sql.find(char, at)
        if close == -1:
            return len(sql)
        if sql.startswith(char, close + 1):
            at = close + 2
            continue
        return close + 1


@lru_cache(maxsize=16)
def _chars(chars: str) -> re.Pattern[str]:
    return re.compile("[" + re.escape(chars) + "]")


def _code_chars(sql: str, chars: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """(index, char) of each of `chars` outside quotes and comments, from `start` on."""
    pattern = _chars(chars)
    for a, b, kind in _segments(sql):
        if kind == "code" and b > start:
            for match in pattern.finditer(sql, max(a, start), b):
                yield match.start(), match.group(0)


def _code_finds(sql: str, text: str) -> Iterator[int]:
    """Indexes where `text` starts outside quotes and comments."""
    for a, b, kind in _segments(sql):
        at = sql.find(text, a, b) if kind == "code" else -1
        while at != -1:
            yield at
            at = sql.find(text, at + 1, b)


def balanced(sql: str, open_at: int) -> int:
    """Index of the `)` closing the `(` at `open_at`; -1 if unbalanced."""
    depth = 0
    for i, char in _code_chars(sql, "()", open_at):
        depth += 1 if char == "(" else -1
        if depth == 0:
            return i
    return -1


def split_top_level(sql: str, sep: str = ",") -> list[str]:
    """Split on `sep` where it is outside quotes, comments and parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in _code_chars(sql, "()" + sep):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0:
            parts.append(sql[start:i])
            start = i + 1
    parts.append(sql[start:])
    return [p.strip() for p in parts if p.strip()]


def element_spans(sql: str) -> list[tuple[int, int]]:
    """(start, end) of each comma-separated element inside the first parenthesized list of `sql`, spaces
    around it left out (the columns and constraints of a CREATE TABLE body)."""
    spans, depth, start = [], 0, -1
    for i, char in _code_chars(sql, "(),"):
        if char == "(":
            depth += 1
            if depth == 1:
                start = i + 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                spans.append((start, i))
                break
        elif depth == 1:
            spans.append((start, i))
            start = i + 1
    return [(a + len(sql[a:b]) - len(sql[a:b].lstrip()), a + len(sql[a:b].rstrip())) for a, b in spans]


def split_statements(sql: str) -> list[str]:
    """The statements of a script, split on `;` outside quotes and comments, comment-only parts dropped.

    Between `DELIMITER //` and `DELIMITER ;` lines (the mysql client's convention) statements end with
    `//` instead, so a trigger or routine body with `;` inside stays one statement."""
    statements: list[str] = []
    for delimiter, part in _delimited_parts(sql):
        start = 0
        for i in _code_finds(part, delimiter):
            if i >= start:
                statements.append(part[start:i])
                start = i + len(delimiter)
        statements.append(part[start:])
    return [text for text in (strip_comments(s).strip() for s in statements) if text]


def _delimited_parts(sql: str) -> Iterator[tuple[str, str]]:
    """(delimiter, text) runs of a script cut at its `DELIMITER x` lines (lines that start in code)."""
    if _DELIMITER_LINE not in sql.upper():
        yield ";", sql
        return
    segments = _segments(sql)
    starts = [a for a, _, _ in segments]
    delimiter, start, line_start = ";", 0, 0
    while line_start < len(sql):
        end = sql.find("\n", line_start)
        end = len(sql) if end == -1 else end
        line = sql[line_start:end].strip()
        first = line_start + len(sql[line_start:end]) - len(sql[line_start:end].lstrip())
        in_code = first >= len(sql) or segments[bisect_right(starts, first) - 1][2] == "code"
        if in_code and line.upper().startswith(_DELIMITER_LINE) and line[10:].strip():
            yield delimiter, sql[start:line_start]
            delimiter, start = line[10:].strip(), end + 1
        line_start = end + 1
    yield delimiter, sql[start:]


def terminated(statement: str) -> str:
    """A statement as written into a script that `split_statements` reads back as that one statement."""
    if len(split_statements(statement)) <= 1 and not statement.rstrip().endswith(DELIMITER):
        segments = _segments(statement)
        ends_in_comment = bool(segments) and segments[-1][2] == "comment"
        return statement + ("\n;" if ends_in_comment else ";")
    return f"DELIMITER {DELIMITER}\n{statement}{DELIMITER}\nDELIMITER ;"


def code_find(sql: str, word: str, start: int = 0) -> int:
    """Index of the first occurrence of `word` (case-insensitive, as a whole word) outside quotes and
    comments at or after `start`; -1 if none."""
    upper, wanted, size = sql.upper(), word.upper(), len(word)
    if wanted not in upper[start:]:
        return -1
    for a, b, kind in _segments(sql):
        at = upper.find(wanted, max(a, start), b) if kind == "code" else -1
        while at != -1:
            before = sql[at - 1] if at else " "
            after = sql[at + size] if at + size < len(sql) else " "
            if not (before.isalnum() or before in "_$") and not (after.isalnum() or after in "_$"):
                return at
            at = upper.find(wanted, at + 1, b)
    return -1


def identifier_end(sql: str, at: int) -> int:
    """The end of the identifier starting at `at`: quoted (`"a b"`, `` `a` ``, `[a]`) or bare."""
    if at < len(sql) and sql[at] in _QUOTES + "[":
        close = "]" if sql[at] == "[" else sql[at]
        i = at + 1
        while i < len(sql):
            if sql[i] == close:
                if close != "]" and i + 1 < len(sql) and sql[i + 1] == close:
                    i += 2
                    continue
                return i + 1
            i += 1
        return len(sql)
    i = at
    while i < len(sql) and (sql[i].isalnum() or sql[i] in "_$" or ord(sql[i]) > 127):
        i += 1
    return i


def unquote(identifier: str) -> str:
    """A quoted identifier's name (doubled quotes undone); a bare identifier as it is."""
    if len(identifier) >= 2 and identifier[0] in _QUOTES + "[":
        close = "]" if identifier[0] == "[" else identifier[0]
        inner = identifier[1:-1]
        return inner if close == "]" else inner.replace(close * 2, close)
    return identifier


def drop_definer(sql: str) -> str:
    """A MySQL CREATE statement without its `DEFINER=user@host` clause (the applier becomes the definer)."""
    at = code_find(sql, "DEFINER")
    if at < 0 or not sql[at + 7:].lstrip().startswith("="):
        return sql
    i = at + 7
    while i < len(sql) and sql[i] in " =":
        i += 1
    while i < len(sql) and not sql[i].isspace():
        i = identifier_end(sql, i) if sql[i] in _QUOTES else i + 1
    return sql[:at] + sql[i:].lstrip()


def code_identifiers(sql: str) -> set[str]:
    """Every identifier the text names, quoted or bare, unquoted and lower-cased (a superset of the objects
    it refers to, used to order views after the views they read)."""
    names = set()
    for a, b, kind in _segments(sql):
        if kind == "code":
            names.update(m.group(0).lower() for m in _WORD.finditer(sql, a, b))
        elif kind == "quote" and sql[a] in "`\"":
            names.add(unquote(sql[a:b]).lower())
    return names


def without_comments(sql: str) -> str:
    """The SQL without `--` comments and surrounding space, quickly when it has none: what two CREATE texts
    are compared by, since a migration file's statements keep no comments."""
    return strip_comments(sql).strip() if "--" in sql else sql.strip()


def strip_comments(sql: str) -> str:
    """The SQL with its `--` comments removed."""
    return "".join(sql[a:b] for a, b, kind in _segments(sql) if kind != "comment")


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
