"""The durable feedback store: one SQLite file.

Why SQLite (docs/feedback.md): a vote is acknowledged only after its transaction committed with
`journal_mode=WAL` and `synchronous=FULL`, i.e. after fsync of the WAL: a kill -9 of this service
(the only process that owns the store; there is no separate database process to lose) or of the
machine's power after the 200 never loses it. Idempotency is a UNIQUE constraint on the vote's
idempotency key, so a client retry returns the first vote instead of counting twice. For
scale-out (several replicas) point FEEDBACK_DB_PATH at a shared volume with one writer, or swap
this class for Postgres (same SQL).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS arena (
    id TEXT PRIMARY KEY, created_at REAL NOT NULL, mode TEXT NOT NULL, family TEXT NOT NULL,
    prompt TEXT NOT NULL, model_a TEXT NOT NULL, model_b TEXT NOT NULL,
    answer_a TEXT NOT NULL, answer_b TEXT NOT NULL, key_id TEXT NOT NULL, user_id TEXT
);
CREATE TABLE IF NOT EXISTS votes (
    id TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
    kind TEXT NOT NULL, vote TEXT NOT NULL, comment TEXT, arena_id TEXT, response_id TEXT,
    mode TEXT, family TEXT, prompt TEXT, answer_a TEXT, answer_b TEXT, model_a TEXT, model_b TEXT,
    key_id TEXT NOT NULL, user_id TEXT
);
CREATE INDEX IF NOT EXISTS votes_mode ON votes(mode, created_at);
"""

VOTE_COLUMNS = ("id", "idempotency_key", "created_at", "kind", "vote", "comment", "arena_id", "response_id",
                "mode", "family", "prompt", "answer_a", "answer_b", "model_a", "model_b", "key_id", "user_id")
ARENA_COLUMNS = ("id", "created_at", "mode", "family", "prompt", "model_a", "model_b", "answer_a", "answer_b",
                 "key_id", "user_id")


class FeedbackStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def ping(self) -> None:
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    # --- arena --------------------------------------------------------------------------------
    def add_arena(self, *, mode: str, family: str, prompt: str, model_a: str, model_b: str, answer_a: str,
                  answer_b: str, key_id: str, user_id: str | None) -> dict:
        row = {"id": f"arena-{uuid.uuid4().hex[:20]}", "created_at": time.time(), "mode": mode, "family": family,
               "prompt": prompt, "model_a": model_a, "model_b": model_b, "answer_a": answer_a, "answer_b": answer_b,
               "key_id": key_id, "user_id": user_id}
        with self._lock:
            self._db.execute(f"INSERT INTO arena ({','.join(ARENA_COLUMNS)}) VALUES "
                             f"({','.join('?' * len(ARENA_COLUMNS))})", [row[c] for c in ARENA_COLUMNS])
        return row

    def arena(self, arena_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM arena WHERE id = ?", (arena_id,)).fetchone()
        return dict(row) if row else None

    # --- votes --------------------------------------------------------------------------------
    def add_vote(self, vote: dict) -> tuple[dict, bool]:
        """Insert unless the idempotency key exists. Returns (the stored vote, created?).
        Returns only after the commit is on disk (synchronous=FULL)."""
        row = {c: vote.get(c) for c in VOTE_COLUMNS}
        row["id"] = row["id"] or f"vote-{uuid.uuid4().hex[:20]}"
        row["created_at"] = row["created_at"] or time.time()
        with self._lock:
            cursor = self._db.execute(
                f"INSERT INTO votes ({','.join(VOTE_COLUMNS)}) VALUES ({','.join('?' * len(VOTE_COLUMNS))}) "
                "ON CONFLICT(idempotency_key) DO NOTHING", [row[c] for c in VOTE_COLUMNS])
            created = cursor.rowcount == 1
            stored = self._db.execute("SELECT * FROM votes WHERE idempotency_key = ?",
                                      (row["idempotency_key"],)).fetchone()
        return dict(stored), created

    def votes(self, *, mode: str | None = None, family: str | None = None, kind: str | None = None,
              since: float | None = None, until: float | None = None, with_comment: bool = False,
              limit: int | None = None, newest_first: bool = False) -> list[dict]:
        sql, args = "SELECT * FROM votes WHERE 1=1", []
        for column, value in (("mode", mode), ("family", family), ("kind", kind)):
            if value:
                sql += f" AND {column} = ?"
                args.append(value)
        if since is not None:
            sql += " AND created_at >= ?"
            args.append(since)
        if until is not None:
            sql += " AND created_at < ?"
            args.append(until)
        if with_comment:
            sql += " AND comment IS NOT NULL AND comment != ''"
        sql += " ORDER BY created_at DESC" if newest_first else " ORDER BY created_at"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]


def dump_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
