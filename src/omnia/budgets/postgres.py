"""The PostgreSQL counter: one row per scope and period in ``omnia_budget_usage``.

An addition is one ``INSERT … ON CONFLICT DO UPDATE`` over all the turn's
rows: PostgreSQL locks each row it inserts or updates until the statement
commits, so concurrent additions from any number of replicas queue on the
row and none is lost, and the statement commits all rows or none. Rows are
kept (a few per scope and month), so the table doubles as a spending report::

    SELECT scope, period, tokens, cost_usd FROM omnia_budget_usage WHERE period_kind = 'month';

The table is created by the session store's migrations (version 2), and the
counter reaches the database the way the session store does (a lazy pool of
its own, every error ``StoreUnavailable``, nothing retried): it uses a
``PostgresStore`` for its connections.
"""

from __future__ import annotations

from collections.abc import Sequence

from omnia.budgets.base import CounterKey, Spent
from omnia.sessions.postgres import PostgresStore


class PostgresCounter:
    def __init__(self, *, dsn: str, timeout_seconds: float = 5.0, max_connections: int = 2) -> None:
        self._db = PostgresStore(
            dsn=dsn, namespace="budgets", timeout_seconds=timeout_seconds, max_connections=max_connections
        )

    async def spent(self, keys: Sequence[CounterKey]) -> list[Spent]:
        if not keys:
            return []
        async with self._db.connection("budget spent") as conn:
            rows = await conn.fetch(
                """
                SELECT k.i, u.tokens, u.cost_usd
                FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(scope, kind, period, i)
                LEFT JOIN omnia_budget_usage u
                  ON u.scope = k.scope AND u.period_kind = k.kind AND u.period = k.period
                ORDER BY k.i
                """,
                *_columns(keys),
            )
        return [Spent(int(row["tokens"] or 0), float(row["cost_usd"] or 0.0)) for row in rows]

    async def add(self, keys: Sequence[CounterKey], *, tokens: int, cost_usd: float) -> list[Spent]:
        if not keys:
            return []
        async with self._db.connection("budget add") as conn:
            rows = await conn.fetch(
                """
                INSERT INTO omnia_budget_usage (scope, period_kind, period, tokens, cost_usd)
                SELECT scope, kind, period, $4, $5
                FROM unnest($1::text[], $2::text[], $3::text[]) AS k(scope, kind, period)
                ON CONFLICT (scope, period_kind, period) DO UPDATE SET
                    tokens = omnia_budget_usage.tokens + excluded.tokens,
                    cost_usd = omnia_budget_usage.cost_usd + excluded.cost_usd,
                    updated_at = now()
                RETURNING scope, period_kind, period, tokens, cost_usd
                """,
                *_columns(keys), int(tokens), float(cost_usd),
            )
        # RETURNING promises no order: match the rows to the keys.
        totals = {
            (row["scope"], row["period_kind"], row["period"]): Spent(
                int(row["tokens"]), float(row["cost_usd"])
            )
            for row in rows
        }
        return [totals[(key.scope, key.period.kind, key.period.label)] for key in keys]

    async def ping(self) -> None:
        await self._db.ping()

    async def aclose(self) -> None:
        await self._db.aclose()


def _columns(keys: Sequence[CounterKey]) -> tuple[list[str], list[str], list[str]]:
    return (
        [key.scope for key in keys],
        [key.period.kind for key in keys],
        [key.period.label for key in keys],
    )
