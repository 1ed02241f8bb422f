"""The operator reading the budget counters the runtimes write, and the status and Events that follow."""

from __future__ import annotations

import asyncio
import datetime
import logging

import pytest
from prometheus_client import CollectorRegistry

from omnia import budgets
from omnia.budgets import Budgets, MemoryCounter
from omnia.budgets.base import StoreUnavailable
from omnia.operator import metering, metrics, reconciling
from omnia.operator.references import Ref
from omnia.operator.sessionstores import DefaultStore
from omnia.rendering import budget_config
from tests.operator import manifests
from tests.operator.fakes import MemoryApi, MemoryCache, with_status
from tests.operator.test_reconciling import context, ready_world
from tests.sessions.conftest import postgres_server, redis_server  # noqa: F401  (fixtures)

NOW = datetime.datetime(2026, 12, 2, 15, 0, tzinfo=datetime.timezone.utc)
NS = manifests.NAMESPACE
AGENT = Ref("AgentRuntime", NS, "agent")
URL = "redis://budgets.example:6379/0"
OWN_STORE = {"type": "redis", "secretRef": {"name": "store", "key": "url"}}


class Counters:
    """``budgets.connect`` for the tests: one memory counter per URL, and which were made and closed."""

    def __init__(self) -> None:
        self.by_url: dict[str, MemoryCounter] = {}
        self.made: list[tuple[str, str]] = []
        self.closed = 0
        self.down = False

    def connect(self, store_type: str, url: str):
        self.made.append((store_type, url))
        counters = self

        class Counter(MemoryCounter):
            async def spent(self, keys):
                if counters.down:
                    raise StoreUnavailable("redis budget spent: no answer within 2s")
                return await super().spent(keys)

            async def aclose(self):
                counters.closed += 1

        return self.by_url.setdefault(url, Counter())

    async def spend(self, url: str, *, budget: dict, tokens: int, cost_usd: float = 0.0, agent: str = "agent"):
        """Count a turn as the runtime does: ``Budgets.spend`` on the store's counter."""
        runtime = Budgets(budget_config(manifests.model(manifests.agent(agent, budget=budget)).spec.budget),
                          namespace=NS, agent=agent, counter=self.by_url[url], clock=lambda: NOW)
        await runtime.spend(tokens=tokens, cost_usd=cost_usd)


def meter(cache: MemoryCache, api: MemoryApi, counters: Counters | None, *, queued: list | None = None,
          stores=None, registry: CollectorRegistry | None = None) -> metering.Meter:
    """A meter on ``counters`` (None: the real ``budgets.connect``)."""
    return metering.Meter(
        cache=cache, api=api, session_stores=stores or {}, enqueue=(queued if queued is not None else []).extend,
        measured=metrics.Metrics(registry or CollectorRegistry()),
        connect=counters.connect if counters is not None else budgets.connect, clock=lambda: NOW,
    )


def world(*, budget: dict | None = None, session: dict | None = None, url: str = URL):
    cache, api, _ = ready_world(session=session or OWN_STORE, budget=budget or {"daily": {"tokens": 1000}})
    cache.put_secret(NS, "store", "url", version="1")
    api.secrets[(NS, "store")] = {"url": url}
    return cache, api


async def test_a_budgeted_agents_totals_are_read_from_the_store_its_secret_names():
    cache, api = world()
    counters, queued = Counters(), []
    reader = meter(cache, api, counters, queued=queued)
    await reader.read([AGENT])
    assert counters.made == [("redis", URL)]
    assert queued == [AGENT]
    assert [(key.name, spent.tokens) for key, spent in reader.reading(AGENT).items()] == [
        ("agent:team-a/agent:day:2026-12-02", 0), ("agent:team-a/agent:month:2026-12", 0)]
    await counters.spend(URL, budget={"daily": {"tokens": 1000}}, tokens=250)
    await reader.read([AGENT])
    assert queued == [AGENT, AGENT]
    assert [spent.tokens for spent in reader.reading(AGENT).values()] == [250, 250]


