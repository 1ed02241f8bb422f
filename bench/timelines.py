"""Where the operator benchmark's time goes: every watch event, timed, then milestones per agent.

The benchmark cannot see inside kube-controller-manager, the scheduler or
KWOK, but it can see what each of them writes, and when: the operator
applies an agent's ConfigMap and then its Deployment; the Deployment and
ReplicaSet controllers create the pod; the scheduler binds it
(``spec.nodeName``); KWOK marks it Ready; the controllers mark the
Deployment available; the operator writes the agent's Ready status. A
:class:`Recorder` watches the benchmark's namespace and keeps every event
with the time it arrived; :func:`creation` and :func:`rollout` turn them into
those milestones, per agent, and :func:`phases` into percentiles of the time
between consecutive milestones, each phase named with whoever does the work.

Times are the benchmark's arrival times of watch events (one process, one
clock), so a phase includes the watch delivery to the benchmark, the same for
every milestone; on a loaded machine that is tens of milliseconds.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import httpx

AGENT_LABEL = "app.kubernetes.io/instance"

WATCH_READ_TIMEOUT = 5.0
"""A quiet watch is opened again after this long (from its last version), so :meth:`Recorder.stop` is prompt."""

PATHS = {
    "AgentRuntime": "/apis/omnia.altairalabs.ai/v1alpha1/namespaces/{namespace}/agentruntimes",
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments",
    "Pod": "/api/v1/namespaces/{namespace}/pods",
}


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    type: str
    body: dict

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def agent(self) -> str | None:
        """The agent the object belongs to: its own name, or the instance label of its pods and ConfigMap."""
        if self.kind in ("AgentRuntime", "Deployment"):
            return self.name
        if self.kind == "ConfigMap":
            return self.name.removesuffix("-config") if self.name.endswith("-config") else None
        return (self.body["metadata"].get("labels") or {}).get(AGENT_LABEL)


class Recorder:
    """Watches the four kinds in one namespace from threads of its own; keeps every event in arrival order."""

    def __init__(self, client_factory: Callable[[], httpx.Client], *, namespace: str) -> None:
        self._factory = client_factory
        self._namespace = namespace
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._stopping = threading.Event()
        self._clients: list[httpx.Client] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """List each kind once and watch it from that version on; returns when every watch is open."""
        opened = []
        for kind, template in PATHS.items():
            client = self._factory()
            self._clients.append(client)
            path = template.format(namespace=self._namespace)
            version = client.get(path).raise_for_status().json()["metadata"]["resourceVersion"]
            started = threading.Event()
            opened.append(started)
            thread = threading.Thread(target=self._watch, args=(client, kind, path, version, started),
                                      name=f"watch-{kind}", daemon=True)
            thread.start()
            self._threads.append(thread)
        for started in opened:
            started.wait(30)

    def stop(self) -> None:
        self._stopping.set()
        for client in self._clients:
            client.close()
        for thread in self._threads:
            thread.join(5)

    def events(self, since: float = 0.0) -> list[Event]:
        with self._lock:
            return [event for event in self._events if event.at >= since]

    def _watch(self, client: httpx.Client, kind: str, path: str, version: str, started: threading.Event) -> None:
        while not self._stopping.is_set():
            params = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true",
                      "timeoutSeconds": "3600"}
            try:
                timeout = httpx.Timeout(30, read=WATCH_READ_TIMEOUT)
                with client.stream("GET", path, params=params, timeout=timeout) as response:
                    response.raise_for_status()
                    started.set()
                    for line in response.iter_lines():
                        if not line:
                            continue
                        at = time.monotonic()
                        event = json.loads(line)
                        body = event["object"]
                        if event["type"] == "ERROR":
                            raise RuntimeError(f"watch of {kind}: {body.get('message')}")
                        version = body["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            with self._lock:
                                self._events.append(Event(at, kind, event["type"], body))
            except (httpx.HTTPError, RuntimeError):
                if self._stopping.is_set():
                    return
                time.sleep(0.2)


# --- milestones ---------------------------------------------------------------


def _ready(body: Mapping) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (body.get("status") or {}).get("conditions") or [])


def _current(body: Mapping) -> bool:
    return (body.get("status") or {}).get("observedGeneration", 0) >= body["metadata"].get("generation", 0)


def complete(deployment: Mapping) -> bool:
    """All replicas updated and available, and no old ones left: the rollout is done."""
    want = deployment["spec"].get("replicas", 1)
    got = deployment.get("status") or {}
    return _current(deployment) and all(got.get(field, 0) == want for field in
                                        ("replicas", "updatedReplicas", "availableReplicas"))


def _first(events: Iterable[Event], kind: str, test: Callable[[Event], bool]) -> dict[str, float]:
    """Agent → the arrival time of its first event of ``kind`` that passes ``test``."""
    found: dict[str, float] = {}
    for event in events:
        agent = event.agent
        if event.kind == kind and agent is not None and agent not in found and test(event):
            found[agent] = event.at
    return found


Milestones = dict[str, dict[str, float]]
"""Milestone name → agent → seconds since the phase's start; in the order the milestones happen."""


