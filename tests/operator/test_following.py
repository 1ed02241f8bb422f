"""Following one Secret outside the served namespaces: a narrowed list, then a watch, on an in-process transport."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import kopf

from omnia.operator import applying, credentials, following


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

    follower = following.Follower(client, namespace="omnia-system", name="source", on_change=changed)
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
