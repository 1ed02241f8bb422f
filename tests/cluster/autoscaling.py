"""The autoscaling parts of the test cluster: KEDA and metrics-server, as processes on loopback.

``scripts/build-control-plane keda metrics-server`` builds them from their Go
modules into the same cache folder as the control plane; this module runs them
against a running :class:`controlplane.ControlPlane`, which owns the processes
(they are stopped with it, or earlier by ``stop()``).

Both serve an aggregated API (``external.metrics.k8s.io`` for KEDA's metrics
API server, ``metrics.k8s.io`` for metrics-server) that kube-apiserver must
reach. An APIService names a Service, and a Service's addresses cannot be on
loopback (EndpointSlices refuse 127.0.0.0/8), but kube-apiserver resolves an
``ExternalName`` Service to its host name: so the Service is
``ExternalName: localhost`` and the APIService gives the port. kube-apiserver
verifies the server's certificate against the APIService's ``caBundle`` for
the name ``SERVICE.NAMESPACE.svc``, so the servers get certificates from the
control plane's CA with that name, and they trust kube-apiserver's
aggregation-layer client certificate through the
``extension-apiserver-authentication`` ConfigMap kube-apiserver writes.
See docs/testing-control-plane.md.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

import controlplane

REPO = Path(__file__).resolve().parents[2]

# The release scripts/build-control-plane builds and scripts/fetch-keda-crd fetches.
KEDA_VERSION = os.environ.get("OMNIA_KEDA_VERSION", "v2.21.0")

KEDA_NAMESPACE = "keda"
KEDA_BINARIES = ("keda-operator", "keda-adapter")
METRICS_SERVER_BINARY = "metrics-server"

# The real test node's label (realnode.py): metrics-server scrapes only
# kubelets that exist; KWOK's fake nodes have no kubelet API to scrape.
REAL_NODE_SELECTOR = "omnia.altairalabs.ai/node=real"

# Both run as members of system:masters, like KWOK: what they may do is not
# what the tests check, and KEDA's operator needs rights on whatever a
# ScaledObject may target (any /scale subresource).
SYSTEM_MASTERS = ("system:masters",)


class AutoscalingError(controlplane.ControlPlaneError):
    """A KEDA or metrics-server part is not built, did not start or was not served."""


def missing_binaries(binaries: controlplane.Binaries, names: Sequence[str]) -> list[str]:
    return [name for name in names if not (binaries.path(name).is_file())]


def fetch_keda_crds() -> Path:
    """The folder with all of KEDA's CRDs (``scripts/fetch-keda-crd --all``)."""
    fetched = subprocess.run(
        [str(REPO / "scripts" / "fetch-keda-crd"), "--all"], capture_output=True, text=True, check=False
    )
    if fetched.returncode != 0:
        raise AutoscalingError(f"could not fetch KEDA's CRDs: {fetched.stderr.strip()}")
    return Path(fetched.stdout.strip())


def install_keda_crds(plane: controlplane.ControlPlane) -> list[str]:
    """Apply every KEDA CRD and wait until each is Established; returns their names."""
    folder = fetch_keda_crds()
    files = sorted(folder.glob("*.yaml"))
    plane.kubectl("apply", "--server-side", "--force-conflicts", *(f"--filename={f}" for f in files), check=True)
    names = [_crd_name(path.name) for path in files]
    plane.kubectl("wait", "--for=condition=Established", *(f"crd/{name}" for name in names), "--timeout=60s",
                  check=True)
    return names


def _crd_name(file_name: str) -> str:
    # keda.sh_scaledobjects.yaml -> scaledobjects.keda.sh
    group, plural = file_name.removesuffix(".yaml").split("_", 1)
    return f"{plural}.{group}"


def register_api_service(
    plane: controlplane.ControlPlane,
    *,
    group: str,
    version: str,
    namespace: str,
    service: str,
    port: int,
    process: controlplane.Process,
    timeout: float = 60.0,
) -> None:
    """Serve ``group/version`` through kube-apiserver from a server on 127.0.0.1:``port``; wait until Available."""
    ca_bundle = base64.b64encode(plane.ca_file.read_bytes()).decode()
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{version}.{group}"},
            "spec": {
                "group": group,
                "version": version,
                "service": {"namespace": namespace, "name": service, "port": port},
                "caBundle": ca_bundle,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]
    plane.kubectl("apply", "--filename=-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
                  check=True)

    def available() -> bool:
        result = plane.kubectl("get", f"apiservice/{version}.{group}", "--output=json")
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    plane.wait_until(available, process=process, what=f"APIService {version}.{group} Available", timeout=timeout)


def unregister_api_service(plane: controlplane.ControlPlane, *, group: str, version: str) -> None:
    """Remove the APIService, so that discovery does not keep failing on a stopped server."""
    plane.kubectl("delete", f"apiservice/{version}.{group}", "--ignore-not-found", "--wait=false")


