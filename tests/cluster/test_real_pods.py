"""Agents on real pods: the brief's example runs, holds the restricted profile, and recovers.

Every test here runs its pods on the real test node (containerd + kubelet),
not on KWOK: a configuration that would crash-loop fails here. The operator
runs as a process of the test under the least-privilege ServiceAccount of
deploy/rbac (the chart test runs it as a pod), with the image built by
scripts/build-image and the default Redis store installed as a pod.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import websockets
import yaml

import realpods

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.operator import harness  # noqa: E402
from tests.operator.harness import condition, get, wait_for  # noqa: E402

pytestmark = pytest.mark.cluster

EXAMPLE = harness.REPO / "examples" / "support-agent"
SELECTOR = "app.kubernetes.io/name=omnia-agent,app.kubernetes.io/instance=support-agent"


def spec_manifests() -> list[dict]:
    """SPEC section 2's AgentRuntime verbatim, the example's PromptPack, and a mock Provider of the same name."""
    agent = yaml.safe_load((EXAMPLE / "agentruntime.yaml").read_text())
    pack = yaml.safe_load((EXAMPLE / "promptpack.yaml").read_text())
    provider = {
        "apiVersion": "omnia.altairalabs.ai/v1alpha1",
        "kind": "Provider",
        "metadata": {"name": "claude-provider"},
        "spec": {"type": "mock", "mock": {"replies": [{"text": "Hello from a real pod, streamed in chunks.",
                                                        "chunkSize": 6, "chunkDelayMs": 20}]}},
    }
    return [pack, provider, agent]


@pytest.fixture(scope="module")
def crds(control_plane):
    harness.install_crds(control_plane)


@pytest.fixture(scope="module")
def deployed(control_plane, real_node, built_images, crds, tmp_path_factory):
    """SPEC section 2's agent, applied verbatim, Ready on the real node with Redis as its default store.

    The namespace enforces the restricted Pod Security Standard, so every pod
    in it (the agent's and Redis) is admitted only if it holds that profile.
    """
    namespace = f"spec-example-{os.urandom(3).hex()}"
    plane = control_plane
    plane.kubectl("create", "namespace", namespace, check=True)
    plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                  "pod-security.kubernetes.io/enforce-version=latest", check=True)
    plane.kubectl("annotate", "namespace", namespace, "--overwrite",
                  *(f"{key}={value}" for key, value in real_node.namespace_annotations().items()), check=True)
    harness.apply(plane, realpods.redis_objects(image=built_images.services), namespace=namespace)
    harness.apply(plane, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "session-store"},
                          "stringData": {"url": realpods.redis_url(namespace)}}, namespace=namespace)
    log_dir = tmp_path_factory.mktemp("spec-example")
    kubeconfig = harness.operator_kubeconfig(plane, home=namespace, namespaces=[namespace])
    operator = harness.OperatorProcess(
        kubeconfig=kubeconfig, namespaces=[namespace], log_file=log_dir / "operator.log",
        image=built_images.image,
        extra_args=[f"--default-session-secret=redis={namespace}/session-store:url"],
    )
    operator.start()
    try:
        harness.apply(plane, spec_manifests(), namespace=namespace)
        wait_for(lambda: condition(get(plane, "agentruntime/support-agent", namespace), "Ready").get("status")
                 == "True", timeout=240, what="support-agent Ready on the real node",
                 explain=lambda: (get(plane, "agentruntime/support-agent", namespace) or {}).get("status"))
        yield namespace, operator
    finally:
        operator.stop()
        print(f"--- operator log ---\n{operator.log_tail(120)}")
        plane.kubectl("delete", "namespace", namespace, "--wait=false")


def test_spec_example_runs_both_containers_on_the_real_node(control_plane, deployed):
    """Why: Ready must mean running containers, not a Deployment the API server accepted."""
    namespace, _ = deployed
    pods = realpods.ready_pods(control_plane, namespace, SELECTOR)
    assert len(pods) >= 2, "autoscaling.minReplicas is 2"
    for pod in pods:
        assert pod["spec"]["nodeName"] == "localhost"
        assert sorted(s["name"] for s in pod["status"]["containerStatuses"]) == ["facade", "runtime"]
        assert all(s["ready"] and s["restartCount"] == 0 for s in pod["status"]["containerStatuses"])


def test_a_client_gets_a_streamed_reply_through_port_forward(control_plane, deployed):
    """Why: what a user does first on a cluster: port-forward the Service, chat, see chunks, then done."""
    namespace, _ = deployed
    with realpods.port_forward(control_plane, "service/support-agent", namespace=namespace, port=8080) as port:
        connected, frames = realpods.chat_once(f"ws://127.0.0.1:{port}/ws", "Where is my order?")
    assert connected["type"] == "connected" and connected["agent"] == "support-agent"
    chunks = [f for f in frames if f["type"] == "chunk"]
    assert len(chunks) > 1, frames
    assert "".join(c["content"] for c in chunks) == "Hello from a real pod, streamed in chunks."
    assert frames[-1]["type"] == "done", frames


def test_a_turn_is_kept_in_the_default_redis_store_across_replicas(control_plane, deployed):
    """Why: the default store is shared: a session resumed through another pod keeps its history."""
    namespace, _ = deployed
    pods = realpods.ready_pods(control_plane, namespace, SELECTOR)
    first, second = pods[0]["metadata"]["name"], pods[1]["metadata"]["name"]
    with realpods.port_forward(control_plane, f"pod/{first}", namespace=namespace, port=8080) as port:
        connected, frames = realpods.chat_once(f"ws://127.0.0.1:{port}/ws", "first")
    assert frames[-1]["type"] == "done"
    with realpods.port_forward(control_plane, f"pod/{second}", namespace=namespace, port=8080) as port:
        resumed, frames = realpods.chat_once(
            f"ws://127.0.0.1:{port}/ws?session_id={connected['session_id']}", "second")
    assert resumed.get("resumed") is True, resumed
    assert frames[-1]["type"] == "done"


def test_restricted_profile_non_root_read_only_root_and_limits_hold_in_the_containers(control_plane, deployed):
    """Why: the securityContext is only a request; the running process is what must be confined."""
    namespace, _ = deployed
    pod = realpods.ready_pods(control_plane, namespace, SELECTOR)[0]
    name = pod["metadata"]["name"]
    probe = (
        "import os, pathlib\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n"
        "    pathlib.Path('/opt/omnia/written').write_text('x'); print('writable')\n"
        "except OSError as error:\n"
        "    print('read-only' if error.errno == 30 else error)\n"
        "print(pathlib.Path('/sys/fs/cgroup/memory/memory.limit_in_bytes').read_text().strip())\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
    )
    limits = {c["name"]: c["resources"]["limits"] for c in pod["spec"]["containers"]}
    security = pod["spec"]["securityContext"]
    assert security["runAsUser"] != 0 and security["runAsNonRoot"] is True
    for container in ("facade", "runtime"):
        result = control_plane.kubectl("exec", name, f"--namespace={namespace}", "-c", container, "--",
                                       "python3", "-c", probe, check=True)
        uid_gid, writable, memory_limit, capabilities = result.stdout.split("\n")[:4]
        assert uid_gid == f"{security['runAsUser']} {security['runAsGroup']}"
        assert writable == "read-only"
        assert int(memory_limit) == _bytes(limits[container]["memory"])
        assert int(capabilities, 16) == 0, "every capability dropped"


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


@pytest.mark.parametrize(
    "trouble",
    [
        pytest.param(signal.SIGKILL, id="runtime-killed"),
        pytest.param(signal.SIGSTOP, id="runtime-wedged"),
    ],
)
def test_a_dead_or_wedged_runtime_is_restarted_and_the_facade_recovers(control_plane, real_node, deployed, trouble):
    """Why: a runtime that dies or hangs must not leave a pod that accepts connections and never answers.

    Killed, the container exits and the kubelet restarts it; frozen, only the
    liveness probe on grpc.health.v1 can tell, and the kubelet restarts it.
    Either way the same pod answers again afterwards.
    """
    namespace, _ = deployed
    pod = realpods.ready_pods(control_plane, namespace, SELECTOR)[0]
    name = pod["metadata"]["name"]
    restarts = next(s["restartCount"] for s in pod["status"]["containerStatuses"] if s["name"] == "runtime")
    os.kill(realpods.container_host_pid(real_node, pod, "runtime"), trouble)

    def restarted() -> bool:
        current = json.loads(control_plane.kubectl("get", "pod", name, f"--namespace={namespace}", "-o", "json",
                                                   check=True).stdout)
        status = {s["name"]: s for s in current["status"]["containerStatuses"]}
        return status["runtime"]["restartCount"] > restarts and all(s["ready"] for s in status.values())

    wait_for(restarted, timeout=150, what=f"the runtime of {name} restarted and the pod Ready again")
    with realpods.port_forward(control_plane, f"pod/{name}", namespace=namespace, port=8080) as port:
        _, frames = realpods.chat_once(f"ws://127.0.0.1:{port}/ws", "still there?")
    assert frames[-1]["type"] == "done", frames


DRAIN_AGENT = "drain-agent"
CONVERSATIONS = 20


def drain_manifests() -> list[dict]:
    pack = {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack", "metadata": {"name": "drain-prompts"},
            "spec": {"version": "1.0.0", "systemPrompt": "You are patient.", "rollout": {"strategy": "immediate"}}}
    # Turns long enough (about a second of chunks) that some are in flight when a pod drains.
    provider = {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "Provider", "metadata": {"name": "slow-mock"},
                "spec": {"type": "mock", "mock": {"replies": [{"text": "one two three four five six seven eight",
                                                               "chunkSize": 4, "chunkDelayMs": 100}]}}}
    agent = {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime", "metadata": {"name": DRAIN_AGENT},
             "spec": {"replicas": 2, "promptPackRef": {"name": "drain-prompts"}, "providerRef": {"name": "slow-mock"},
                      "session": {"type": "redis"}}}
    return [pack, provider, agent]


class Conversation:
    """One client that keeps talking, and reconnects with its session_id whenever its pod goes away."""

    DOCUMENTED = {"DRAINING", "RUNTIME_UNAVAILABLE"}

    def __init__(self, index: int, url: str) -> None:
        self.index = index
        self.url = url
        self.session_id: str | None = None
        self.acknowledged: list[str] = []
        self.reconnects = 0
        self.errors: list[str] = []
        self.closes: list[int | None] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            url = self.url if self.session_id is None else f"{self.url}?session_id={self.session_id}"
            try:
                async with websockets.connect(url, open_timeout=10) as ws:
                    connected = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if connected["type"] == "error":
                        self.errors.append(connected["code"])
                        await asyncio.sleep(0.3)
                        continue
                    self.session_id = connected["session_id"]
                    while not stop.is_set():
                        content = f"conversation {self.index} turn {len(self.acknowledged)} {os.urandom(2).hex()}"
                        await ws.send(json.dumps({"type": "message", "content": content}))
                        while True:
                            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                            if frame["type"] in ("done", "error"):
                                break
                        if frame["type"] == "error":
                            self.errors.append(frame["code"])
                            break
                        self.acknowledged.append(content)
            except websockets.ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd else None)
            except (OSError, asyncio.TimeoutError) as error:
                self.errors.append(type(error).__name__)
            self.reconnects += 1
            await asyncio.sleep(0.2)


def test_a_prompt_edit_rolls_the_pods_and_no_acknowledged_turn_is_lost(control_plane, deployed):
    """Why: a roll must drain: clients of an old pod are told to go, resume on a new pod, and every turn
    they saw ``done`` for is in the store afterwards. Twenty conversations keep talking through it."""
    namespace, _ = deployed
    plane = control_plane
    harness.apply(plane, drain_manifests(), namespace=namespace)
    selector = f"app.kubernetes.io/name=omnia-agent,app.kubernetes.io/instance={DRAIN_AGENT}"
    wait_for(lambda: len(realpods.ready_pods(plane, namespace, selector)) == 2, timeout=180,
             what="two drain-agent pods ready")
    old_pods = {pod["metadata"]["name"] for pod in realpods.pods(plane, namespace, selector)}
    url = realpods.service_url(plane, DRAIN_AGENT, namespace=namespace)

    async def scenario() -> list[Conversation]:
        conversations = [Conversation(index, url) for index in range(CONVERSATIONS)]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop)) for c in conversations]
        try:
            await wait_async(lambda: all(len(c.acknowledged) >= 2 for c in conversations), timeout=120,
                             what="every conversation under way")
            plane.kubectl("patch", "promptpack", "drain-prompts", f"--namespace={namespace}", "--type=merge",
                          "-p", json.dumps({"spec": {"systemPrompt": "You are patient and kind."}}), check=True)

            def rolled() -> bool:
                current = realpods.pods(plane, namespace, selector)
                names = {pod["metadata"]["name"] for pod in current}
                return not names & old_pods and len(realpods.ready_pods(plane, namespace, selector)) == 2

            await wait_async(rolled, timeout=240, what="the old pods replaced by ready new ones")
            after = {c.index: len(c.acknowledged) for c in conversations}
            await wait_async(lambda: all(len(c.acknowledged) >= after[c.index] + 2 for c in conversations),
                             timeout=120, what="every conversation going on on the new pods")
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        return conversations

    conversations = asyncio.run(scenario())
    assert sum(c.reconnects for c in conversations) >= CONVERSATIONS, "every client had to move to a new pod"
    unexpected = {code for c in conversations for code in c.errors} - Conversation.DOCUMENTED - {"TimeoutError"}
    assert not unexpected, f"errors other than the documented drain ones: {unexpected}"
    assert {code for c in conversations for code in c.closes} <= {1000, 1001, 1012, None}

    async def stored() -> dict[str, list[str]]:
        from omnia.sessions.redis import RedisStore

        svc = json.loads(plane.kubectl("get", "service", "redis", f"--namespace={namespace}", "-o", "json",
                                       check=True).stdout)
        store = RedisStore.from_url(f"redis://{svc['spec']['clusterIP']}:{realpods.REDIS_PORT}/0",
                                    namespace=f"{namespace}/{DRAIN_AGENT}")
        try:
            found = {}
            for c in conversations:
                session = await store.get(c.session_id)
                found[c.session_id] = [m["content"] for t in session.turns for m in t.messages if m["role"] == "user"]
            return found
        finally:
            await store.aclose()

    history = asyncio.run(stored())
    lost = {c.session_id: [m for m in c.acknowledged if m not in history[c.session_id]] for c in conversations}
    assert not any(lost.values()), f"acknowledged turns missing from the store: {lost}"
    assert sum(len(c.acknowledged) for c in conversations) >= CONVERSATIONS * 4


async def wait_async(check, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


def broken_agent(name: str, **spec) -> list[dict]:
    pack = {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack", "metadata": {"name": f"{name}-prompts"},
            "spec": {"version": "1.0.0", "systemPrompt": "You help."}}
    agent = {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime", "metadata": {"name": name},
             "spec": {"replicas": 1, "promptPackRef": {"name": f"{name}-prompts"},
                      "providerRef": {"name": "claude-provider"}, **spec}}
    return [pack, agent]


@pytest.mark.parametrize(
    ("name", "spec", "extra", "reason", "message"),
    [
        pytest.param(
            "bad-store-url", {"session": {"type": "redis", "secretRef": {"name": "bad-store", "key": "url"}}},
            [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad-store"},
              "stringData": {"url": "http://not-a-redis-url"}}],
            "CrashLoopBackOff", "has scheme 'http'", id="crash-loop-with-the-runtime-s-own-reason",
        ),
        pytest.param(
            "no-such-image", {"images": {"runtime": "localhost/omnia:no-such-tag"}}, [],
            "ImagePullFailed", "localhost/omnia:no-such-tag", id="image-pull",
        ),
        pytest.param(
            "out-of-memory", {"resources": {"runtime": {"requests": {"memory": "8Mi"}, "limits": {"memory": "16Mi"}}}},
            [], "OOMKilled", "runtime", id="oom-killed",
        ),
        pytest.param(
            "store-unreachable",
            {"session": {"type": "redis", "secretRef": {"name": "nowhere-store", "key": "url"}}},
            [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nowhere-store"},
              "stringData": {"url": "redis://nowhere.invalid:6379/0"}}],
            "ProbeFailing", "facade", id="readiness-probe-failing",
        ),
    ],
)
def test_a_real_pod_s_failure_turns_the_agent_not_ready_with_reason_and_message(
    control_plane, deployed, name, spec, extra, reason, message
):
    """Why: a crash loop, an image that cannot be pulled, the OOM killer or a failing probe must show on the
    AgentRuntime (Ready False, the reason, the container's own last words), not only on pods nobody reads."""
    namespace, _ = deployed
    harness.apply(control_plane, [*extra, *broken_agent(name, **spec)], namespace=namespace)

    def ready_condition() -> dict:
        found = condition(get(control_plane, f"agentruntime/{name}", namespace), "Ready")
        return found if found.get("reason") == reason else {}

    found = wait_for(ready_condition, timeout=240, what=f"Ready False with reason {reason}",
                     explain=lambda: (get(control_plane, f"agentruntime/{name}", namespace) or {}).get("status"))
    assert found["status"] == "False"
    assert message in found["message"], found["message"]
    events = control_plane.kubectl("get", "events", f"--namespace={namespace}",
                                   f"--field-selector=involvedObject.name={name},reason={reason}", "-o", "json",
                                   check=True)
    assert json.loads(events.stdout)["items"], f"no {reason} Event for {name}"
    control_plane.kubectl("delete", "agentruntime", name, f"--namespace={namespace}", "--wait=false")


def test_traces_arrive_from_a_deployed_agent(control_plane, deployed):
    """Why: traces must leave operator-made pods: an OTLP receiver on the pods' network sees the turn."""
    import grpc
    from concurrent import futures

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    import realnode
    from tests.e2e.test_traces_e2e import Receiver

    namespace, _ = deployed
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{realnode.GATEWAY}:0")
    server.start()
    try:
        pack = {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack",
                "metadata": {"name": "traced-prompts"}, "spec": {"version": "1.0.0", "systemPrompt": "Be brief."}}
        agent = {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime",
                 "metadata": {"name": "traced"},
                 "spec": {"replicas": 1, "promptPackRef": {"name": "traced-prompts"},
                          "providerRef": {"name": "claude-provider"},
                          "tracing": {"endpoint": f"http://{realnode.GATEWAY}:{port}", "samplingRatio": 1.0}}}
        harness.apply(control_plane, [pack, agent], namespace=namespace)
        selector = "app.kubernetes.io/name=omnia-agent,app.kubernetes.io/instance=traced"
        wait_for(lambda: realpods.ready_pods(control_plane, namespace, selector), timeout=180,
                 what="the traced agent's pod ready")
        (pod,) = realpods.ready_pods(control_plane, namespace, selector)
        with realpods.port_forward(control_plane, f"pod/{pod['metadata']['name']}", namespace=namespace,
                                   port=8080) as local:
            _, frames = realpods.chat_once(f"ws://127.0.0.1:{local}/ws", "hello")
        assert frames[-1]["type"] == "done"
        wait_for(lambda: {"invoke_agent", "chat"} <= {span.name.split(" ")[0] for _, _, span in servicer.spans()},
                 timeout=60, what="invoke_agent and chat spans at the receiver")
        spans = {span.name.split(" ")[0]: (attributes, span) for _, attributes, span in servicer.spans()}
        invoke_attributes, invoke = spans["invoke_agent"]
        _, chat = spans["chat"]
        assert chat.trace_id == invoke.trace_id and chat.parent_span_id == invoke.span_id
        assert invoke_attributes["k8s.pod.name"] == pod["metadata"]["name"]
        assert invoke_attributes["k8s.namespace.name"] == namespace
    finally:
        server.stop(grace=None)


CANARY_AGENT = "canary-agent"
HASH = "omnia.altairalabs.ai/config-hash"


def canary_pack(version: str, prompt: str, steps: list[dict]) -> dict:
    return {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "PromptPack", "metadata": {"name": "canary-prompts"},
            "spec": {"version": version, "systemPrompt": prompt, "rollout": {"strategy": "canary", "steps": steps}}}


def documented_routing_delay(real_node) -> float:
    """docs/operator.md, "Prompt routing without restarts": from the ConfigMap written to new sessions following it.

    The kubelet refreshes a mounted ConfigMap when it syncs the pod: every
    ``syncFrequency`` plus up to half of it again (its jitter); the runtime
    looks at the file every 2 s; the facade places new sessions by a Describe
    answer at most 2 s old.
    """
    from omnia.api.v1alpha1 import parse_duration

    kubelet = json.loads((real_node.workdir / "kubelet-config.json").read_text())
    return 1.5 * parse_duration(kubelet["syncFrequency"]).total_seconds() + 2 + 2


def agent_config(plane, namespace: str):
    from omnia.config import AgentConfig

    return AgentConfig.from_json(get(plane, f"configmap/{CANARY_AGENT}-config", namespace)["data"]["agent.json"])


def new_session_versions(urls: list[str], per_url: int) -> dict[str, list[str]]:
    """The prompt version ``connected`` announces for ``per_url`` new sessions on each URL."""
    from websockets.sync.client import connect

    versions: dict[str, list[str]] = {}
    for url in urls:
        for _ in range(per_url):
            with connect(url, open_timeout=20) as ws:
                connected = json.loads(ws.recv(timeout=20))
            assert connected["type"] == "connected", connected
            versions.setdefault(url, []).append(connected["prompt_version"])
    return versions


def test_a_canary_weight_step_restarts_no_real_pod_and_new_sessions_follow_it(control_plane, real_node, deployed):
    """Why: a weight step changes only where new sessions go; on real pods it must restart nothing (same pods,
    same restart counts), and within the documented delay every new session on every runtime must follow it."""
    namespace, _ = deployed
    plane = control_plane
    selector = f"app.kubernetes.io/name=omnia-agent,app.kubernetes.io/instance={CANARY_AGENT}"
    held = [{"weight": 0, "pause": "1h"}, {"weight": 100, "pause": "1h"}]
    agent = {"apiVersion": "omnia.altairalabs.ai/v1alpha1", "kind": "AgentRuntime",
             "metadata": {"name": CANARY_AGENT},
             "spec": {"replicas": 2, "promptPackRef": {"name": "canary-prompts"},
                      "providerRef": {"name": "claude-provider"}}}
    harness.apply(plane, [canary_pack("1.0.0", "You are helpful.", held), agent], namespace=namespace)
    wait_for(lambda: ((get(plane, f"agentruntime/{CANARY_AGENT}", namespace) or {}).get("status") or {})
             .get("activePromptVersions") == ["1.0.0"], timeout=120, what="1.0.0 stable")
    # The candidate is new content, so the pods roll once to hold both versions, at weight 0.
    harness.apply(plane, canary_pack("2.0.0", "You are terse.", held), namespace=namespace)

    def canary_held() -> list[dict] | None:
        status = (get(plane, f"agentruntime/{CANARY_AGENT}", namespace) or {}).get("status") or {}
        if status.get("activePromptVersions") != ["1.0.0", "2.0.0"]:
            return None
        annotations = get(plane, f"deployment/{CANARY_AGENT}", namespace)["spec"]["template"]["metadata"][
            "annotations"]
        if "2.0.0" not in annotations.get("omnia.altairalabs.ai/prompt-versions", ""):
            return None
        ready = realpods.ready_pods(plane, namespace, selector)
        current = [pod for pod in ready if pod["metadata"]["annotations"].get(HASH) == annotations[HASH]]
        return ready if len(realpods.pods(plane, namespace, selector)) == len(current) == 2 else None

    pods = wait_for(canary_held, timeout=240, what="two ready pods holding 1.0.0 and 2.0.0, no old pod left",
                    explain=lambda: (get(plane, f"agentruntime/{CANARY_AGENT}", namespace) or {}).get("status"))
    urls = [f"ws://{pod['status']['podIP']}:8080/ws" for pod in pods]
    before = {pod["metadata"]["uid"]: {s["name"]: s["restartCount"] for s in pod["status"]["containerStatuses"]}
              for pod in pods}
    template = get(plane, f"deployment/{CANARY_AGENT}", namespace)["spec"]["template"]
    assert set(v for versions in new_session_versions(urls, 4).values() for v in versions) == {"1.0.0"}, \
        "weight 0: every new session on stable"

    harness.apply(plane, canary_pack("2.0.0", "You are terse.", [{"weight": 0, "pause": "1s"},
                                                                   {"weight": 100, "pause": "1h"}]),
                  namespace=namespace)

    wait_for(lambda: agent_config(plane, namespace).prompts.canary_weight == 100, timeout=60, interval=0.2,
             what="weight 100 in the agent's ConfigMap")
    written = time.monotonic()
    delay = documented_routing_delay(real_node)
    time.sleep(max(0.0, written + delay - time.monotonic()))
    versions = new_session_versions(urls, 6)
    assert all(v == ["2.0.0"] * 6 for v in versions.values()), \
        f"{delay:.1f}s after weight 100 was written, new sessions per pod: {versions}"

    after = realpods.pods(plane, namespace, selector)
    assert {pod["metadata"]["uid"]: {s["name"]: s["restartCount"] for s in pod["status"]["containerStatuses"]}
            for pod in after} == before, "the same pods, not one container restarted"
    assert get(plane, f"deployment/{CANARY_AGENT}", namespace)["spec"]["template"] == template
    plane.kubectl("delete", "agentruntime", CANARY_AGENT, f"--namespace={namespace}", "--wait=false")
