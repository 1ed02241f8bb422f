"""Writing to the Kubernetes API: server-side apply, status, Events.

kopf watches and caches; writes go through this thin httpx client instead of
kopf's internal one, which is not a public API. It makes exactly the calls
the operator needs and nothing else, so the RBAC rules in deploy/rbac/ can be
read off it. The transport is injectable (``httpx.MockTransport`` in tests).

Objects are applied with server-side apply under the field manager
``omnia-operator`` with ``force``: the operator owns the fields it sets and
leaves every other field (an autoscaler's ``replicas``, a mesh's
annotations) alone.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import kopf

from omnia.operator import credentials, labels

log = logging.getLogger(__name__)

# (apiVersion, kind) → plural, for every kind the operator reads or writes.
PLURALS: Mapping[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("v1", "Service"): "services",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("coordination.k8s.io/v1", "Lease"): "leases",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobjects",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("discovery.k8s.io/v1", "EndpointSlice"): "endpointslices",
    ("omnia.altairalabs.ai/v1alpha1", "AgentRuntime"): "agentruntimes",
    ("omnia.altairalabs.ai/v1alpha1", "PromptPack"): "promptpacks",
    ("omnia.altairalabs.ai/v1alpha1", "Provider"): "providers",
    ("omnia.altairalabs.ai/v1alpha1", "ToolRegistry"): "toolregistries",
}


class ApiError(Exception):
    """The API server refused a request; ``status`` and ``reason`` are its answer."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class Expired(ApiError):
    """410 Gone: a watch's resourceVersion is too old to resume from; list again."""


def resource_path(api_version: str, kind: str, *, namespace: str, name: str | None = None,
                  subresource: str | None = None) -> str:
    plural = PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    if name is not None:
        path += f"/{name}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


@dataclass(frozen=True)
class Selector:
    """Which objects of a kind a list or watch returns: by field, by label, or both."""

    field: str = ""
    label: str = ""

    @classmethod
    def name(cls, name: str) -> Selector:
        """One object by name: what a rule's ``resourceNames`` can narrow ``list`` and ``watch`` to."""
        return cls(field=f"metadata.name={name}")

    def params(self) -> dict[str, str]:
        params = {}
        if self.field:
            params["fieldSelector"] = self.field
        if self.label:
            params["labelSelector"] = self.label
        return params


