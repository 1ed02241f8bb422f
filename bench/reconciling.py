"""Operator benchmark: 200 AgentRuntimes on a real control plane, then one PromptPack edit.

Starts its own control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK from scripts/build-control-plane, as the cluster
tests do) and runs the operator as a process under its ServiceAccount,
cluster-wide. Measures:

- the time from ``kubectl apply`` of 200 AgentRuntimes until all 200
  Deployments exist, and until all 200 agents are Ready (pods Available);
- the operator's reconcile latency, p50 and p99 (one reconcile: read the
  caches, build, apply what changed, write status), and the time keys wait
  in its queue, from its liveness endpoint;
- the time from a PromptPack edit until every affected agent has rolled its
  pods onto the new version (Ready again, with the new version active).

Prints the figures and writes them, with the machine, to the "Operator"
section of bench/RESULTS.md. Every phase has a deadline, so a run is bounded
(about 10 minutes at worst on two cores).

Usage: python bench/reconciling.py [--agents N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "cluster"))

import controlplane

from tests.operator import harness

NAMESPACE = "bench"
PHASE_DEADLINE = 300.0
RESULTS = REPO / "bench" / "RESULTS.md"
HEADING = "## Operator (`python bench/reconciling.py`)"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = "unknown memory"
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f"{kib / 2**20:.1f} GiB"
    except (OSError, AttributeError):
        pass
    system = platform.system()
    try:
        system = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"`nproc` {os.cpu_count()} ({cpu}), {memory}, {system}, Python {platform.python_version()}; "
            f"load average {load:.1f} at the start")


def agents(count: int) -> list[dict]:
    return [{"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime",
             "metadata": {"name": f"agent-{index:03d}", "namespace": NAMESPACE},
             "spec": {"promptPackRef": {"name": "prompts"}, "providerRef": {"name": "mock"}}}
            for index in range(count)]


def pack(version: str, prompt: str) -> dict:
    return {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack",
            "metadata": {"name": "prompts", "namespace": NAMESPACE},
            "spec": {"version": version, "systemPrompt": prompt}}


class Watcher:
    """Counts objects by listing them as the admin (one request per kind per poll)."""

    def __init__(self, plane: controlplane.ControlPlane) -> None:
        self.client = plane.http_client(timeout=30)

    def items(self, path: str) -> list[dict]:
        return self.client.get(path).raise_for_status().json()["items"]

    def deployments(self) -> int:
        return len(self.items(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"))

    def ready_agents(self, version: str | None = None) -> int:
        count = 0
        for agent in self.items(f"/apis/omnia.altairalabs.ai/v1alpha1/namespaces/{NAMESPACE}/agentruntimes"):
            status = agent.get("status") or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
            current = status.get("observedGeneration") == agent["metadata"]["generation"]
            if ready and current and (version is None or status.get("activePromptVersions") == [version]):
                count += 1
        return count


def wait_until(what: str, check, *, total: int, started: float) -> float:
    """Seconds from ``started`` until ``check()`` reaches ``total``; polls once a second."""
    last = -1
    while True:
        value = check()
        elapsed = time.monotonic() - started
        if value != last:
            print(f"  {elapsed:6.1f}s  {what}: {value}/{total}", flush=True)
            last = value
        if value >= total:
            return elapsed
        if elapsed > PHASE_DEADLINE:
            raise SystemExit(f"{what}: only {value}/{total} after {PHASE_DEADLINE:.0f}s")
        time.sleep(1.0)


def run(count: int) -> dict:
    binaries = controlplane.Binaries.locate()
    missing = binaries.missing()
    if missing:
        raise SystemExit(f"the test control plane is not built ({', '.join(missing)}); run scripts/build-control-plane")
    workdir = Path(tempfile.mkdtemp(prefix="omnia-bench-operator-"))
    # Each agent runs one pod, two during its rollout (maxSurge): room for 2×count pods.
    nodes = max(3, (2 * count) // 100 + 1)
    with controlplane.ControlPlane(binaries=binaries, workdir=workdir, node_count=nodes) as plane:
        harness.install_crds(plane)
        plane.kubectl("create", "namespace", NAMESPACE, check=True)
        plane.kubectl("create", "namespace", "omnia-system", check=True)
        kubeconfig = harness.operator_kubeconfig(plane, home="omnia-system", namespaces=[], cluster_wide=True)
        operator = harness.OperatorProcess(kubeconfig=kubeconfig, namespaces=[], log_file=workdir / "operator.log")
        operator.start()
        watcher = Watcher(plane)
        try:
            harness.apply(plane, [{"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "Provider",
                                   "metadata": {"name": "mock", "namespace": NAMESPACE}, "spec": {"type": "mock"}},
                                  pack("1.0.0", "You are helpful.")], namespace=NAMESPACE)

            print(f"creating {count} AgentRuntimes ({nodes} KWOK nodes)", flush=True)
            started = time.monotonic()
            harness.apply(plane, agents(count), namespace=NAMESPACE)
            applied = time.monotonic() - started
            deployments = wait_until("Deployments", watcher.deployments, total=count, started=started)
            available = wait_until("agents Ready", watcher.ready_agents, total=count, started=started)

            time.sleep(11)  # kopf caches probe results for 10 seconds
            after_create = operator.probe()["reconciler"]

            print("editing the PromptPack (1.0.0 → 1.1.0, immediate)", flush=True)
            started = time.monotonic()
            harness.apply(plane, pack("1.1.0", "You are helpful and brief."), namespace=NAMESPACE)
            rolled = wait_until("agents Ready on 1.1.0", lambda: watcher.ready_agents("1.1.0"), total=count,
                                started=started)
            time.sleep(11)
            after_edit = operator.probe()["reconciler"]
        finally:
            operator.stop()
            watcher.client.close()
    return {
        "agents": count,
        "nodes": nodes,
        "apply_seconds": applied,
        "deployments_seconds": deployments,
        "available_seconds": available,
        "rolled_seconds": rolled,
        "after_create": after_create,
        "after_edit": after_edit,
    }


def report(figures: dict, machine_line: str) -> str:
    create, edit = figures["after_create"], figures["after_edit"]
    n = figures["agents"]
    return f"""{HEADING}

