"""Fixtures shared by the Supabase Storage tests: the test server, and a small SQLite app to back up."""

from __future__ import annotations

import sqlite3

import pytest

from tests.support.fake_supabase import FakeSupabase


@pytest.fixture
def fake(tmp_path):
    """The Supabase Storage test server, with one private bucket `backups`, for one test."""
    with FakeSupabase(tmp_path / "supabase") as server:
        yield server


@pytest.fixture
def app_db(tmp_path):
    """An SQLite database of 250 rows: what the backup jobs of these tests take."""
    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {i}") for i in range(250)])
    conn.close()
    return path
