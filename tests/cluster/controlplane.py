"""A real Kubernetes control plane on loopback, for integration tests.

The machines that run the tests have no container engine, so there is no kind
or k3d cluster to borrow. Instead, ``scripts/build-control-plane`` builds the
upstream binaries from Go modules (the way controller-runtime's envtest does)
and this module runs them as plain processes: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, plus KWOK, which plays the kubelet
for a few fake nodes so that scheduled pods become Running and Deployments
report available replicas without any container being started.

Everything listens on 127.0.0.1 on free ports and lives in one work folder
(PKI, kubeconfigs, etcd data, one log file per process), so several control
planes can run side by side and a failed start leaves its logs behind.

Authentication is by client certificates signed by a test CA and by
ServiceAccount tokens; authorization is RBAC only. The admin identity is in
``system:masters``; :meth:`ControlPlane.add_user` and
:meth:`ControlPlane.kubeconfig_for_token` give tests least-privilege
credentials. See docs/testing-control-plane.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KUBERNETES_VERSION = "v1.35.4"

# Pods get their IPs from KWOK's range and Services from the apiserver's; they
# must not overlap, and neither may clash with loopback.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

# The CN of the certificate kube-apiserver's aggregation layer presents.
FRONT_PROXY_CLIENT = "front-proxy-client"

# The binaries a control plane cannot start without; helm is built too, but
# only chart tests need it.
REQUIRED_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)


class ControlPlaneError(RuntimeError):
    """A component did not start, did not become ready, or exited early."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; unlike its base class, the message carries kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or '').strip()}"


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Where scripts/build-control-plane put the binaries and KWOK's stages."""

    directory: Path

    @classmethod
    def locate(cls, environ: Mapping[str, str] = os.environ) -> Binaries:
        """The cache folder the build script uses, honouring OMNIA_CONTROLPLANE_DIR."""
        configured = environ.get("OMNIA_CONTROLPLANE_DIR")
        if configured:
            return cls(Path(configured).expanduser())
        return cls(Path.home() / ".cache" / "omnia" / "controlplane")

    def path(self, name: str) -> Path:
        return self.directory / "bin" / name

    @property
    def kwok_stages(self) -> Path:
        """KWOK's ``kustomize/stage/fast`` stages, as one multi-document file."""
        return self.directory / "kwok" / "stages-fast.yaml"

    def missing(self) -> list[str]:
        """Names of required files that are not there (empty when all are)."""
        absent = [name for name in REQUIRED_BINARIES if not os.access(self.path(name), os.X_OK)]
        if not self.kwok_stages.is_file():
            absent.append(str(self.kwok_stages.relative_to(self.directory)))
        return absent


@dataclasses.dataclass(frozen=True)
class ClientIdentity:
    """A client certificate user and the kubeconfig that authenticates as it."""

    name: str
    groups: tuple[str, ...]
    cert_file: Path
    key_file: Path
    kubeconfig: Path


@dataclasses.dataclass(frozen=True)
class _Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