Machine: {machine_line}. Run on {datetime.date.today().isoformat()}.
The control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, KWOK with {figures['nodes']} fake nodes), the operator (one process, 4 reconcile
workers, under its ServiceAccount) and the benchmark share those cores.

| what | time |
|---|---:|
| `kubectl apply` of {n} AgentRuntimes (one List) | {figures['apply_seconds']:.1f} s |
| … until all {n} Deployments exist | {figures['deployments_seconds']:.1f} s |
| … until all {n} agents are Ready (every pod Available) | {figures['available_seconds']:.1f} s |
| PromptPack edit until all {n} agents have rolled onto the new version | {figures['rolled_seconds']:.1f} s |

Reconciles (one reconcile reads the caches, builds every object, applies what
changed and writes the status if it changed; figures from the operator's
liveness endpoint, over the last {min(10_000, edit['reconciles'])} reconciles):

| phase | reconciles | failed (retried) | reconcile p50 | reconcile p99 | queue wait p50 | queue wait p99 |
|---|---:|---:|---:|---:|---:|---:|
| create {n} agents | {create['reconciles']} | {create['failures']} | {create['reconcile_p50_ms']:.1f} ms | {create['reconcile_p99_ms']:.1f} ms | {create['queue_wait_p50_ms']:.1f} ms | {create['queue_wait_p99_ms']:.1f} ms |
| … then the PromptPack edit (cumulative) | {edit['reconciles']} | {edit['failures']} | {edit['reconcile_p50_ms']:.1f} ms | {edit['reconcile_p99_ms']:.1f} ms | {edit['queue_wait_p50_ms']:.1f} ms | {edit['queue_wait_p99_ms']:.1f} ms |

Each agent is reconciled several times: on creation, on its own status write
and on every status change of its Deployment while the pods start or roll. The
median reconcile finds nothing to apply or write and makes no API call; the
tail applies an agent's objects (one server-side apply each, in order) and
writes its status. The failures are agents reconciled before the PromptPack's
first snapshot existed, retried when it appeared. The queue wait p99 is the
burst: {n} agents' events arriving at once for 4 workers. The time to Ready
is bounded by the Deployment controller and KWOK starting (then replacing)
{n} pods on the same cores, not by the operator.
"""


def write_section(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(HEADING)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        following = text.find("\n## ", start + len(HEADING))
        end = len(text) if following < 0 else following + 1
        text = text[:start] + section + ("\n" + text[end:] if following >= 0 else "")
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    arguments = parser.parse_args()
    machine_line = machine()
    figures = run(arguments.agents)
    section = report(figures, machine_line)
    print()
    print(section)
    print(json.dumps(figures, indent=2))
    if not arguments.no_write:
        write_section(section)


if __name__ == "__main__":
    main()