async def test_a_reading_that_changed_nothing_queues_nothing():
    cache, api = world()
    counters, queued = Counters(), []
    reader = meter(cache, api, counters, queued=queued)
    await reader.read([AGENT])
    await reader.read([AGENT])
    assert queued == [AGENT]
    assert counters.made == [("redis", URL)]


@pytest.mark.parametrize("spec", [
    pytest.param({"session": {"type": "memory"}, "budget": {"daily": {"tokens": 10}}}, id="memory-store"),
    pytest.param({"session": OWN_STORE, "budget": {}}, id="no-limits"),
    pytest.param({"session": OWN_STORE}, id="no-budget"),
])
async def test_agents_without_a_shared_counter_or_limits_are_not_read(spec):
    cache, api, _ = ready_world(**spec)
    cache.put_secret(NS, "store", "url")
    counters, queued = Counters(), []
    await meter(cache, api, counters, queued=queued).read_all()
    assert counters.made == [] and queued == []


async def test_an_agent_on_the_default_store_is_read_from_the_installations_secret():
    cache, api, _ = ready_world(session={"type": "redis"}, budget={"monthly": {"costUSD": 5}})
    store = DefaultStore("redis", "omnia-system", "omnia-session-redis", "url")
    cache.put_secret("omnia-system", "omnia-session-redis", "url")
    api.secrets[("omnia-system", "omnia-session-redis")] = {"url": "redis://default.example:6379/1"}
    counters = Counters()
    await meter(cache, api, counters, stores={"redis": store}).read_all()
    assert counters.made == [("redis", "redis://default.example:6379/1")]


async def test_agents_on_one_store_share_one_counter_rebuilt_when_the_secret_changes():
    cache, api = world()
    cache.put(manifests.agent("other", session=OWN_STORE, budget={"daily": {"tokens": 5}}))
    counters = Counters()
    reader = meter(cache, api, counters)
    await reader.read_all()
    assert counters.made == [("redis", URL)]
    cache.put_secret(NS, "store", "url", version="2")
    api.secrets[(NS, "store")] = {"url": "redis://rotated.example:6379/0"}
    await reader.read_all()
    assert counters.made == [("redis", URL), ("redis", "redis://rotated.example:6379/0")]
    assert counters.closed == 1


async def test_an_unreachable_store_keeps_the_last_reading_and_is_logged_once(caplog):
    cache, api = world()
    counters, registry = Counters(), CollectorRegistry()
    reader = meter(cache, api, counters, registry=registry)
    await counters_ready(reader, counters)
    await counters.spend(URL, budget={"daily": {"tokens": 1000}}, tokens=300)
    await reader.read([AGENT])
    counters.down = True
    with caplog.at_level(logging.INFO, logger="omnia.operator.metering"):
        for _ in range(3):
            await reader.read([AGENT])
        counters.down = False
        await reader.read([AGENT])
    assert [spent.tokens for spent in reader.reading(AGENT).values()] == [300, 300]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no answer within 2s" in warnings[0].getMessage()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        f"the budget counters in the redis store of Secret {NS}/store key 'url' answer again"]
    assert registry.get_sample_value("omnia_operator_budget_reads_total", {"result": "unavailable"}) == 3
    assert registry.get_sample_value("omnia_operator_budget_reads_total", {"result": "ok"}) == 3


async def counters_ready(reader: metering.Meter, counters: Counters) -> None:
    """The first read builds the store's counter, which the test then adds to as a runtime would."""
    await reader.read([AGENT])
    assert counters.by_url


@pytest.mark.parametrize(("url", "secret_keys"), [
    pytest.param("http://user:hunter2@redis.example", ("url",), id="not-a-redis-url"),
    pytest.param(URL, ("other",), id="key-missing"),
])
async def test_a_store_url_that_cannot_be_had_is_logged_without_the_url(caplog, url, secret_keys):
    cache, api = world(url=url)
    cache.put_secret(NS, "store", *secret_keys)
    counters = Counters()
    with caplog.at_level(logging.WARNING, logger="omnia.operator.metering"):
        await meter(cache, api, counters).read([AGENT])
    assert counters.made == []
    (record,) = caplog.records
    assert "hunter2" not in record.getMessage() and "cannot read the budget counters" in record.getMessage()


