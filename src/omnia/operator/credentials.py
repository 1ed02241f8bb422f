"""Who the operator is to the API server: its ServiceAccount in a pod, else a kubeconfig.

In a pod the ServiceAccount's projected token is re-read whenever the kubelet
rotates it. Outside one, kubeconfigs are read by the official Kubernetes
client's loader, so what the kubeconfigs of managed clusters hold works:
client certificates, static tokens, token files and exec credential plugins
(``aws eks get-token``, ``gke-gcloud-auth-plugin``, ``kubelogin``). Their
tokens are short-lived: one is fetched again, in a worker thread so the event
loop never waits on the plugin, shortly before it expires and whenever the
API server answers 401.

A kubeconfig that yields no credentials at all (typically an exec plugin
that failed or is not installed) is an error: the operator never falls back
to anonymous requests, which would only fail later with a confusing 403.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import threading
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import httpx
import kopf
from kubernetes.client import Configuration
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION, KubeConfigLoader, KubeConfigMerger

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_SERVER = "https://kubernetes.default.svc"

# Fetch a new token this long before the current one expires, so a request in
# flight never carries one that lapses on the way.
_REFRESH_MARGIN = datetime.timedelta(seconds=60)


class Credentials:
    """A source of the operator's identity: ``connection`` for kopf, ``auth`` for httpx."""

    def connection(self) -> kopf.ConnectionInfo:
        raise NotImplementedError

    def auth(self) -> httpx.Auth | None:
        raise NotImplementedError


def discover(settings: kopf.OperatorSettings) -> Credentials:
    """The pod's ServiceAccount when there is one, else the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``)."""
    info = kopf.login_with_service_account(settings=settings)
    if info is not None:
        return ServiceAccount(info)
    return Kubeconfig.load(os.environ.get("KUBECONFIG") or os.path.expanduser(KUBE_CONFIG_DEFAULT_LOCATION))


class ServiceAccount(Credentials):
    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self._info = info

    def connection(self) -> kopf.ConnectionInfo:
        return self._info

    def auth(self) -> httpx.Auth | None:
        token_file = SERVICE_ACCOUNT_DIR / "token"
        if self._info.server == IN_CLUSTER_SERVER and token_file.exists():
            return _BearerAuth(_TokenFile(token_file))
        token = self._info.token or ""
        return _BearerAuth(lambda: token)


@dataclass(frozen=True)
class _Loaded:
    """One reading of the kubeconfig: where to connect and the credentials it gave."""

    configuration: Configuration
    authorization: str | None
    """The whole Authorization header value (``Bearer …`` or ``Basic …``), if the user has one."""
    expiry: datetime.datetime | None
    """When an exec plugin said its token expires (UTC); None for credentials that do not."""


class Kubeconfig(Credentials):
    """The current context of a kubeconfig (``path`` may list several files, ``:``-separated)."""

    def __init__(self, path: str, loaded: _Loaded) -> None:
        self.path = path
        self._loaded = loaded
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str) -> Kubeconfig:
        """Read the kubeconfig and run its exec plugin if it has one; raises ``kopf.LoginError``."""
        return cls(path, _read(path))

    def connection(self) -> kopf.ConnectionInfo:
        configuration = self._loaded.configuration
        scheme, _, token = (self._loaded.authorization or "").partition(" ")
        return kopf.ConnectionInfo(
            server=configuration.host,
            ca_path=configuration.ssl_ca_cert,
            insecure=not configuration.verify_ssl,
            scheme=scheme or None,
            token=token or None,
            certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file,
            expiration=self._loaded.expiry,
        )

    def auth(self) -> httpx.Auth | None:
        if self._loaded.authorization is None:
            return None  # client certificates only: the TLS handshake authenticates
        return _KubeconfigAuth(self)

    @property
    def authorization(self) -> str | None:
        return self._loaded.authorization

    def stale(self, now: datetime.datetime | None = None) -> bool:
        expiry = self._loaded.expiry
        if expiry is None:
            return False
        now = now or datetime.datetime.now(datetime.UTC)
        return now >= expiry - _REFRESH_MARGIN

    def reload(self, refused: str | None = None) -> None:
        """Read the credentials again (blocking: an exec plugin runs); once for concurrent callers.

        ``refused`` is the Authorization the API server just rejected: when
        another caller has already replaced it, there is nothing to do.
        """
        with self._lock:
            if refused is not None and self._loaded.authorization != refused:
                return
            if refused is None and not self.stale():
                return
            self._loaded = _read(self.path)


def _read(path: str) -> _Loaded:
    configuration = Configuration()
    try:
        merged = KubeConfigMerger(path)
        if merged.config is None:
            raise ConfigException(f"no kubeconfig found at {path}")
        loader = KubeConfigLoader(config_dict=merged.config, config_base_path=None)
        loader.load_and_set(configuration)
    except (ConfigException, OSError, ValueError) as exc:
        raise kopf.LoginError(f"cannot use the kubeconfig {path}: {exc}") from None
    authorization = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
    if not authorization and not configuration.cert_file:
        context = loader.current_context.get("name", "?") if loader.current_context else "?"
        raise kopf.LoginError(
            f"the kubeconfig {path} (context {context}) gave no credentials: no token, client certificate "
            "or password (if its user runs an exec plugin, the plugin failed or is not installed; "
            "try the command from the kubeconfig yourself)"
        )
    expiry = getattr(loader, "expiry", None)
    if isinstance(expiry, datetime.datetime) and expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.UTC)
    return _Loaded(configuration=configuration, authorization=authorization, expiry=expiry)


class _BearerAuth(httpx.Auth):
    """A bearer token read through ``source`` on every request, so a rotated token is picked up."""

    def __init__(self, source: Callable[[], str]) -> None:
        self._source = source

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._source()}"
        yield request


class _TokenFile:
    """The kubelet rewrites a projected ServiceAccount token before it expires; re-read it when it changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime = -1.0
        self._token = ""

    def __call__(self) -> str:
        mtime = self._path.stat().st_mtime
        if mtime != self._mtime:
            self._token = self._path.read_text().strip()
            self._mtime = mtime
        return self._token


class _KubeconfigAuth(httpx.Auth):
    """The kubeconfig's Authorization, fetched again before it expires and once after a 401."""

    def __init__(self, kubeconfig: Kubeconfig) -> None:
        self._kubeconfig = kubeconfig

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        kubeconfig = self._kubeconfig
        if kubeconfig.stale():
            await asyncio.to_thread(kubeconfig.reload)
        sent = kubeconfig.authorization or ""
        request.headers["Authorization"] = sent
        response = yield request
        if response.status_code == 401:
            await response.aread()
            await asyncio.to_thread(kubeconfig.reload, sent)
            request.headers["Authorization"] = kubeconfig.authorization or ""
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        kubeconfig = self._kubeconfig
        kubeconfig.reload()
        sent = kubeconfig.authorization or ""
        request.headers["Authorization"] = sent
        response = yield request
        if response.status_code == 401:
            response.read()
            kubeconfig.reload(sent)
            request.headers["Authorization"] = kubeconfig.authorization or ""
            yield request