class _Pki:
    """Test-only certificates: one CA signs serving and client certificates.

    ECDSA P-256 keys, because generating them takes microseconds where RSA
    takes a noticeable share of a test's start-up.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "omnia-test-ca")])
        cert = (
            self._builder(subject=name, issuer=name, public_key=key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        self.authority = _Authority(cert=cert, key=key)
        self.ca_file, self.ca_key_file = self._write("ca", cert, key)

    def issue_client(self, *, name: str, groups: Sequence[str]) -> tuple[Path, Path]:
        """Kubernetes reads the user from the CN and its groups from the O attributes."""
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
            + [x509.NameAttribute(NameOID.COMMON_NAME, name)]
        )
        return self._issue(
            file_stem=f"client-{_file_safe(name)}",
            subject=subject,
            usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
            alternative_names=None,
        )

    def issue_server(
        self, *, name: str, dns_names: Sequence[str], ips: Sequence[str], client: bool = False
    ) -> tuple[Path, Path]:
        """A serving certificate; with ``client`` also good for client authentication (mutual TLS peers)."""
        alternative_names = x509.SubjectAlternativeName(
            [x509.DNSName(dns) for dns in dns_names]
            + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        )
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, *([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])]
        return self._issue(
            file_stem=f"serving-{name}",
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
            usages=usages,
            alternative_names=alternative_names,
        )

    def signing_key(self, name: str) -> tuple[Path, Path]:
        """A bare key pair (private, public), e.g. for ServiceAccount tokens."""
        key = ec.generate_private_key(ec.SECP256R1())
        private = self.directory / f"{name}.key"
        public = self.directory / f"{name}.pub"
        private.write_bytes(_private_pem(key))
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        private.chmod(0o600)
        return private, public

    def _issue(
        self,
        *,
        file_stem: str,
        subject: x509.Name,
        usages: Sequence[x509.ObjectIdentifier],
        alternative_names: x509.SubjectAlternativeName | None,
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            self._builder(subject=subject, issuer=self.authority.cert.subject, public_key=key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        )
        if alternative_names is not None:
            builder = builder.add_extension(alternative_names, critical=False)
        cert = builder.sign(self.authority.key, hashes.SHA256())
        return self._write(file_stem, cert, key)

    @staticmethod
    def _builder(*, subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
        )

    def _write(self, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        cert_file = self.directory / f"{stem}.crt"
        key_file = self.directory / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_private_pem(key))
        key_file.chmod(0o600)
        return cert_file, key_file


class Process:
    """One component: started with its output in a log file, stopped for sure."""

    def __init__(self, *, name: str, args: Sequence[str], log_file: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.args = list(args)
        self.log_file = log_file
        self._env = dict(env)
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_file.open("ab")
        self._popen = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return None if self._popen is None else self._popen.poll()

    def stop(self, *, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps the process."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + KWOK.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (stop is
    idempotent and also runs at interpreter exit, so no process outlives the
    test session even when a test fails or is interrupted). ``start`` blocks
    until every component is healthy, the fake nodes are Ready and the
    ``default`` ServiceAccount exists, so tests can create pods at once.

    Attributes available after :meth:`start`:

    - ``server_url``: ``https://127.0.0.1:PORT`` of kube-apiserver
    - ``kubeconfig``: admin kubeconfig (user ``omnia-admin`` in ``system:masters``)
    - ``ca_file``: the CA that signs the serving and client certificates
    - ``admin``: the admin :class:`ClientIdentity`
    - ``node_names``: the fake KWOK nodes
    - ``etcd_url``: etcd's client URL

    ``controller_manager_args`` are added to kube-controller-manager's flags
    (the operator benchmark raises its client QPS and sync workers with them).
    """

    def __init__(
        self,
        *,
        binaries: Binaries,
        workdir: Path,
        node_count: int = 3,
        ready_timeout: float = 180.0,
        stop_timeout: float = 15.0,
        controller_manager_args: Sequence[str] = (),
    ) -> None:
        self.binaries = binaries
        self.controller_manager_args = list(controller_manager_args)
        self.workdir = Path(workdir)
        self.node_count = node_count
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.node_names = [f"kwok-node-{index}" for index in range(node_count)]
        self._processes: list[Process] = []
        self._finalizer = weakref.finalize(self, _stop_all, self._processes, stop_timeout)
        self.server_url = ""
        self.etcd_url = ""

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start every component and wait until the cluster can run pods.

        Raises :class:`ControlPlaneError` (with the failing component's log
        tail) if something does not become ready within ``ready_timeout``;
        whatever had started is stopped first.
        """
        missing = self.binaries.missing()
        if missing:
            raise ControlPlaneError(
                f"missing in {self.binaries.directory}: {', '.join(missing)}; run scripts/build-control-plane"
            )
        deadline = time.monotonic() + self.ready_timeout
        try:
            self._prepare()
            self._start_etcd(deadline)
            self._start_apiserver(deadline)
            self._start_controller_manager(deadline)
            self._start_scheduler(deadline)
            self._start_kwok(deadline)
            self._register_nodes(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the components in reverse start order; safe to call twice."""
        _stop_all(self._processes, self.stop_timeout)

    def start_component(
        self, name: str, *args: str, binary: str | None = None, env: Mapping[str, str] | None = None,
        launcher: Sequence[str] = (),
    ) -> Process:
        """Start one more process from the built binaries, owned by this control plane.

        It logs to ``WORKDIR/logs/NAME.log``, runs with the control plane's
        environment plus ``env``, and is stopped by :meth:`stop` (before the
        components it depends on) unless :meth:`stop_component` stopped it
        first. ``launcher`` is a command that must end by exec-ing the
        binary it is given (so the process stopped is the component itself).
        Used for KEDA and metrics-server (``autoscaling.py``).
        """
        return self._spawn(name, *args, binary=binary, env=env, launcher=launcher)

    def stop_component(self, process: Process) -> None:
        """Stop a process started by :meth:`start_component` (SIGTERM, then SIGKILL) and forget it."""
        process.stop(timeout=self.stop_timeout)
        if process in self._processes:
            self._processes.remove(process)

    def issue_serving_certificate(
        self, name: str, *, dns_names: Sequence[str] = ("localhost",), ips: Sequence[str] = ("127.0.0.1",),
        client: bool = False,
    ) -> tuple[Path, Path]:
        """A certificate and key signed by the test CA (``ca_file``) for a server on loopback.

        With ``client`` the certificate may also authenticate its holder as a
        TLS client (for peers that use one certificate both ways).
        """
        return self._pki.issue_server(name=_file_safe(name), dns_names=dns_names, ips=ips, client=client)

    def wait_until(self, ready: Callable[[], bool], *, process: Process, what: str, timeout: float) -> None:
        """Poll ``ready`` until it is true; fail with ``process``'s log tail if it exits or time runs out."""
        self._wait(deadline=time.monotonic() + timeout, process=process, what=what, ready=ready, timeout=timeout)

    def pids(self) -> dict[str, int]:
        """Process ids of the running components, by name."""
        return {p.name: p.pid for p in self._processes if p.pid is not None and p.exited() is None}

    # -- credentials --------------------------------------------------------

    def add_user(self, name: str, *, groups: Sequence[str] = ()) -> ClientIdentity:
        """A client-certificate user (CN=name, O=groups) and its kubeconfig.

        The user has no permissions beyond what RBAC grants ``name`` or its
        groups (plus ``system:authenticated``'s discovery rules).
        """
        cert_file, key_file = self._pki.issue_client(name=name, groups=groups)
        kubeconfig = self._write_kubeconfig(
            stem=f"user-{_file_safe(name)}",
            user={"client-certificate": str(cert_file), "client-key": str(key_file)},
        )
        return ClientIdentity(
            name=name, groups=tuple(groups), cert_file=cert_file, key_file=key_file, kubeconfig=kubeconfig
        )

    def kubeconfig_for_token(self, token: str, *, name: str) -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        return self._write_kubeconfig(stem=f"token-{_file_safe(name)}", user={"token": token})

    def create_token(self, *, namespace: str, service_account: str, duration: str = "1h") -> str:
        """A bound token for an existing ServiceAccount (``kubectl create token``)."""
        result = self.kubectl(
            "create", "token", service_account, f"--namespace={namespace}", f"--duration={duration}", check=True
        )
        return result.stdout.strip()

    def ssl_context(self, identity: ClientIdentity | None = None) -> ssl.SSLContext:
        """Trusts the test CA and presents ``identity``'s certificate (admin by default)."""
        identity = identity or self.admin
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(identity.cert_file), str(identity.key_file))
        return context

    def http_client(self, identity: ClientIdentity | None = None, **kwargs: object) -> httpx.Client:
        """An httpx client for the API server as ``identity`` (admin by default)."""
        return httpx.Client(base_url=self.server_url, verify=self.ssl_context(identity), **kwargs)

    def token_http_client(self, token: str, **kwargs: object) -> httpx.Client:
        """An httpx client for the API server that sends ``token`` as a bearer token."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(
            base_url=self.server_url,
            verify=context,
            headers={"Authorization": f"Bearer {token}"},
            **kwargs,
        )

    # -- kubectl ------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = False,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl (as admin unless ``kubeconfig`` is given).

        Returns the CompletedProcess with text stdout/stderr; with
        ``check=True`` a non-zero exit raises :class:`KubectlError`.
        """
        command = [str(self.binaries.path("kubectl")), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, env=self._env, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, output=result.stdout, stderr=result.stderr)
        return result

    # -- start-up steps -----------------------------------------------------

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._logs = self.workdir / "logs"
        self._logs.mkdir(exist_ok=True)
        self._kubeconfigs = self.workdir / "kubeconfigs"
        self._kubeconfigs.mkdir(exist_ok=True)
        # No KUBECONFIG from the developer's shell may leak into a component,
        # and kubectl's discovery cache stays out of $HOME.
        self._env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
        self._env["KUBECACHEDIR"] = str(self.workdir / "kubectl-cache")

        self._pki = _Pki(self.workdir / "pki")
        self.ca_file = self._pki.ca_file
        self._ports = _free_ports(6)
        etcd_client, self._etcd_peer, apiserver, self._controller_manager_port, self._scheduler_port, self._kwok_port = (
            self._ports
        )
        self.etcd_url = f"http://127.0.0.1:{etcd_client}"
        self.server_url = f"https://127.0.0.1:{apiserver}"
        self._apiserver_port = apiserver
        self.admin = self.add_user("omnia-admin", groups=["system:masters"])
        self.kubeconfig = self.admin.kubeconfig

    def _start_etcd(self, deadline: float) -> None:
        data = self.workdir / "etcd"
        peer = f"http://127.0.0.1:{self._etcd_peer}"
        etcd = self._spawn(
            "etcd",
            f"--data-dir={data}",
            "--name=default",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            # Test data is thrown away: durability only costs time here.
            "--unsafe-no-fsync",
            "--log-level=warn",
        )
        self._wait(deadline=deadline, process=etcd, what="etcd /health", ready=lambda: _get_ok(f"{self.etcd_url}/health"))

    def _start_apiserver(self, deadline: float) -> None:
        serving_cert, serving_key = self._pki.issue_server(
            name="kube-apiserver",
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ips=["127.0.0.1", str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()))],
        )
        self._sa_private, sa_public = self._pki.signing_key("service-accounts")
        # The aggregation layer's client certificate: kube-apiserver presents
        # it when it proxies a request to an aggregated API server (KEDA's
        # metrics API, metrics-server), which trusts the X-Remote-* headers
        # of that CN only.
        proxy_cert, proxy_key = self._pki.issue_client(name=FRONT_PROXY_CLIENT, groups=())
        apiserver = self._spawn(
            "kube-apiserver",
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self._apiserver_port}",
            f"--tls-cert-file={serving_cert}",
            f"--tls-private-key-file={serving_key}",
            f"--client-ca-file={self.ca_file}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_public}",
            f"--service-account-signing-key-file={self._sa_private}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # Nothing in a pod can reach 127.0.0.1 anyway; without this the
            # apiserver would keep rewriting the kubernetes Service's endpoints.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            # Tests choose real or fake pods per namespace: a namespace's
            # node selector and default tolerations come from its annotations.
            "--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
            "--profiling=false",
            f"--cert-dir={self.workdir / 'kube-apiserver'}",
            f"--proxy-client-cert-file={proxy_cert}",
            f"--proxy-client-key-file={proxy_key}",
            f"--requestheader-client-ca-file={self.ca_file}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        )
        with httpx.Client(verify=self.ssl_context(), timeout=5.0) as client:
            self._wait(
                deadline=deadline,
                process=apiserver,
                what="kube-apiserver /readyz",
                ready=lambda: _get_ok(f"{self.server_url}/readyz", client),
            )

    def _start_controller_manager(self, deadline: float) -> None:
        kubeconfig = self.add_user("system:kube-controller-manager").kubeconfig
        process = self._spawn(
            "kube-controller-manager",
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            # As in kubeadm clusters: each controller acts as its own
            # ServiceAccount with its own bootstrap RBAC role; the
            # system:kube-controller-manager user may do little else.
            "--use-service-account-credentials=true",
            "--bind-address=127.0.0.1",
            f"--secure-port={self._controller_manager_port}",
            f"--cert-dir={self.workdir / 'kube-controller-manager'}",
            f"--service-account-private-key-file={self._sa_private}",
            f"--root-ca-file={self.ca_file}",
            f"--cluster-signing-cert-file={self.ca_file}",
            f"--cluster-signing-key-file={self._pki.ca_key_file}",
            *self.controller_manager_args,
        )
        url = f"https://127.0.0.1:{self._controller_manager_port}/healthz"
        self._wait(
            deadline=deadline,
            process=process,
            what="kube-controller-manager /healthz",
            ready=lambda: _get_ok(url, verify=False),
        )

    def _start_scheduler(self, deadline: float) -> None:
        kubeconfig = self.add_user("system:kube-scheduler").kubeconfig
        process = self._spawn(
            "kube-scheduler",
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self._scheduler_port}",
            f"--cert-dir={self.workdir / 'kube-scheduler'}",
        )
        url = f"https://127.0.0.1:{self._scheduler_port}/healthz"
        self._wait(
            deadline=deadline, process=process, what="kube-scheduler /healthz", ready=lambda: _get_ok(url, verify=False)
        )

    def _start_kwok(self, deadline: float) -> None:
        # KWOK writes node and pod status, leases and events for every fake
        # node: in a real cluster that is many kubelets' worth of rights.
        kwok = self.add_user("kwok", groups=["system:masters"])
        process = self._spawn(
            "kwok",
            f"--kubeconfig={kwok.kubeconfig}",
            f"--config={self.binaries.kwok_stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            # Without node leases the only heartbeat is the node status stage
            # (about once a minute), longer than kube-controller-manager's
            # 50 s grace period: nodes would flap NotReady and their pods
            # would be marked unready for good (KWOK readies Pending pods only).
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{self._kwok_port}",
        )
        url = f"http://127.0.0.1:{self._kwok_port}/healthz"
        self._wait(deadline=deadline, process=process, what="kwok /healthz", ready=lambda: _get_ok(url))

    def _register_nodes(self, deadline: float) -> None:
        nodes = {"apiVersion": "v1", "kind": "List", "items": [_fake_node(name) for name in self.node_names]}
        self.kubectl("apply", "-f", "-", input=json.dumps(nodes), check=True)
        remaining = max(1, int(deadline - time.monotonic()))
        self.kubectl(
            "wait", "--for=condition=Ready", "node", *self.node_names, f"--timeout={remaining}s", check=True,
            timeout=remaining + 30,
        )
        # The node lifecycle controller lifts its not-ready taint a moment
        # after Ready; until then nothing schedules.
        self._wait(
            deadline=deadline,
            process=self._process("kube-controller-manager"),
            what="untainted nodes",
            ready=self._nodes_untainted,
        )
        # The ServiceAccount admission plugin rejects pods until the
        # controller-manager has created the namespace's default account.
        self._wait(
            deadline=deadline,
            process=self._process("kube-controller-manager"),
            what="the default ServiceAccount",
            ready=lambda: self.kubectl("get", "serviceaccount", "default", "--namespace=default").returncode == 0,
        )

    # -- helpers ------------------------------------------------------------

    def _nodes_untainted(self) -> bool:
        result = self.kubectl("get", "nodes", "--output=json")
        if result.returncode != 0:
            return False
        nodes = [node for node in json.loads(result.stdout)["items"] if node["metadata"]["name"] in self.node_names]
        return len(nodes) == len(self.node_names) and not any(node["spec"].get("taints") for node in nodes)

    def _process(self, name: str) -> Process:
        return next(process for process in self._processes if process.name == name)

    def _spawn(
        self, name: str, *args: str, binary: str | None = None, env: Mapping[str, str] | None = None,
        launcher: Sequence[str] = (),
    ) -> Process:
        process = Process(
            name=name,
            args=[*launcher, str(self.binaries.path(binary or name)), *args],
            log_file=self._logs / f"{_file_safe(name)}.log",
            env={**self._env, **(env or {})},
        )
        self._processes.append(process)
        process.start()
        return process

    def _wait(
        self, *, deadline: float, process: Process, what: str, ready: Callable[[], bool], timeout: float | None = None
    ) -> None:
        while True:
            code = process.exited()
            if code is not None:
                raise ControlPlaneError(
                    f"{process.name} exited with code {code} before {what} was ready; "
                    f"{process.log_file}:\n{process.log_tail()}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{what} not ready after {timeout or self.ready_timeout:.0f}s; "
                    f"{process.log_file}:\n{process.log_tail()}"
                )
            time.sleep(0.2)

    def _write_kubeconfig(self, *, stem: str, user: Mapping[str, str]) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "omnia-test",
                    "cluster": {"server": self.server_url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": stem, "user": dict(user)}],
            "contexts": [{"name": stem, "context": {"cluster": "omnia-test", "user": stem}}],
            "current-context": stem,
        }
        path = self._kubeconfigs / f"{stem}.kubeconfig"
        # JSON is YAML, so every Kubernetes client reads this file.
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path


def _fake_node(name: str) -> dict[str, object]:
    index = int(name.rsplit("-", 1)[-1])
    resources = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
                # Distinct zones so that spreading and disruption budgets have
                # something to spread across.
                "topology.kubernetes.io/zone": f"zone-{chr(ord('a') + index % 26)}",
            },
        },
        "spec": {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
        },
    }


def _stop_all(processes: list[Process], timeout: float) -> None:
    while processes:
        processes.pop().stop(timeout=timeout)


def _get_ok(url: str, client: httpx.Client | None = None, *, verify: bool = True) -> bool:
    try:
        if client is not None:
            return client.get(url).status_code == 200
        return httpx.get(url, verify=verify, timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open until every one is chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _file_safe(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child if the test process dies without cleaning up."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