class KubeApi(Protocol):
    """The writes and the few reads the reconcilers make."""

    async def apply(self, obj: Mapping[str, Any], *, field_manager: str = labels.OPERATOR) -> dict[str, Any]: ...

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...

    async def get(self, api_version: str, kind: str, *, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def delete(self, api_version: str, kind: str, *, namespace: str, name: str, uid: str) -> None: ...

    async def secret_data(self, *, namespace: str, name: str) -> dict[str, str] | None: ...

    async def patch_status(
        self, api_version: str, kind: str, *, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...

    async def patch_annotations(
        self, api_version: str, kind: str, *, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None: ...

    async def post_event(
        self, *, regarding: Mapping[str, str], type: str, reason: str, message: str
    ) -> None: ...


class KubeClient:
    """An async client for the calls in :class:`KubeApi`, over one ``httpx.AsyncClient``.

    Requests run concurrently on the client's connection pool; each method
    raises :class:`ApiError` (or :class:`NotFound`, :class:`Conflict`) for a
    refusal and ``httpx.HTTPError`` for a transport failure, which the work
    queue retries with backoff.
    """

    def __init__(self, http: httpx.AsyncClient, *, instance: str | None = None) -> None:
        self._http = http
        self._instance = instance or socket.gethostname()

    @classmethod
    def connect(cls, settings: kopf.OperatorSettings) -> KubeClient:
        """A client with the operator's credentials: its ServiceAccount, else the kubeconfig."""
        return cls.from_credentials(credentials.discover(settings))

    @classmethod
    def from_credentials(
        cls, source: credentials.Credentials, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> KubeClient:
        """A client with ``source``'s identity, on ``transport`` if given (tests)."""
        return cls(http_client(source, transport=transport))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def apply(self, obj: Mapping[str, Any], *, field_manager: str = labels.OPERATOR) -> dict[str, Any]:
        metadata = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], namespace=metadata["namespace"], name=metadata["name"])
        response = await self._http.patch(
            path,
            params={"fieldManager": field_manager, "force": "true"},
            content=json.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        return _json(response)

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        path = resource_path(obj["apiVersion"], obj["kind"], namespace=obj["metadata"]["namespace"])
        response = await self._http.post(path, params={"fieldManager": labels.OPERATOR}, json=obj)
        return _json(response)

    async def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT: an update that fails with :class:`Conflict` if the object changed since it was read."""
        metadata = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], namespace=metadata["namespace"], name=metadata["name"])
        response = await self._http.put(path, params={"fieldManager": labels.OPERATOR}, json=obj)
        return _json(response)

    async def get(self, api_version: str, kind: str, *, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self._http.get(resource_path(api_version, kind, namespace=namespace, name=name))
        if response.status_code == 404:
            return None
        return _json(response)

    async def secret_data(self, *, namespace: str, name: str) -> dict[str, str] | None:
        """One Secret's values, decoded (UTF-8 text only), or None when it does not exist.

        Read by a ``list`` narrowed to the one name, the verb the operator has
        for Secrets anyway, rather than a ``get`` it would need only for this
        (and the one a Role can narrow to a name for the default session
        stores' Secrets). ToolRegistry discovery and the mirroring of a
        default session store call it; the values are never cached.
        """
        item, _ = await self.list_one("v1", "Secret", namespace=namespace, name=name)
        if item is None:
            return None
        data = {}
        for key, value in (item.get("data") or {}).items():
            try:
                data[key] = base64.b64decode(value).decode()
            except (ValueError, UnicodeDecodeError):
                continue
        return data

    async def list_one(
        self, api_version: str, kind: str, *, namespace: str, name: str
    ) -> tuple[dict[str, Any] | None, str]:
        """The object named ``name`` (or None) and the list's resourceVersion, to watch from.

        A list narrowed by a field selector on the name: what RBAC allows
        when a rule grants ``list`` on that name only (``resourceNames``).
        """
        items, version = await self.list_selected(api_version, kind, namespace=namespace,
                                                  selector=Selector.name(name))
        return (items[0] if items else None), version

    async def list_selected(
        self, api_version: str, kind: str, *, namespace: str, selector: Selector
    ) -> tuple[list[dict[str, Any]], str]:
        """The objects ``selector`` selects and the list's resourceVersion, to watch from."""
        response = await self._http.get(resource_path(api_version, kind, namespace=namespace),
                                        params=selector.params())
        body = _json(response)
        return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion", ""))

    async def watch_selected(
        self, api_version: str, kind: str, *, namespace: str, selector: Selector, resource_version: str,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The changes of the objects ``selector`` selects after ``resource_version``: (type, object) pairs.

        Ends when the server closes the watch (after about ``timeout_seconds``);
        raises :class:`Expired` when ``resource_version`` is too old. Cancelling
        the consuming task closes the stream.
        """
        params = {**selector.params(), "watch": "true", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        path = resource_path(api_version, kind, namespace=namespace)
        timeout = httpx.Timeout(timeout_seconds + 30.0, connect=10.0)
        async with self._http.stream("GET", path, params=params, timeout=timeout) as response:
            if not response.is_success:
                await response.aread()
                _json(response)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    code = int(obj.get("code") or 500)
                    error = Expired if code == 410 else ApiError
                    raise error(code, obj.get("reason", ""), obj.get("message", ""))
                yield str(event.get("type", "")), obj

    async def delete(self, api_version: str, kind: str, *, namespace: str, name: str, uid: str) -> None:
        """Delete the object if it is still the one with ``uid`` (never a namesake created since)."""
        response = await self._http.request(
            "DELETE",
            resource_path(api_version, kind, namespace=namespace, name=name),
            json={"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid},
                  "propagationPolicy": "Background"},
        )
        if response.status_code in (404, 409):
            return
        _json(response)

    async def patch_status(
        self, api_version: str, kind: str, *, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        response = await self._http.patch(
            resource_path(api_version, kind, namespace=namespace, name=name, subresource="status"),
            content=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        _json(response)

    async def patch_annotations(
        self, api_version: str, kind: str, *, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        response = await self._http.patch(
            resource_path(api_version, kind, namespace=namespace, name=name),
            content=json.dumps({"metadata": {"annotations": dict(annotations)}}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        _json(response)

    async def post_event(self, *, regarding: Mapping[str, str], type: str, reason: str, message: str) -> None:
        """Record an Event about ``regarding`` (apiVersion, kind, namespace, name, uid).

        Events are best effort: a refused Event is logged, never fails a reconcile.
        """
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        namespace = regarding["namespace"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{regarding['name']}.", "namespace": namespace},
            "involvedObject": dict(regarding),
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": labels.OPERATOR},
            "reportingComponent": labels.OPERATOR,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            response = await self._http.post(resource_path("v1", "Event", namespace=namespace), json=event)
            _json(response)
        except (ApiError, httpx.HTTPError) as exc:
            log.warning("could not record event %s on %s/%s: %s", reason, namespace, regarding["name"], exc)


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.is_success:
        return response.json() if response.content else {}
    try:
        body = response.json()
        reason, message = body.get("reason", ""), body.get("message", response.text)
    except ValueError:
        reason, message = "", response.text
    error = {404: NotFound, 409: Conflict, 410: Expired}.get(response.status_code, ApiError)
    raise error(response.status_code, reason or response.reason_phrase, message)


# --- HTTP and TLS -------------------------------------------------------------


def http_client(
    source: credentials.Credentials, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An HTTP client for the API server with ``source``'s identity (the activator reads with it too)."""
    info = source.connection()
    return httpx.AsyncClient(
        base_url=info.server,
        verify=_ssl_context(info),
        auth=source.auth(),
        timeout=httpx.Timeout(30.0, connect=10.0),
        transport=transport,
    )


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    if info.ca_path:
        context = ssl.create_default_context(cafile=os.fspath(info.ca_path))
    elif info.ca_data:
        context = ssl.create_default_context(cadata=_pem(info.ca_data))
    else:
        context = ssl.create_default_context()
    certificate = _file(info.certificate_path, info.certificate_data)
    key = _file(info.private_key_path, info.private_key_data)
    if certificate and key:
        context.load_cert_chain(certificate, key)
    return context


def _pem(data: str | bytes) -> str:
    """Kubeconfig *-data fields are base64 of PEM; accept PEM as is too."""
    raw = data.encode() if isinstance(data, str) else data
    if raw.lstrip().startswith(b"-----BEGIN"):
        return raw.decode()
    return base64.b64decode(raw).decode()


def _file(path: Any, data: str | bytes | None) -> str | None:
    if path:
        return os.fspath(path)
    if not data:
        return None
    # ssl only loads client certificates from files; the file lives as long as the process.
    handle = tempfile.NamedTemporaryFile("w", prefix="omnia-operator-", suffix=".pem", delete=False)
    with handle:
        handle.write(_pem(data))
    os.chmod(handle.name, 0o600)
    return handle.name
