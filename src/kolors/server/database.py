"""The server's tables (jobs, uploads) and its engine: SQLite in WAL mode by default, or PostgreSQL.

SQLite transactions start with ``BEGIN IMMEDIATE`` (the write lock is taken at once, so a claim's read and update
cannot interleave with another process's); PostgreSQL claims rows with ``FOR UPDATE SKIP LOCKED``
(see :mod:`kolors.server.jobqueue`).
"""

from __future__ import annotations

from sqlalchemy import (Boolean, Column, Engine, Float, Index, Integer, MetaData, String, Table, Text, create_engine,
                        event)

metadata = MetaData()

jobs = Table(
    "jobs", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # submission order
    Column("id", String(40), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # queued, running, succeeded, failed, cancelled
    Column("api", String(16), nullable=False),  # native, openai, a1111
    Column("request", Text, nullable=False),  # the request's JSON as the client sent it (references kept)
    Column("batch_key", String(64), nullable=False),  # jobs with equal keys may be denoised together
    Column("num_images", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),  # claims so far (a crashed run is retried once)
    Column("worker", String(200)),  # host:pid:index of the worker that holds it
    Column("lease_until", Float),  # the worker renews this while it runs the job
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("step", Integer),
    Column("steps", Integer),
    Column("eta_s", Float),
    Column("created", Float, nullable=False),
    Column("started", Float),
    Column("finished", Float),
    Column("error", Text),
    Column("results", Text),  # JSON list: per image {"seed", "parameters"}
    Column("expired", Boolean, nullable=False, default=False),  # result files removed by retention
    Index("ix_jobs_status_seq", "status", "seq"),
)

uploads = Table(
    "uploads", metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("file", String(255), nullable=False),  # file name inside the uploads folder
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("created", Float, nullable=False),
)


def connect(url: str) -> Engine:
    """An engine for ``url`` with the tables created (SQLite: WAL, synchronous FULL, immediate transactions)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False,
                                                  "isolation_level": None})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # an accepted job is on disk when the answer leaves
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    metadata.create_all(engine)
    return engine
