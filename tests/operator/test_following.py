"""Following objects outside the served namespaces: a narrowed list, then a watch, on an in-process transport."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import kopf

from omnia.operator import applying, credentials, following, routing


def secret_body(version: str, **data: str) -> dict:
    return {"metadata": {"name": "source", "namespace": "omnia-system", "resourceVersion": version, "uid": "u-1"},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


async def test_the_follower_lists_the_one_secret_then_follows_its_changes():
    """A list narrowed to the name (what a Role's resourceNames allow), then a watch from the list's version;
    an expired watch lists again. Only the summary is passed on, never the value."""
    watches = []

    async def answer(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        assert request.url.path == "/api/v1/namespaces/omnia-system/secrets"
        assert params["fieldSelector"] == "metadata.name=source"
        if params.get("watch") != "true":
            return httpx.Response(200, json={"metadata": {"resourceVersion": "10"},
                                             "items": [secret_body("7", url="redis://one")]})
        watches.append(params["resourceVersion"])
        if len(watches) == 1:
            lines = [{"type": "MODIFIED", "object": secret_body("11", url="redis://two")},
                     {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                     {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                  "message": "too old"}}]
        elif len(watches) == 2:
            lines = [{"type": "DELETED", "object": secret_body("13", url="redis://two")}]
        else:
            await asyncio.sleep(3600)  # a quiet watch, until the test cancels it
        return httpx.Response(200, content="\n".join(json.dumps(line) for line in lines).encode() + b"\n")

    info = kopf.ConnectionInfo(server="https://cluster.example", token="t", insecure=True)
    client = applying.KubeClient.from_credentials(credentials.ServiceAccount(info), transport=httpx.MockTransport(answer))
    seen = []
    four = asyncio.Event()

    def changed(summary):
        seen.append(summary)
        if len(seen) == 4:
            four.set()

    follower = following.Follower.secret(client, namespace="omnia-system", name="source", on_change=changed)
    version = await follower.sync()
    task = asyncio.create_task(follower.run(resource_version=version))
    try:
        await asyncio.wait_for(four.wait(), timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
    assert [summary and summary.resource_version for summary in seen] == ["7", "11", "7", None]
    assert watches[:2] == ["10", "10"] and set(watches[2:]) <= {"13"}  # resumed from the last version seen
    assert all("redis://" not in repr(summary) for summary in seen)


def endpoint_slice(name: str, version: str, *addresses: str, ready: bool = True) -> dict:
    return {"metadata": {"name": name, "namespace": "omnia-system", "resourceVersion": version,
                         "labels": {"kubernetes.io/service-name": "omnia-activator"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": ready}} for address in addresses]}


async def test_the_follower_keeps_the_ready_addresses_of_each_of_a_services_endpoint_slices():
    """The activator's slices, selected by their Service's label: each slice's Ready addresses, by slice name;
    a change elsewhere in a slice (here: an endpoint not Ready joining) is no change, a deleted slice goes."""
    async def answer(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        assert request.url.path == "/apis/discovery.k8s.io/v1/namespaces/omnia-system/endpointslices"
        assert params["labelSelector"] == "kubernetes.io/service-name=omnia-activator"
        assert "fieldSelector" not in params
        if params.get("watch") != "true":
            return httpx.Response(200, json={"metadata": {"resourceVersion": "5"},
                                             "items": [endpoint_slice("a", "3", "10.0.0.2", "10.0.0.1")]})
        if params["resourceVersion"] != "5":
            await asyncio.sleep(3600)
        lines = [{"type": "ADDED", "object": endpoint_slice("b", "6", "10.0.0.3")},
                 {"type": "MODIFIED", "object": endpoint_slice("b", "7", "10.0.0.3")},
                 {"type": "DELETED", "object": endpoint_slice("a", "8", "10.0.0.2", "10.0.0.1")}]
        return httpx.Response(200, content="\n".join(json.dumps(line) for line in lines).encode() + b"\n")

    info = kopf.ConnectionInfo(server="https://cluster.example", token="t", insecure=True)
    client = applying.KubeClient.from_credentials(credentials.ServiceAccount(info), transport=httpx.MockTransport(answer))
    seen = []
    three = asyncio.Event()

    def changed(summaries):
        seen.append(dict(summaries))
        if len(seen) == 3:
            three.set()

    follower = following.Follower(
        client, "discovery.k8s.io/v1", "EndpointSlice", "omnia-system",
        applying.Selector(label="kubernetes.io/service-name=omnia-activator"),
        summarise=lambda body: tuple(routing.ready_addresses([body])), on_change=changed)
    version = await follower.sync()
    task = asyncio.create_task(follower.run(resource_version=version))
    try:
        await asyncio.wait_for(three.wait(), timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
    assert seen == [{"a": ("10.0.0.1", "10.0.0.2")},
                    {"a": ("10.0.0.1", "10.0.0.2"), "b": ("10.0.0.3",)},
                    {"b": ("10.0.0.3",)}]