async def test_soon_reads_an_agent_without_waiting_for_the_next_round():
    cache, api = world()
    counters = Counters()
    read = asyncio.Queue()
    reader = metering.Meter(cache=cache, api=api, session_stores={}, enqueue=lambda refs: read.put_nowait(list(refs)),
                            measured=metrics.Metrics(CollectorRegistry()), connect=counters.connect,
                            clock=lambda: NOW, interval=3600)
    task = asyncio.create_task(reader.run())
    try:
        assert await read.get() == [AGENT]  # the first round, at start
        await counters.spend(URL, budget={"daily": {"tokens": 1000}}, tokens=10)
        reader.soon(AGENT)
        assert await read.get() == [AGENT]
        assert [spent.tokens for spent in reader.reading(AGENT).values()] == [10, 10]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reader.aclose()


# --- through the reconciler -------------------------------------------------------


async def settle(cache: MemoryCache, api: MemoryApi, ctx: reconciling.Context, reader: metering.Meter,
                 queued: list) -> dict:
    """Reconcile, let the meter read, reconcile what it queued, as the operator's loop would; the status."""
    for _ in range(3):
        await reconciling.reconcile(AGENT, ctx)
        written = api.statuses.get(("AgentRuntime", NS, "agent"))
        parsed = cache.agent(NS, "agent")
        body = with_status({"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime",
                            "metadata": {"name": "agent", "namespace": NS, "uid": parsed.uid, "generation": 1,
                                         "resourceVersion": "1"},
                            "spec": parsed.resource.spec.model_dump(mode="json", exclude_none=True)}, written)
        cache.put(body)
        queued.clear()
        await reader.read([AGENT])
        if not queued:
            return written
    raise AssertionError("the meter kept queueing the agent")


async def test_the_status_shows_spending_and_each_threshold_posts_one_warning():
    budget = {"daily": {"tokens": 1000}, "monthly": {"tokens": 100000}}
    cache, api = world(budget=budget)
    counters, queued = Counters(), []
    reader = meter(cache, api, counters, queued=queued)
    ctx = context(cache, api, now=NOW)
    ctx.meter = reader

    status = await settle(cache, api, ctx, reader, queued)
    assert [(b["period"], b["tokens"], b["percentUsed"]) for b in status["budgets"]] == [("day", 0, 0), ("month", 0, 0)]
    assert status["budgetPercentUsed"] == 0
    assert {c["type"]: c["reason"] for c in status["conditions"]}["BudgetExceeded"] == "WithinBudget"

    for tokens, expected in ((500, []), (350, ["BudgetNearlySpent"]), (100, []), (60, ["BudgetExceeded"]),
                             (40, [])):
        api.events.clear()
        await counters.spend(URL, budget=budget, tokens=tokens)
        status = await settle(cache, api, ctx, reader, queued)
        assert [e["reason"] for e in api.events] == expected, tokens
        assert all(e["type"] == "Warning" for e in api.events)
    assert status["budgets"][0] == {"scope": "agent", "name": "agent", "period": "day", "tokens": 1050,
                                    "costUSD": 0.0, "tokensLimit": 1000, "percentUsed": 105,
                                    "resetsAt": "2026-12-03T00:00:00Z"}
    assert status["budgetPercentUsed"] == 105
    condition = next(c for c in status["conditions"] if c["type"] == "BudgetExceeded")
    assert (condition["status"], condition["reason"]) == ("True", "BudgetSpent")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] != "BudgetSpent"  # a spent budget refuses turns; the pods stay as they are


