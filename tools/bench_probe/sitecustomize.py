"""Loaded only into the services `make bench` starts (it puts this folder on their PYTHONPATH).

PostgreSQL here has no pg_stat_statements, the services count no SQL, HTTP requests or Kafka offset
commits of their own, faststream commits offsets inside its own code, and the embedded broker describes a
group's members without their partitions: these counters count them (and records fetched per partition) at
the client libraries instead, without touching the services. They are exposed on each service's
/metrics through the default registry. Each counts one call in Python, small next to what it counts."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _install() -> None:
    from prometheus_client import Counter

    sql = Counter(
        "handshake_bench_sql_round_trips_total",
        "PostgreSQL round trips by kind: execute (bind/execute of a prepared statement), "
        "prepare (parse/describe of a statement not yet prepared on that connection), "
        "simple (BEGIN, COMMIT, ROLLBACK and other argument-less statements)",
        ["kind"],
    )
    commits = Counter("handshake_bench_kafka_offset_commits_total", "Kafka consumer offset commits")
    http = Counter("handshake_bench_http_requests_total", "HTTP requests served (not /metrics)")

    import asyncpg.connection
    import asyncpg.prepared_stmt

    connection = asyncpg.connection.Connection
    original_get_statement = connection._get_statement
    original_do_execute = connection._do_execute
    original_execute = connection.execute

    async def _get_statement(  # type: ignore[no-untyped-def]
        self,
        query,
        timeout,
        *,
        use_cache=True,
        ignore_custom_codec=False,
        record_class=None,
        **kw,
    ):
        key = (query, record_class or self._protocol.get_record_class(), ignore_custom_codec)
        if not use_cache or self._stmt_cache.get(key) is None:
            sql.labels("prepare").inc()
        return await original_get_statement(
            self,
            query,
            timeout,
            use_cache=use_cache,
            ignore_custom_codec=ignore_custom_codec,
            record_class=record_class,
            **kw,
        )

    async def _do_execute(self, *args, **kw):  # type: ignore[no-untyped-def]
        sql.labels("execute").inc()
        return await original_do_execute(self, *args, **kw)

    async def execute(self, query, *args, **kw):  # type: ignore[no-untyped-def]
        if not args:  # with arguments it goes through _do_execute, counted there
            sql.labels("simple").inc()
        return await original_execute(self, query, *args, **kw)

    connection._get_statement = _get_statement
    connection._do_execute = _do_execute
    connection.execute = execute

    prepared = asyncpg.prepared_stmt.PreparedStatement
    original_prepared_execute = prepared._PreparedStatement__do_execute

    async def prepared_execute(self, executor):  # type: ignore[no-untyped-def]
        sql.labels("execute").inc()
        return await original_prepared_execute(self, executor)

    prepared._PreparedStatement__do_execute = prepared_execute

    import aiokafka

    original_commit = aiokafka.AIOKafkaConsumer.commit

    async def commit(self, *args, **kw):  # type: ignore[no-untyped-def]
        commits.inc()
        return await original_commit(self, *args, **kw)

    aiokafka.AIOKafkaConsumer.commit = commit

    # which partitions a replica's consumers were given: the broker splits them among a group's members
    fetched = Counter(
        "handshake_bench_kafka_records_fetched_total",
        "Kafka records fetched, by consumer group, topic and partition",
        ["group", "topic", "partition"],
    )
    original_getmany = aiokafka.AIOKafkaConsumer.getmany

    async def getmany(self, *partitions, **kw):  # type: ignore[no-untyped-def]
        batches = await original_getmany(self, *partitions, **kw)
        for tp, records in batches.items():
            fetched.labels(self._group_id or "", tp.topic, str(tp.partition)).inc(len(records))
        return batches

    aiokafka.AIOKafkaConsumer.getmany = getmany

    import fastapi

    original_call = fastapi.FastAPI.__call__

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and scope.get("path") != "/metrics":
            http.inc()
        await original_call(self, scope, receive, send)

    fastapi.FastAPI.__call__ = __call__  # type: ignore[method-assign]


def _chain() -> None:
    """Run the sitecustomize this one shadows, if the interpreter has one."""
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.machinery.PathFinder.find_spec(
        "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != here]
    )
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_chain()
try:
    _install()
except Exception as exc:
    print(f"bench probe not installed, its counts will be missing: {exc!r}", file=sys.stderr)
