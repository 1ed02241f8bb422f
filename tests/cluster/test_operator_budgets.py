"""Budgets in the AgentRuntime's status, read by the operator from a real Redis the runtimes count in.

The test counts turns the way a runtime does (``omnia.budgets.Budgets.spend``
on a ``RedisCounter``); the operator process, under deploy/rbac's ClusterRole
and polling every second, shows the totals in ``status.budgets``, posts one
Warning at 80% and one at 100%, and keeps the status through an outage of
the store.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omnia.api.v1alpha1 import parse_manifest  # noqa: E402
from omnia.budgets import Budgets  # noqa: E402
from omnia.budgets.redis import RedisCounter  # noqa: E402
from omnia.rendering import budget_config  # noqa: E402
from omnia.testing import servers  # noqa: E402
from tests.cluster.test_operator import mock_agent, mock_provider, prompt_pack, secret  # noqa: E402
from tests.operator import harness  # noqa: E402
from tests.operator.harness import condition, get, wait_for  # noqa: E402

pytestmark = pytest.mark.cluster

BUDGET = {"daily": {"tokens": 1000}, "shared": {"name": "team-llm", "monthly": {"tokens": 1_000_000}}}


@pytest.fixture(scope="module")
def crds(control_plane):
    harness.install_crds(control_plane)


@pytest.fixture
def redis():
    """A Redis of the test's own: it is paused in the middle."""
    server = servers.start_for_pytest(servers.RedisServer)
    yield server
    server.resume()
    server.close()


@pytest.fixture
def operator(control_plane, crds, namespace, tmp_path):
    kubeconfig = harness.operator_kubeconfig(control_plane, home=namespace, namespaces=[namespace])
    process = harness.OperatorProcess(kubeconfig=kubeconfig, namespaces=[namespace],
                                      log_file=tmp_path / "operator.log", extra_args=["--budget-interval=1"])
    process.start()
    yield process
    process.stop()
    print(f"--- operator log ({process.log_file}) ---\n{process.log_tail(150)}")


def spend(url: str, namespace: str, agent: dict, tokens: int) -> None:
    """Count a turn of ``tokens`` as the agent's runtime would, in its own and its shared budget."""

    async def count() -> None:
        model = parse_manifest({**agent, "metadata": {**agent["metadata"], "namespace": namespace}})
        counter = RedisCounter.from_url(url)
        try:
            await Budgets(budget_config(model.spec.budget), namespace=namespace, agent=model.metadata.name,
                          counter=counter).spend(tokens=tokens, cost_usd=0.0)
        finally:
            await counter.aclose()

    asyncio.run(count())


def budgets(plane, namespace: str) -> dict[tuple[str, str], dict]:
    status = (get(plane, "agentruntime/metered", namespace) or {}).get("status") or {}
    return {(entry["scope"], entry["period"]): entry for entry in status.get("budgets") or []}


def warnings(plane, namespace: str) -> list[str]:
    items = harness.kubectl_json(plane, "get", "events", f"--namespace={namespace}")["items"]
    return sorted(e["reason"] for e in items
                  if e["involvedObject"]["name"] == "metered" and e["reason"].startswith("Budget"))


def reads(operator, result: str) -> float:
    return operator.metrics()[("omnia_operator_budget_reads_total", frozenset({("result", result)}))]


def test_spending_shows_in_status_with_one_warning_per_threshold_and_survives_an_outage(
    control_plane, namespace, operator, redis
):
    agent = mock_agent("metered", session={"type": "redis", "secretRef": {"name": "store", "key": "url"}},
                       budget=BUDGET)
    harness.apply(control_plane, [secret("store", url=redis.url), mock_provider(), prompt_pack(), agent],
                  namespace=namespace)
    explain = lambda: (get(control_plane, "agentruntime/metered", namespace) or {}).get("status")  # noqa: E731

    shown = wait_for(lambda: budgets(control_plane, namespace), timeout=60, what="status.budgets", explain=explain)
    assert set(shown) == {("agent", "day"), ("shared", "month")}
    assert shown[("agent", "day")]["percentUsed"] == 0
    assert shown[("shared", "month")]["name"] == "team-llm"
    assert condition(get(control_plane, "agentruntime/metered", namespace), "BudgetExceeded")["status"] == "False"

    spend(redis.url, namespace, agent, 850)
    wait_for(lambda: budgets(control_plane, namespace)[("agent", "day")]["percentUsed"] == 85, timeout=30,
             what="85% in status", explain=explain)
    wait_for(lambda: warnings(control_plane, namespace) == ["BudgetNearlySpent"], timeout=30,
             what="the BudgetNearlySpent Event", explain=lambda: warnings(control_plane, namespace))
    spend(redis.url, namespace, agent, 100)
    wait_for(lambda: budgets(control_plane, namespace)[("agent", "day")]["tokens"] == 950, timeout=30,
             what="950 tokens in status", explain=explain)

    spend(redis.url, namespace, agent, 100)
    day = wait_for(lambda: (entry := budgets(control_plane, namespace)[("agent", "day")])["percentUsed"] == 105
                   and entry, timeout=30, what="105% in status", explain=explain)
    assert (day["tokens"], day["tokensLimit"]) == (1050, 1000)
    assert day["resetsAt"].endswith("T00:00:00Z")
    assert budgets(control_plane, namespace)[("shared", "month")]["tokens"] == 1050
    agent_now = get(control_plane, "agentruntime/metered", namespace)
    assert condition(agent_now, "BudgetExceeded")["status"] == "True"
    assert agent_now["status"]["budgetPercentUsed"] == 105
    table = control_plane.kubectl("get", "agentruntime", "metered", f"--namespace={namespace}", check=True).stdout
    header, row = table.splitlines()[:2]
    assert row.split()[header.split().index("BUDGET")] == "105"
    wait_for(lambda: "BudgetExceeded" in warnings(control_plane, namespace), timeout=30,
             what="the BudgetExceeded Event")

    # Many more polls find nothing new: no Event is repeated.
    polled = reads(operator, "ok")
    wait_for(lambda: reads(operator, "ok") >= polled + 5, timeout=30, what="five more readings")
    assert warnings(control_plane, namespace) == ["BudgetExceeded", "BudgetNearlySpent"]

    # The store stops answering: the status stays, the operator logs it once and keeps running.
    before = get(control_plane, "agentruntime/metered", namespace)["status"]["budgets"]
    redis.pause()
    failed = reads(operator, "unavailable")
    wait_for(lambda: reads(operator, "unavailable") >= failed + 3, timeout=60, what="three failed readings")
    assert operator.healthy()
    assert get(control_plane, "agentruntime/metered", namespace)["status"]["budgets"] == before
    log = operator.log_file.read_text(errors="replace")
    assert log.count("cannot read the budget counters") == 1
    assert redis.url not in log and "Traceback" not in log

    redis.resume()
    spend(redis.url, namespace, agent, 50)
    wait_for(lambda: budgets(control_plane, namespace)[("agent", "day")]["tokens"] == 1100, timeout=60,
             what="the totals after the store came back", explain=explain)
    assert "answer again" in operator.log_file.read_text(errors="replace")
    assert warnings(control_plane, namespace) == ["BudgetExceeded", "BudgetNearlySpent"]