async def test_a_new_operator_announces_nothing_the_status_already_shows():
    """Events are derived from the status on the object, so a restart does not repeat them."""
    budget = {"daily": {"tokens": 1000}}
    cache, api = world(budget=budget)
    counters, queued = Counters(), []
    first = meter(cache, api, counters, queued=queued)
    ctx = context(cache, api, now=NOW)
    ctx.meter = first
    await counters_ready(first, counters)
    await counters.spend(URL, budget=budget, tokens=900)
    await settle(cache, api, ctx, first, queued)
    assert [e["reason"] for e in api.events if e["reason"].startswith("Budget")] == ["BudgetNearlySpent"]

    api.events.clear()
    restarted = meter(cache, api, counters, queued=queued)
    ctx = context(cache, api, now=NOW)
    ctx.meter = restarted
    status = await settle(cache, api, ctx, restarted, queued)
    assert api.events == []
    assert status["budgets"][0]["percentUsed"] == 90


async def test_an_unreachable_store_leaves_the_budgets_the_status_shows():
    budget = {"daily": {"tokens": 1000}}
    cache, api = world(budget=budget)
    counters, queued = Counters(), []
    ctx = context(cache, api, now=NOW)
    ctx.meter = meter(cache, api, counters, queued=queued)
    await counters_ready(ctx.meter, counters)
    await counters.spend(URL, budget=budget, tokens=400)
    before = await settle(cache, api, ctx, ctx.meter, queued)

    counters.down = True
    ctx.meter = meter(cache, api, counters, queued=queued)  # a restarted operator that cannot reach the store
    after = await settle(cache, api, ctx, ctx.meter, queued)
    assert after["budgets"] == before["budgets"]


async def test_removing_the_budget_removes_its_status_and_condition():
    budget = {"daily": {"tokens": 1000}}
    cache, api = world(budget=budget)
    counters, queued = Counters(), []
    ctx = context(cache, api, now=NOW)
    ctx.meter = meter(cache, api, counters, queued=queued)
    await settle(cache, api, ctx, ctx.meter, queued)
    parsed = cache.agent(NS, "agent")
    cache.put(with_status(manifests.agent(session=OWN_STORE),
                          parsed.status.model_dump(mode="json", exclude_none=True)))
    status = await settle(cache, api, ctx, ctx.meter, queued)
    assert "budgets" not in status and "budgetPercentUsed" not in status
    assert "BudgetExceeded" not in {c["type"] for c in status["conditions"]}


# --- on real stores ----------------------------------------------------------------


@pytest.mark.services
@pytest.mark.parametrize("store_type", ["redis", "postgres"])
async def test_the_operator_reads_what_a_runtime_counted_in_a_real_store(request, store_type):
    """The operator's reading goes through ``budgets.connect``, the same counters the runtimes add to."""
    server = request.getfixturevalue(f"{store_type}_server")
    budget = {"daily": {"tokens": 1000}, "shared": {"name": f"team-{store_type}", "monthly": {"costUSD": 2}}}
    session = {"type": store_type, "secretRef": {"name": "store", "key": "url"}}
    cache, api = world(budget=budget, session=session, url=server.url)
    reader = meter(cache, api, None)
    runtime_counter = budgets.connect(store_type, server.url)
    try:
        name = f"agent-{request.node.callspec.id}"
        cache.put(manifests.agent(name, session=session, budget=budget))
        model = manifests.model(manifests.agent(name, budget=budget))
        runtime = Budgets(budget_config(model.spec.budget), namespace=NS, agent=name, counter=runtime_counter,
                          clock=lambda: NOW)
        await runtime.spend(tokens=700, cost_usd=1.5)
        ref = Ref("AgentRuntime", NS, name)
        await reader.read([ref])
        totals = {(key.scope, key.period.kind): (spent.tokens, spent.cost_usd)
                  for key, spent in reader.reading(ref).items()}
        assert totals == {(f"agent:{NS}/{name}", "day"): (700, 1.5), (f"agent:{NS}/{name}", "month"): (700, 1.5),
                          (f"shared:{NS}/team-{store_type}", "day"): (700, 1.5),
                          (f"shared:{NS}/team-{store_type}", "month"): (700, 1.5)}
    finally:
        await runtime_counter.aclose()
        await reader.aclose()