def creation(events: list[Event], *, started: float) -> Milestones:
    """From ``kubectl apply`` of the agents to their Ready status, in seven milestones."""
    milestones = {
        "applied": _first(events, "AgentRuntime", lambda e: e.type == "ADDED"),
        "ConfigMap applied (first reconcile)": _first(events, "ConfigMap", lambda e: e.type == "ADDED"),
        "Deployment created": _first(events, "Deployment", lambda e: e.type == "ADDED"),
        "pod created": _first(events, "Pod", lambda e: e.type == "ADDED"),
        "pod scheduled": _first(events, "Pod", lambda e: bool(e.body["spec"].get("nodeName"))),
        "pod Ready": _first(events, "Pod", lambda e: _ready(e.body)),
        "Deployment available": _first(events, "Deployment", lambda e: complete(e.body)),
        "agent Ready": _first(events, "AgentRuntime", lambda e: _ready(e.body) and _current(e.body)),
    }
    return _relative(milestones, started)


def rollout(events: list[Event], *, started: float, before: list[Event], version: str) -> Milestones:
    """From a PromptPack edit to every agent Ready on ``version``, in six milestones.

    ``before`` are the events up to the edit: they say which generation each
    Deployment was at and which pods were already there.
    """
    generation = {e.name: e.body["metadata"].get("generation", 0) for e in before if e.kind == "Deployment"}
    old_pods = {e.body["metadata"]["uid"] for e in before if e.kind == "Pod"}

    def new_template(event: Event) -> bool:
        return event.body["metadata"].get("generation", 0) > generation.get(event.name, 0)

    def new_pod(event: Event) -> bool:
        return event.body["metadata"]["uid"] not in old_pods

    def on_version(event: Event) -> bool:
        status = event.body.get("status") or {}
        return _ready(event.body) and _current(event.body) and status.get("activePromptVersions") == [version]

    milestones = {
        "edit applied": {agent: started for agent in generation},
        "ConfigMap applied": _first(events, "ConfigMap", lambda e: e.type == "MODIFIED"),
        "pod template changed": _first(events, "Deployment", new_template),
        "new pod created": _first(events, "Pod", lambda e: e.type == "ADDED" and new_pod(e)),
        "new pod Ready": _first(events, "Pod", lambda e: new_pod(e) and _ready(e.body)),
        "Deployment rolled (old pod gone)": _first(events, "Deployment",
                                                   lambda e: new_template(e) and complete(e.body)),
        "agent Ready on the new version": _first(events, "AgentRuntime", on_version),
    }
    return _relative(milestones, started)


def _relative(milestones: Milestones, started: float) -> Milestones:
    return {name: {agent: at - started for agent, at in times.items()} for name, times in milestones.items()}


# --- summaries ----------------------------------------------------------------


def percentile(values: list[float], percent: float) -> float:
    """Nearest rank, as the operator's own reconcile figures."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(percent / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Phase:
    """The time between two consecutive milestones, over the agents that reached both."""

    name: str
    agents: int
    p50: float
    p90: float
    max: float
    last: float
    """When the last agent reached the phase's end, since the start."""


def phases(milestones: Milestones) -> list[Phase]:
    """Each phase between consecutive milestones, then the whole: the first milestone to the last."""
    names = list(milestones)
    return [_phase(milestones, start, end) for start, end in zip(names, names[1:])] + \
        [_phase(milestones, names[0], names[-1])]


def _phase(milestones: Milestones, start: str, end: str) -> Phase:
    agents = milestones[start].keys() & milestones[end].keys()
    spans = [max(0.0, milestones[end][agent] - milestones[start][agent]) for agent in agents]
    return Phase(name=f"{start} → {end}", agents=len(agents), p50=percentile(spans, 50), p90=percentile(spans, 90),
                 max=max(spans, default=math.nan), last=max(milestones[end].values(), default=math.nan))


def table(milestones: Milestones, *, who: Mapping[str, str]) -> str:
    """A Markdown table of the phases: who works in each, p50/p90/max per agent, and when the last one ended."""
    rows = ["| phase | who | agents | p50 | p90 | max | last agent at |", "|---|---|---:|---:|---:|---:|---:|"]
    found = phases(milestones)
    for phase in found:
        end = phase.name.split(" → ", 1)[1]
        name, doer = (f"**whole: {phase.name}**", "all") if phase is found[-1] else (phase.name, who.get(end, ""))
        rows.append(f"| {name} | {doer} | {phase.agents} | {phase.p50:.1f} s | {phase.p90:.1f} s "
                    f"| {phase.max:.1f} s | {phase.last:.1f} s |")
    return "\n".join(rows)