class Keda:
    """KEDA's operator and metrics API server, started against ``plane``.

    ``start()`` installs KEDA's CRDs, starts the operator (all namespaces, no
    leader election, metrics and health probes on free loopback ports, its
    metrics gRPC service on loopback with mutual TLS from the control plane's
    CA, certificate generation off), then the metrics API server (a client of
    that gRPC service) and registers it as ``v1beta1.external.metrics.k8s.io``,
    so the HPAs KEDA creates are evaluated by kube-controller-manager.
    ``stop()`` removes the APIService and stops both processes; the control
    plane stops them anyway when it stops.

    ``cluster_dns`` is the address of the cluster's DNS server (the real
    node's CoreDNS): KEDA's operator then resolves names as a pod in KEDA's
    namespace would, so that a trigger's ``scalerAddress`` may name a
    Service (``omnia-activator.omnia-system.svc:9090``) and reach it through
    kube-proxy. It gets its own ``/etc/resolv.conf`` in a mount namespace of
    its own (needs root); the machine's stays as it is.
    """

    def __init__(self, plane: controlplane.ControlPlane, *, with_metrics_api: bool = True,
                 cluster_dns: str | None = None, cluster_domain: str = "cluster.local",
                 ready_timeout: float = 120.0) -> None:
        self.plane = plane
        self.with_metrics_api = with_metrics_api
        self.cluster_dns = cluster_dns
        self.cluster_domain = cluster_domain
        self.ready_timeout = ready_timeout
        self.operator: controlplane.Process | None = None
        self.adapter: controlplane.Process | None = None
        self.crds: list[str] = []

    def __enter__(self) -> Keda:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Keda:
        missing = missing_binaries(self.plane.binaries, KEDA_BINARIES)
        if missing:
            raise AutoscalingError(
                f"missing in {self.plane.binaries.directory}: {', '.join(missing)}; "
                "run scripts/build-control-plane keda"
            )
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        plane = self.plane
        self.crds = install_keda_crds(plane)
        plane.kubectl("apply", "--filename=-", check=True, input=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEDA_NAMESPACE}}))
        self.workdir = plane.workdir / "keda"
        identity = plane.add_user("keda-operator", groups=SYSTEM_MASTERS)
        # One certificate for both ends of the operator's metrics gRPC
        # service (mutual TLS: the adapter presents it as a client), in the
        # file names KEDA reads from its --cert-dir.
        self.cert_dir = self._cert_dir(
            "keda-operator", dns_names=["localhost", f"keda-operator.{KEDA_NAMESPACE}.svc"], client=True
        )
        self.ca_dir = self.workdir / "custom-ca"
        self.ca_dir.mkdir(parents=True, exist_ok=True)
        (metrics_port, probe_port, grpc_port, adapter_port, adapter_metrics_port) = controlplane._free_ports(5)
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        env = {
            "KUBECONFIG": str(identity.kubeconfig),
            # "" is every namespace; the cluster-scoped objects' Secrets are read from KEDA's own.
            "WATCH_NAMESPACE": "",
            "POD_NAMESPACE": KEDA_NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
        }
        self.operator = plane.start_component(
            "keda-operator",
            f"--kubeconfig={identity.kubeconfig}",
            "--leader-elect=false",
            f"--metrics-bind-address=127.0.0.1:{metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{probe_port}",
            f"--metrics-service-bind-address={self.grpc_address}",
            # Certificates come from the control plane's CA; KEDA generating
            # and rotating its own (into a Secret, patching webhooks and the
            # APIService) stays off.
            "--enable-cert-rotation=false",
            f"--cert-dir={self.cert_dir}",
            f"--ca-dir={self.ca_dir}",
            "--enable-webhook-patching=false",
            "--enable-apiservice-patching=false",
            "--zap-log-level=info",
            "--zap-encoder=console",
            env=env,
            launcher=self._resolver_launcher(),
        )
        plane.wait_until(
            lambda: controlplane._get_ok(f"http://127.0.0.1:{probe_port}/readyz"),
            process=self.operator, what="keda-operator /readyz", timeout=self.ready_timeout,
        )
        if not self.with_metrics_api:
            return
        service = "keda-metrics-apiserver"
        serving_dir = self._cert_dir(
            service, dns_names=["localhost", f"{service}.{KEDA_NAMESPACE}.svc"], client=True
        )
        self.adapter = plane.start_component(
            "keda-adapter",
            f"--kubeconfig={identity.kubeconfig}",
            f"--lister-kubeconfig={identity.kubeconfig}",
            f"--authentication-kubeconfig={identity.kubeconfig}",
            f"--authorization-kubeconfig={identity.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={adapter_port}",
            f"--tls-cert-file={serving_dir / 'tls.crt'}",
            f"--tls-private-key-file={serving_dir / 'tls.key'}",
            # Also the client certificate and CA for the operator's gRPC service.
            f"--cert-dir={serving_dir}",
            f"--metrics-service-address={self.grpc_address}",
            # The adapter's own Prometheus endpoint; KEDA binds it on every
            # interface (":PORT"), there is no flag for the host.
            f"--port={adapter_metrics_port}",
            "--zap-log-level=info",
            "--zap-encoder=console",
            env=env,
        )
        register_api_service(
            plane, group="external.metrics.k8s.io", version="v1beta1", namespace=KEDA_NAMESPACE,
            service=service, port=adapter_port, process=self.adapter, timeout=self.ready_timeout,
        )

    def _resolver_launcher(self) -> list[str]:
        """``unshare`` + a bind mount over /etc/resolv.conf, then exec: the operator's view of DNS only."""
        if self.cluster_dns is None:
            return []
        domain = self.cluster_domain
        resolv = self.workdir / "resolv.conf"
        resolv.write_text(f"nameserver {self.cluster_dns}\n"
                          f"search {KEDA_NAMESPACE}.svc.{domain} svc.{domain} {domain}\n"
                          "options ndots:5\n")
        # unshare makes the new mount namespace's mounts private: the bind
        # mount is never seen outside, and goes away with the process.
        script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
        return ["unshare", "--mount", "--", "sh", "-c", script, "keda-resolver", str(resolv)]

    def _cert_dir(self, name: str, *, dns_names: Sequence[str], client: bool) -> Path:
        folder = self.workdir / "certs" / name
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = self.plane.issue_serving_certificate(name, dns_names=dns_names, client=client)
        shutil.copyfile(cert, folder / "tls.crt")
        shutil.copyfile(key, folder / "tls.key")
        (folder / "tls.key").chmod(0o600)
        shutil.copyfile(self.plane.ca_file, folder / "ca.crt")
        return folder

    def stop(self) -> None:
        if self.adapter is not None:
            unregister_api_service(self.plane, group="external.metrics.k8s.io", version="v1beta1")
            self.plane.stop_component(self.adapter)
            self.adapter = None
        if self.operator is not None:
            self.plane.stop_component(self.operator)
            self.operator = None

    def metrics(self) -> str:
        """The operator's Prometheus text."""
        return httpx.get(self.metrics_url, timeout=5.0).text


