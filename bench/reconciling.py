"""Operator benchmark: 200 AgentRuntimes on a real control plane, a canary weight step, a PromptPack edit.

Starts its own control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK from scripts/build-control-plane, as the cluster
tests do) and runs the operator as a process under its ServiceAccount,
cluster-wide. The PromptPack starts with a canary (1.0.0 stable, 1.1.0 at
20%), so the agents are created holding both. Measures:

- the time from ``kubectl apply`` of 200 AgentRuntimes until all 200
  Deployments exist, and until all 200 agents are Ready (pods Available);
- a canary weight step (20% → 50%): the time until every agent's config
  shows it, and how many pods it restarted (pod UIDs before and after);
- the time from a PromptPack content edit (1.2.0, immediate) until every
  agent has rolled its pods onto it (Ready again, with only 1.2.0 active);
- the operator's reconcile latency, p50 and p99 (one reconcile: read the
  caches, build, apply what changed, write status), and the time keys wait
  in its queue, from its liveness endpoint;
- where the time goes: a timeline per agent from the benchmark's own watches
  (``timelines``): applied, the operator's first apply, Deployment created,
  pod created, scheduled, Ready, Deployment available, agent Ready; and for
  the edit: ConfigMap applied, pod template changed, new pod created and
  Ready, old pod gone, agent Ready on the new version. Percentiles per phase,
  each named with who works in it.

``--tuned-cluster`` raises kube-controller-manager's client rate limit and
sync workers (flags in ``TUNED_CONTROLLER_MANAGER``), to show which part of
the time is the test cluster's own throttling.

Prints the figures and writes them (unless ``--no-write``), with the machine, to the
"Operator" section of bench/RESULTS.md. Every phase has a deadline, so a run
is bounded (about 10 minutes at worst on two cores).

Usage: python bench/reconciling.py [--agents N] [--workers N] [--tuned-cluster]
                                     [--operator-source DIR] [--label TEXT] [--no-write]
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
import timelines

from omnia.config import AgentConfig
from omnia.operator import handlers
from tests.operator import harness

NAMESPACE = "bench"
PHASE_DEADLINE = 300.0
RESULTS = REPO / "bench" / "RESULTS.md"
HEADING = "## Operator (`python bench/reconciling.py`)"
RESTART_GRACE_SECONDS = 10.0
"""How long after a weight step reached every config the benchmark still looks for restarted pods."""

TUNED_CONTROLLER_MANAGER = (
    # Defaults: 20 requests/s (burst 30) per controller client, 5 Deployments and 5 ReplicaSets at once.
    "--kube-api-qps=500", "--kube-api-burst=1000",
    "--concurrent-deployment-syncs=25", "--concurrent-replicaset-syncs=25",
)

CREATION_WHO = {
    "ConfigMap applied (first reconcile)": "operator (queue wait, first apply)",
    "Deployment created": "operator (applies in order)",
    "pod created": "Deployment + ReplicaSet controllers",
    "pod scheduled": "kube-scheduler",
    "pod Ready": "KWOK",
    "Deployment available": "ReplicaSet + Deployment controllers (status)",
    "agent Ready": "operator (status write)",
}

ROLLOUT_WHO = {
    "ConfigMap applied": "operator (pack reconcile, snapshot, agent queue, apply)",
    "pod template changed": "operator (applies in order)",
    "new pod created": "Deployment + ReplicaSet controllers",
    "new pod Ready": "kube-scheduler + KWOK",
    "Deployment rolled (old pod gone)": "Deployment + ReplicaSet controllers, KWOK (deletion)",
    "agent Ready on the new version": "operator (status write)",
}


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


def pack(version: str, prompt: str, *, steps: list[dict] | None = None) -> dict:
    rollout = {"strategy": "canary", "steps": steps} if steps else {"strategy": "immediate"}
    return {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack",
            "metadata": {"name": "prompts", "namespace": NAMESPACE},
            "spec": {"version": version, "systemPrompt": prompt, "rollout": rollout}}


CANARY_AT_20 = [{"weight": 20, "pause": "1h"}]
CANARY_AT_50 = [{"weight": 20, "pause": "1s"}, {"weight": 50, "pause": "1h"}]


class Watcher:
    """Counts objects by listing them as the admin (one request per kind per poll)."""

    def __init__(self, plane: controlplane.ControlPlane) -> None:
        self.client = plane.http_client(timeout=30)

    def items(self, path: str) -> list[dict]:
        return self.client.get(path).raise_for_status().json()["items"]

    def deployments(self) -> int:
        return len(self.items(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"))

    def ready_agents(self, versions: list[str] | None = None) -> int:
        count = 0
        for agent in self.items(f"/apis/omnia.altairalabs.ai/v1alpha1/namespaces/{NAMESPACE}/agentruntimes"):
            status = agent.get("status") or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
            current = status.get("observedGeneration") == agent["metadata"]["generation"]
            if ready and current and (versions is None or status.get("activePromptVersions") == versions):
                count += 1
        return count

    def configs_at_weight(self, weight: int) -> int:
        count = 0
        for config_map in self.items(f"/api/v1/namespaces/{NAMESPACE}/configmaps"):
            data = config_map.get("data") or {}
            if config_map["metadata"]["name"].endswith("-config") and "agent.json" in data:
                count += AgentConfig.from_json(data["agent.json"]).prompts.canary_weight == weight
        return count

    def pods(self) -> set[str]:
        """The UIDs of the agents' pods that are not being deleted."""
        return {pod["metadata"]["uid"] for pod in self.items(f"/api/v1/namespaces/{NAMESPACE}/pods")
                if not pod["metadata"].get("deletionTimestamp")}

    def pods_settled(self, count: int) -> int:
        """Agents whose Deployment runs exactly its one pod (none surging or terminating); up to ``count``."""
        return count if len(self.pods()) == count and all(
            timelines.complete(d) for d in self.items(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")
        ) else 0


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


def run(count: int, *, workers: int | None, tuned_cluster: bool, operator_source: Path | None) -> dict:
    binaries = controlplane.Binaries.locate()
    missing = binaries.missing()
    if missing:
        raise SystemExit(f"the test control plane is not built ({', '.join(missing)}); run scripts/build-control-plane")
    workdir = Path(tempfile.mkdtemp(prefix="omnia-bench-operator-"))
    # Each agent runs one pod, two during its rollout (maxSurge): room for 2×count pods.
    nodes = max(3, (2 * count) // 100 + 1)
    manager_args = TUNED_CONTROLLER_MANAGER if tuned_cluster else ()
    with controlplane.ControlPlane(binaries=binaries, workdir=workdir, node_count=nodes,
                                   controller_manager_args=manager_args) as plane:
        harness.install_crds(plane)
        plane.kubectl("create", "namespace", NAMESPACE, check=True)
        plane.kubectl("create", "namespace", "omnia-system", check=True)
        kubeconfig = harness.operator_kubeconfig(plane, home="omnia-system", namespaces=[], cluster_wide=True)
        extra = [f"--workers={workers}"] if workers else []
        env = {"PYTHONPATH": str(operator_source)} if operator_source else None
        operator = harness.OperatorProcess(kubeconfig=kubeconfig, namespaces=[], log_file=workdir / "operator.log",
                                           extra_args=extra, env=env)
        operator.start()
        watcher = Watcher(plane)
        recorder = timelines.Recorder(lambda: plane.http_client(), namespace=NAMESPACE)
        try:
            harness.apply(plane, [{"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "Provider",
                                   "metadata": {"name": "mock", "namespace": NAMESPACE}, "spec": {"type": "mock"}},
                                  pack("1.0.0", "You are helpful.", steps=CANARY_AT_20)], namespace=NAMESPACE)
            # The first version the operator sees becomes stable: let it see 1.0.0 before 1.1.0.
            harness.wait_for(lambda: (harness.get(plane, "promptpack/prompts", NAMESPACE) or {}).get("status", {})
                             .get("stableVersion") == "1.0.0", timeout=60, what="1.0.0 stable")
            harness.apply(plane, pack("1.1.0", "You are helpful and kind.", steps=CANARY_AT_20), namespace=NAMESPACE)
            harness.wait_for(lambda: (harness.get(plane, "promptpack/prompts", NAMESPACE) or {}).get("status", {})
                             .get("canaryVersion") == "1.1.0", timeout=60, what="the canary of 1.1.0")
            recorder.start()

            print(f"creating {count} AgentRuntimes ({nodes} KWOK nodes)", flush=True)
            started = time.monotonic()
            harness.apply(plane, agents(count), namespace=NAMESPACE)
            applied = time.monotonic() - started
            deployments = wait_until("Deployments", watcher.deployments, total=count, started=started)
            available = wait_until("agents Ready", lambda: watcher.ready_agents(["1.0.0", "1.1.0"]), total=count,
                                   started=started)
            created = timelines.creation(recorder.events(), started=started)
            time.sleep(11)  # kopf caches probe results for 10 seconds
            after_create = operator.probe()["reconciler"]

            print("stepping the canary's weight (20% → 50%)", flush=True)
            wait_until("agents with one settled pod", lambda: watcher.pods_settled(count), total=count,
                       started=time.monotonic())
            pods_before = watcher.pods()
            started = time.monotonic()
            harness.apply(plane, pack("1.1.0", "You are helpful and kind.", steps=CANARY_AT_50), namespace=NAMESPACE)
            stepped = wait_until("agent configs at 50%", lambda: watcher.configs_at_weight(50), total=count,
                                 started=started)
            time.sleep(RESTART_GRACE_SECONDS)
            restarted = len(pods_before - watcher.pods())

            print("editing the PromptPack (1.2.0, immediate)", flush=True)
            before_edit = recorder.events()
            started = time.monotonic()
            harness.apply(plane, pack("1.2.0", "You are helpful and brief."), namespace=NAMESPACE)
            rolled = wait_until("agents Ready on 1.2.0", lambda: watcher.ready_agents(["1.2.0"]), total=count,
                                started=started)
            edited = timelines.rollout(recorder.events(since=started), started=started, before=before_edit,
                                       version="1.2.0")
            time.sleep(11)
            after_edit = operator.probe()["reconciler"]
        finally:
            recorder.stop()
            operator.stop()
            watcher.client.close()
    return {
        "agents": count,
        "nodes": nodes,
        "workers": workers,
        "tuned_cluster": tuned_cluster,
        "apply_seconds": applied,
        "deployments_seconds": deployments,
        "available_seconds": available,
        "weight_step_seconds": stepped,
        "weight_step_restarted_pods": restarted,
        "pods_before_weight_step": len(pods_before),
        "rolled_seconds": rolled,
        "after_create": after_create,
        "after_edit": after_edit,
        "creation_timeline": timelines.table(created, who=CREATION_WHO),
        "rollout_timeline": timelines.table(edited, who=ROLLOUT_WHO),
    }


def report(figures: dict, machine_line: str, *, label: str) -> str:
    create, edit = figures["after_create"], figures["after_edit"]
    n = figures["agents"]
    workers = figures["workers"] or f"{handlers.WORKERS} (the default)"
    cluster = ("kube-controller-manager with " + " ".join(TUNED_CONTROLLER_MANAGER)
               if figures["tuned_cluster"] else "kube-controller-manager with its default flags")
    return f"""### {label}: {n} agents, {workers} reconcile workers, {cluster}

Machine: {machine_line}. Run on {datetime.date.today().isoformat()}.
The control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, KWOK with {figures['nodes']} fake nodes), the operator (one process, under
its ServiceAccount) and the benchmark share those cores.

| what | figure |
|---|---:|
| `kubectl apply` of {n} AgentRuntimes (one List) | {figures['apply_seconds']:.1f} s |
| … until all {n} Deployments exist | {figures['deployments_seconds']:.1f} s |
| … until all {n} agents are Ready (every pod Available) | {figures['available_seconds']:.1f} s |
| canary weight step (20% → 50%) until all {n} agents' configs show it | {figures['weight_step_seconds']:.1f} s |
| canary weight step → pods restarted (of {figures['pods_before_weight_step']}) | {figures['weight_step_restarted_pods']} |
| PromptPack content edit until all {n} agents have rolled onto the new version | {figures['rolled_seconds']:.1f} s |

Reconciles (figures from the operator's liveness endpoint):

| phase | reconciles | failed (retried) | reconcile p50 | reconcile p99 | queue wait p50 | queue wait p99 |
|---|---:|---:|---:|---:|---:|---:|
| create {n} agents | {create['reconciles']} | {create['failures']} | {create['reconcile_p50_ms']:.1f} ms | {create['reconcile_p99_ms']:.1f} ms | {create['queue_wait_p50_ms']:.1f} ms | {create['queue_wait_p99_ms']:.1f} ms |
| … then the weight step and the edit (cumulative) | {edit['reconciles']} | {edit['failures']} | {edit['reconcile_p50_ms']:.1f} ms | {edit['reconcile_p99_ms']:.1f} ms | {edit['queue_wait_p50_ms']:.1f} ms | {edit['queue_wait_p99_ms']:.1f} ms |

Where the creation's time goes (seconds per agent between milestones, from the
benchmark's watches; "last agent at" is since the `kubectl apply`):

{figures['creation_timeline']}

Where the PromptPack edit's time goes ("last agent at" is since the edit):

{figures['rollout_timeline']}
"""


def write_section(section: str, *, title: str) -> None:
    """Replace the "Operator" section's subsection ``title`` (or add it), keeping the section's other text."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(HEADING)
    if start < 0:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n"
        start = text.find(HEADING)
    following = text.find("\n## ", start + len(HEADING))
    end = len(text) if following < 0 else following + 1
    body = text[start:end]
    at = body.find(title)
    if at < 0:
        body = body.rstrip("\n") + "\n\n" + section
    else:
        after = body.find("\n### ", at + len(title))
        body = body[:at] + section + (body[after + 1:] if after >= 0 else "")
    text = text[:start] + body.rstrip("\n") + "\n" + ("\n" + text[end:] if following >= 0 else "")
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--workers", type=int, default=None, help="the operator's --workers (its default if omitted)")
    parser.add_argument("--tuned-cluster", action="store_true",
                        help="raise kube-controller-manager's client rate limit and sync workers")
    parser.add_argument("--operator-source", type=Path, default=None,
                        help="run the operator from this folder of Python packages (e.g. another commit's src/), "
                             "to compare two versions in the same conditions")
    parser.add_argument("--label", default="current operator",
                        help="names the run in bench/RESULTS.md; a run with the same label and settings replaces it")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    arguments = parser.parse_args()
    machine_line = machine()
    figures = run(arguments.agents, workers=arguments.workers, tuned_cluster=arguments.tuned_cluster,
                  operator_source=arguments.operator_source)
    section = report(figures, machine_line, label=arguments.label)
    print()
    print(section)
    print(json.dumps(figures, indent=2))
    if not arguments.no_write:
        write_section(section, title=section.splitlines()[0])


if __name__ == "__main__":
    main()
