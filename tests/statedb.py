"""Databases of an older ``state.db`` schema, made by hand, for the migration tests."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from cronmetrics.storage import database as database_mod
from cronmetrics.storage import schema as schema_mod
from cronmetrics.storage.interface import JobState


def old_database(path: Path, version: int) -> sqlite3.Connection:
    """A database as the schema of ``version`` made it (every migration up to it)."""
    db = sqlite3.connect(path)
    for step in range(1, version + 1):
        for statement in schema_mod.MIGRATIONS[step]:
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {version}")
    return db


def insert_state(db: sqlite3.Connection, state: JobState, results_upto: int | None = None) -> None:
    """A state row as the schema of version 1 had it (``results_upto``: from version 2)."""
    fields = ", ".join(database_mod.STATE_FIELDS)
    marks = ", ".join("?" * len(database_mod.STATE_FIELDS))
    values = dataclasses.astuple(state)
    if results_upto is not None:
        fields, marks, values = f"{fields}, results_upto", f"{marks}, ?", (*values, results_upto)
    db.execute(f"INSERT INTO states ({fields}) VALUES ({marks})", values)
