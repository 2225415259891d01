"""The embedded default: a small SQLite database the quick start backs up when nothing is configured."""

from __future__ import annotations

import sqlite3

from dbjobs.dburl import DatabaseURL
from dbjobs.settings import Settings

SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE, created_at TEXT NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
                     total NUMERIC NOT NULL, placed_at TEXT NOT NULL);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE VIEW order_totals AS SELECT customer_id, SUM(total) AS total FROM orders GROUP BY customer_id;
"""


def ensure_sample(settings: Settings, db: DatabaseURL) -> bool:
    """Create the sample database with a few hundred rows if it is the default and missing."""
    if not (settings.sample_database and db.alias == "default") or db.sqlite_path.exists():
        return False
    with sqlite3.connect(db.sqlite_path) as conn:
        conn.executescript(SCHEMA)
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?, datetime('now', ?))",
                         [(i, f"Customer {i}", f"c{i}@example.com", f"-{i} days") for i in range(1, 101)])
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, datetime('now', ?))",
                         [(i, i % 100 + 1, round(i * 1.37, 2), f"-{i} hours") for i in range(1, 501)])
    conn.close()
    return True