class MetricsServer:
    """metrics-server against ``plane``, serving ``v1beta1.metrics.k8s.io`` from 127.0.0.1.

    It scrapes the kubelets of the nodes matching ``node_selector`` (by
    default the real test node only: KWOK's fake nodes have no kubelet API)
    at the node's ``Hostname`` (then ``InternalIP``), port from the node
    status (the API server's own preference: the real node is named
    ``localhost`` and its kubelet listens on loopback only, while its
    InternalIP is an address of the machine where nothing answers), without verifying the kubelet's self-signed serving certificate
    (``--kubelet-insecure-tls``; the real node's kubelet has no certificate
    from the test CA). It authenticates to the kubelet with its client
    certificate (a system:masters user here). ``metric_resolution`` is how
    often it scrapes (it must exceed the kubelet request timeout, 10 s).
    """

    group = "metrics.k8s.io"
    version = "v1beta1"
    namespace = "kube-system"
    service = "metrics-server"

    def __init__(self, plane: controlplane.ControlPlane, *, node_selector: str = REAL_NODE_SELECTOR,
                 metric_resolution: str = "15s", ready_timeout: float = 120.0) -> None:
        self.plane = plane
        self.node_selector = node_selector
        self.metric_resolution = metric_resolution
        self.ready_timeout = ready_timeout
        self.process: controlplane.Process | None = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def args(self, *, kubeconfig: Path, port: int, cert: Path, key: Path) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={cert}",
            f"--tls-private-key-file={key}",
            "--kubelet-insecure-tls",
            "--kubelet-preferred-address-types=Hostname,InternalIP",
            "--kubelet-use-node-status-port",
            f"--node-selector={self.node_selector}",
            f"--metric-resolution={self.metric_resolution}",
        ]

    def start(self) -> MetricsServer:
        missing = missing_binaries(self.plane.binaries, [METRICS_SERVER_BINARY])
        if missing:
            raise AutoscalingError(
                f"missing in {self.plane.binaries.directory}: {', '.join(missing)}; "
                "run scripts/build-control-plane metrics-server"
            )
        try:
            identity = self.plane.add_user("metrics-server", groups=SYSTEM_MASTERS)
            cert, key = self.plane.issue_serving_certificate(
                "metrics-server", dns_names=["localhost", f"{self.service}.{self.namespace}.svc"]
            )
            (port,) = controlplane._free_ports(1)
            self.process = self.plane.start_component(
                "metrics-server", *self.args(kubeconfig=identity.kubeconfig, port=port, cert=cert, key=key)
            )
            register_api_service(
                self.plane, group=self.group, version=self.version, namespace=self.namespace,
                service=self.service, port=port, process=self.process, timeout=self.ready_timeout,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            unregister_api_service(self.plane, group=self.group, version=self.version)
            self.plane.stop_component(self.process)
            self.process = None


@contextlib.contextmanager
def metrics_server(plane: controlplane.ControlPlane, **options: object) -> Iterator[MetricsServer]:
    """``with metrics_server(plane) as server:`` — started, and stopped afterwards."""
    with MetricsServer(plane, **options) as server:  # type: ignore[arg-type]
        yield server
