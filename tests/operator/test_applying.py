"""The operator's API client on an in-process transport: the exact requests it makes."""

from __future__ import annotations

import json

import httpx
import kopf
import pytest

from omnia.operator import applying, credentials

OBJECT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "agent", "namespace": "team-a"}, "spec": {}}


def client(handler) -> tuple[applying.KubeClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    info = kopf.ConnectionInfo(server="https://cluster.example", token="t0ken", insecure=True)
    return applying.KubeClient.from_credentials(credentials.ServiceAccount(info), transport=httpx.MockTransport(record)), seen


async def test_apply_is_a_forced_server_side_apply_by_the_operator():
    api, seen = client(lambda request: httpx.Response(200, json={"kind": "Deployment"}))
    assert await api.apply(OBJECT) == {"kind": "Deployment"}
    (request,) = seen
    assert (request.method, request.url.path) == ("PATCH", "/apis/apps/v1/namespaces/team-a/deployments/agent")
    assert dict(request.url.params) == {"fieldManager": "omnia-operator", "force": "true"}
    assert request.headers["Content-Type"] == "application/apply-patch+yaml"
    assert request.headers["Authorization"] == "Bearer t0ken"
    assert json.loads(request.content) == OBJECT


async def test_status_is_a_merge_patch_of_the_status_subresource():
    api, seen = client(lambda request: httpx.Response(200, json={}))
    await api.patch_status("omnia.altairalabs.ai/v1alpha1", "AgentRuntime", namespace="team-a", name="agent",
                           status={"phase": "Running", "configHash": None})
    (request,) = seen
    assert request.url.path == "/apis/omnia.altairalabs.ai/v1alpha1/namespaces/team-a/agentruntimes/agent/status"
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(request.content) == {"status": {"phase": "Running", "configHash": None}}


async def test_delete_is_conditional_on_the_uid_and_tolerates_absence():
    api, seen = client(lambda request: httpx.Response(404, json={"reason": "NotFound", "message": "gone"}))
    await api.delete("policy/v1", "PodDisruptionBudget", namespace="team-a", name="agent", uid="u-1")
    body = json.loads(seen[0].content)
    assert (seen[0].method, body["preconditions"]) == ("DELETE", {"uid": "u-1"})


@pytest.mark.parametrize(
    ("code", "error"),
    [(404, applying.NotFound), (409, applying.Conflict), (422, applying.ApiError), (500, applying.ApiError)],
)
async def test_refusals_raise_with_the_servers_reason(code, error):
    api, _ = client(lambda request: httpx.Response(code, json={"reason": "Because", "message": "the message"}))
    with pytest.raises(error, match="Because: the message") as raised:
        await api.create({**OBJECT, "kind": "ConfigMap", "apiVersion": "v1"})
    assert raised.value.status == code


async def test_get_returns_none_for_an_absent_object():
    api, seen = client(lambda request: httpx.Response(404, json={}))
    assert await api.get("v1", "ConfigMap", namespace="team-a", name="prompt") is None
    assert seen[0].url.path == "/api/v1/namespaces/team-a/configmaps/prompt"


async def test_an_event_that_cannot_be_recorded_does_not_fail_the_reconcile():
    api, seen = client(lambda request: httpx.Response(403, json={"reason": "Forbidden", "message": "no"}))
    await api.post_event(regarding={"apiVersion": "v1", "kind": "AgentRuntime", "namespace": "team-a", "name": "agent",
                                    "uid": "u"}, type="Warning", reason="ProviderNotFound", message="Provider 'x' not found")
    event = json.loads(seen[0].content)
    assert (event["reason"], event["type"], event["involvedObject"]["name"]) == ("ProviderNotFound", "Warning", "agent")
    assert event["source"] == {"component": "omnia-operator"}
