"""A real kubelet node beside the KWOK nodes, for tests whose pods must run.

KWOK nodes never start a container, so a pod that would crash-loop on a real
node looks healthy there. This module joins one real node to the test control
plane: containerd (Debian's, with its own root, state and socket), runc, the
CNI bridge and host-local plugins, and the kubelet and kube-proxy built from
the same Kubernetes module as the control plane (scripts/build-control-plane).
The sandbox ("pause") image and Omnia's image are imported from the archives
scripts/build-image writes; nothing is ever pulled.

The node is tainted and labelled: only pods that ask for it land on it. A test
namespace opts in with :meth:`RealNode.namespace_annotations` (the API server
runs the PodNodeSelector and PodTolerationRestriction admission plugins), so
the operator's Deployments need no scheduling fields of their own.

Pods have only a route to their own bridge network (no default gateway, no
masquerading): nothing they run can reach beyond the machine. Services route
through kube-proxy (iptables mode); the ``kubernetes`` Service leads to a
small forwarder on the bridge's gateway address, because the API server
listens on loopback only.

A kubelet changes the machine: sysctls, iptables chains, mounts, cgroups,
network namespaces and fixed paths. :class:`MachineState` records them before
the node starts and :meth:`RealNode.stop` puts them back, so a machine is left
as it was found. There is one such node per machine (the kubelet's name
``localhost`` and port 10250 are fixed), hence one session-scoped fixture.
See docs/testing-control-plane.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import controlplane

NODE_NAME = "localhost"
NODE_LABEL = "omnia.altairalabs.ai/node"
NODE_LABEL_VALUE = "real"
TAINT_KEY = "omnia.altairalabs.ai/real-node"

POD_CIDR = "10.246.0.0/24"
GATEWAY = "10.246.0.1"
BRIDGE = "omnia-cni0"
CLUSTER_DOMAIN = "cluster.local"
REPO = Path(__file__).resolve().parents[2]

PAUSE_IMAGE = "localhost/pause:3.10-omnia"

STOP_TIMEOUT = 10.0
"""Seconds each part of the node gets to exit on SIGTERM before SIGKILL."""

# Values the kubelet, kube-proxy and the bridge plugin may write; recorded
# before the node starts and written back after.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)

# Fixed paths outside the work folder that the node's parts create.
FIXED_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/var/lib/cni"),
    Path("/run/netns"),
    Path("/run/containerd"),
    Path("/etc/cni"),
    Path("/run/containerd-omnia-test"),
)
CONTAINERD_STATE = Path("/run/containerd-omnia-test")

CGROUP_ROOT = Path("/sys/fs/cgroup")

# Where a running node keeps the machine's state as found, so that the next
# start can still restore it if this run was killed before it could.
STATE_FILE = Path("/run/omnia-test-node.json")


class RealNodeError(RuntimeError):
    """A part of the node did not start or did not become ready."""


@dataclasses.dataclass(frozen=True)
class Tools:
    """The system programs the node needs (Debian packages) and the built ones."""

    containerd: Path
    ctr: Path
    runc: Path
    cni_bin: Path
    kubelet: Path
    kube_proxy: Path
    coredns: Path

    @classmethod
    def locate(cls, binaries: controlplane.Binaries) -> Tools:
        def which(name: str) -> Path:
            found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
            return Path(found) if found else Path("/usr/bin") / name

        return cls(
            containerd=which("containerd"),
            ctr=which("ctr"),
            runc=which("runc"),
            cni_bin=Path("/usr/lib/cni"),
            kubelet=binaries.path("kubelet"),
            kube_proxy=binaries.path("kube-proxy"),
            coredns=binaries.path("coredns"),
        )

    def missing(self) -> list[str]:
        absent = [
            str(path)
            for path in (self.containerd, self.ctr, self.runc, self.kubelet, self.kube_proxy, self.coredns)
            if not os.access(path, os.X_OK)
        ]
        for plugin in ("bridge", "host-local", "loopback", "portmap"):
            if not os.access(self.cni_bin / plugin, os.X_OK):
                absent.append(str(self.cni_bin / plugin))
        return absent


# -- what the node changes on the machine -------------------------------------


@dataclasses.dataclass
class MachineState:
    """What a kubelet node changes, as found before it started."""

    sysctls: dict[str, str]
    iptables: dict[str, str]
    mounts: set[str]
    paths: set[Path]
    cgroups: set[Path]
    links: set[str]

    @classmethod
    def record(cls) -> MachineState:
        return cls(
            sysctls={name: value for name in SYSCTLS if (value := _read_sysctl(name)) is not None},
            iptables={tool: _iptables_save(tool) for tool in ("iptables", "ip6tables")},
            mounts=_mount_points(),
            paths={path for path in FIXED_PATHS if path.exists()},
            cgroups=set(_cgroup_dirs()),
            links=_links(),
        )

    def save(self, path: Path, *, workdir: Path, containerd_socket: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "workdir": str(workdir),
                    "containerd_socket": str(containerd_socket),
                    "sysctls": self.sysctls,
                    "iptables": self.iptables,
                    "mounts": sorted(self.mounts),
                    "paths": sorted(map(str, self.paths)),
                    "cgroups": sorted(map(str, self.cgroups)),
                    "links": sorted(self.links),
                }
            )
        )

    @classmethod
    def load(cls, path: Path) -> tuple[MachineState, Path, Path]:
        """The state a node saved, its work folder and containerd socket."""
        data = json.loads(path.read_text())
        state = cls(
            sysctls=data["sysctls"],
            iptables=data["iptables"],
            mounts=set(data["mounts"]),
            paths=set(map(Path, data["paths"])),
            cgroups=set(map(Path, data["cgroups"])),
            links=set(data["links"]),
        )
        return state, Path(data["workdir"]), Path(data["containerd_socket"])

    def restore(self, *, workdir: Path) -> list[str]:
        """Put everything back; returns what could not be (empty when all was).

        Only mounts under the node's own paths are undone: whatever else
        mounts meanwhile on the machine is not the node's.
        """
        problems: list[str] = []
        ours = (str(workdir), *(str(path) for path in FIXED_PATHS))
        new_mounts = {mount for mount in _mount_points() - self.mounts if mount.startswith(ours)}
        for mount in sorted(new_mounts, key=len, reverse=True):
            if subprocess.run(["umount", "--lazy", mount], capture_output=True).returncode != 0:
                problems.append(f"could not unmount {mount}")
        for link in _links() - self.links:
            subprocess.run(["ip", "link", "delete", link], capture_output=True)
        for tool, saved in self.iptables.items():
            if _iptables_save(tool) != saved and (error := _restore_iptables(tool, saved)):
                problems.append(error)
        for name, value in self.sysctls.items():
            if _read_sysctl(name) != value:
                _write_sysctl(name, value)
                if _read_sysctl(name) != value:
                    problems.append(f"could not restore {name}={value}")
        for directory in sorted(set(_cgroup_dirs()) - self.cgroups, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        for path in FIXED_PATHS:
            if path.exists() and path not in self.paths:
                shutil.rmtree(path, ignore_errors=True)
                if path.exists():
                    problems.append(f"could not remove {path}")
        return problems

    def differences(self, *, workdir: Path) -> list[str]:
        """What differs now from the recorded state (for the suite's own check)."""
        now = MachineState.record()
        ours = (str(workdir), *(str(path) for path in FIXED_PATHS))
        now.mounts = {mount for mount in now.mounts if mount in self.mounts or mount.startswith(ours)}
        found = [f"sysctl {name}: {value} -> {now.sysctls.get(name)}" for name, value in self.sysctls.items()
                 if now.sysctls.get(name) != value]
        found += [f"{tool} rules differ" for tool in self.iptables if now.iptables[tool] != self.iptables[tool]]
        found += [f"new mount {mount}" for mount in sorted(now.mounts - self.mounts)]
        found += [f"new path {path}" for path in sorted(now.paths - self.paths)]
        found += [f"new cgroup {path}" for path in sorted(now.cgroups - self.cgroups)]
        found += [f"new link {link}" for link in sorted(now.links - self.links)]
        return found


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / name.replace(".", "/")).write_text(value)


def _iptables_save(tool: str) -> str:
    """The rules without counters or comments, so two saves of one state compare equal.

    A table holding nothing but its built-in chains, accepting, is left out:
    that is how a table nobody used looks once its chains are gone.
    """
    result = subprocess.run([f"{tool}-save"], capture_output=True, text=True)
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            current = tables.setdefault(line, [])
        elif line.startswith(":"):
            # ":CHAIN POLICY [packets:bytes]": keep the name and policy only.
            current.append(" ".join(line.split()[:2]))
        else:
            current.append(line)
    kept = []
    for table, lines in tables.items():
        if all(line.startswith(":") and line.endswith(" ACCEPT") for line in lines):
            continue
        kept += [table, *lines, "COMMIT"]
    return "\n".join(kept) + "\n" if kept else ""


def _restore_iptables(tool: str, saved: str) -> str | None:
    """Put ``tool``'s tables back as ``saved`` has them; returns an error, or None."""
    saved_tables = {line for line in saved.splitlines() if line.startswith("*")}
    current = subprocess.run([f"{tool}-save"], capture_output=True, text=True).stdout
    for table in {line[1:] for line in current.splitlines() if line.startswith("*")}:
        if f"*{table}" not in saved_tables:
            # A table the node brought: empty its chains, then drop its own.
            subprocess.run([tool, "-w", "-t", table, "-F"], capture_output=True)
            subprocess.run([tool, "-w", "-t", table, "-X"], capture_output=True)
    if saved:
        restored = subprocess.run([f"{tool}-restore", "-w"], input=saved, text=True, capture_output=True)
        if restored.returncode != 0:
            return f"{tool}-restore failed: {restored.stderr.strip()}"
    return None


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return {line.split()[4] for line in mountinfo}


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _cgroup_dirs() -> Iterable[Path]:
    """The kubelet's cgroups: ``kubepods`` (and anything below it) in every hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / "kubepods"
        if top.is_dir() and not hierarchy.is_symlink():
            yield top
            for directory, subdirs, _ in os.walk(top):
                for sub in subdirs:
                    yield Path(directory) / sub


def _kill_cgroup_processes() -> None:
    """SIGKILL every process in the kubelet's cgroups (containers the shims left)."""
    for directory in _cgroup_dirs():
        procs = directory / "cgroup.procs"
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)


def _processes_with(fragment: str) -> list[int]:
    """PIDs whose command line contains ``fragment``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if fragment in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
    return found


# -- the API server, seen from the pods ---------------------------------------


class _Forwarder:
    """TCP from ``listen`` to ``target``, for pods that need the API server.

    The API server listens on loopback, which a pod cannot reach; this relays
    the bridge gateway's address to it. TLS passes through untouched.
    """

    def __init__(self, *, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server(listen, reuse_port=False)
        self._server.settimeout(0.5)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="apiserver-forwarder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        client.settimeout(None)

        def pipe(source: socket.socket, sink: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        other = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        other.start()
        pipe(client, upstream)
        other.join()
        client.close()
        upstream.close()


# -- the node -----------------------------------------------------------------


class RealNode:
    """containerd + kubelet + kube-proxy joined to ``plane`` as node ``localhost``.

    Use as a context manager; :meth:`stop` is idempotent and also runs at
    interpreter exit. ``images`` are docker-archive tars imported into
    containerd before the kubelet starts (they must include the pause image).
    """

    def __init__(
        self,
        *,
        plane: controlplane.ControlPlane,
        tools: Tools,
        images: Sequence[Path],
        image_aliases: Mapping[str, str] | None = None,
        workdir: Path,
        ready_timeout: float = 120.0,
    ) -> None:
        self.plane = plane
        self.tools = tools
        self.images = list(images)
        self.image_aliases = dict(image_aliases or {})
        self.workdir = Path(workdir)
        self.ready_timeout = ready_timeout
        self.machine: MachineState | None = None
        self._processes: list[controlplane.Process] = []
        self._forwarder: _Forwarder | None = None
        self._stopped = False
        self._finalizer = weakref.finalize(self, controlplane._stop_all, self._processes, STOP_TIMEOUT)

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> RealNode:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> RealNode:
        missing = self.tools.missing()
        if missing:
            raise RealNodeError(f"missing: {', '.join(missing)}; run scripts/install-test-deps")
        reclaim()
        self.machine = MachineState.record()
        self._containerd_socket = CONTAINERD_STATE / "containerd.sock"
        self.machine.save(STATE_FILE, workdir=self.workdir, containerd_socket=self._containerd_socket)
        deadline = time.monotonic() + self.ready_timeout
        try:
            self._prepare()
            self._start_containerd(deadline)
            self._import_images()
            self._prepare_network()
            self._grant_node_rights()
            self._start_dns(deadline)
            self._start_kubelet(deadline)
            self._start_kube_proxy(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every part and restore the machine; safe to call twice.

        Raises :class:`RealNodeError` when something could not be put back,
        so a dirty machine fails the suite instead of going unnoticed.
        """
        if self._stopped or self.machine is None:
            return
        self._stopped = True
        # A second Ctrl-C or SIGTERM must not cut the restoring short.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        try:
            self._stop()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _stop(self) -> None:
        kubelet = [p for p in self._processes if p.name == "kubelet"]
        for process in kubelet:
            process.stop(timeout=15)
        self._remove_pods()
        proxy = [p for p in self._processes if p.name == "kube-proxy"]
        for process in proxy:
            process.stop(timeout=10)
        if os.access(self.tools.kube_proxy, os.X_OK):
            subprocess.run(
                [str(self.tools.kube_proxy), "--cleanup", "--v=0"],
                capture_output=True,
                timeout=60,
            )
        if self._forwarder is not None:
            self._forwarder.stop()
        controlplane._stop_all(self._processes, STOP_TIMEOUT)
        # containerd-shim processes daemonise away from containerd; find them by our socket.
        for pid in _processes_with(str(self._containerd_socket)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _kill_cgroup_processes()
        time.sleep(0.5)
        problems = self.machine.restore(workdir=self.workdir)
        STATE_FILE.unlink(missing_ok=True)
        if problems:
            raise RealNodeError("the machine was not fully restored: " + "; ".join(problems))

    # -- for tests --------------------------------------------------------------

    @staticmethod
    def namespace_annotations() -> dict[str, str]:
        """Annotations that put every pod of a namespace on this node."""
        return {
            "scheduler.alpha.kubernetes.io/node-selector": f"{NODE_LABEL}={NODE_LABEL_VALUE}",
            "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
                [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
            ),
        }

    def crictl_images(self) -> list[str]:
        """Image references containerd holds for the kubelet."""
        result = self.ctr("images", "list", "--quiet")
        return result.stdout.split()

    def log_tail(self, name: str, lines: int = 60) -> str:
        for process in self._processes:
            if process.name == name:
                return process.log_tail(lines)
        return ""

    # -- start-up steps -----------------------------------------------------------

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._logs = self.workdir / "logs"
        self._logs.mkdir(exist_ok=True)
        self._containerd_dir = self.workdir / "containerd"
        self._cni_conf = self.workdir / "cni" / "net.d"
        self._cni_conf.mkdir(parents=True, exist_ok=True)
        self._env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
        self._env["PATH"] = f"{self._env.get('PATH', '')}:/usr/sbin:/sbin"

    def _start_containerd(self, deadline: float) -> None:
        root = self._containerd_dir / "root"
        state = self._containerd_socket.parent
        config = self._containerd_dir / "config.toml"
        root.mkdir(parents=True, exist_ok=True)
        config.write_text(
            _containerd_config(
                root=root,
                state=state,
                socket=self._containerd_socket,
                cni_bin=self.tools.cni_bin,
                cni_conf=self._cni_conf,
                runc=self.tools.runc,
            )
        )
        process = self._spawn("containerd", str(self.tools.containerd), f"--config={config}")
        self._wait(deadline=deadline, process=process, what="containerd", ready=self._containerd_ready)

    def _containerd_ready(self) -> bool:
        return self._containerd_socket.exists() and self.ctr("version").returncode == 0

    def _import_images(self) -> None:
        for archive in self.images:
            result = self.ctr("images", "import", "--no-unpack=false", str(archive), timeout=300)
            if result.returncode != 0:
                raise RealNodeError(f"importing {archive} failed: {result.stderr.strip()}")
        for alias, source in self.image_aliases.items():
            result = self.ctr("images", "tag", "--force", source, alias)
            if result.returncode != 0:
                raise RealNodeError(f"tagging {source} as {alias} failed: {result.stderr.strip()}")

    def _prepare_network(self) -> None:
        """The bridge, made before the first pod so the API forwarder can bind its gateway address."""
        prefix = POD_CIDR.split("/")[1]
        for command in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ):
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise RealNodeError(f"{' '.join(command)}: {result.stderr.strip()}")
        (self._cni_conf / "10-omnia.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "omnia-test",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            # Pods route only within their own network: nothing
                            # they run can send traffic off the machine.
                            "isDefaultGateway": False,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                                "routes": [{"dst": controlplane.SERVICE_CLUSTER_IP_RANGE}],
                                "dataDir": str(self.workdir / "cni" / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        port = int(self.plane.server_url.rsplit(":", 1)[1])
        self._forwarder = _Forwarder(listen=(GATEWAY, port), target=("127.0.0.1", port))
        self._forwarder.start()
        # The apiserver runs without an endpoint reconciler: the kubernetes
        # Service gets the forwarder as its one endpoint.
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes-omnia-test",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [GATEWAY], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
        self.plane.kubectl("apply", "-f", "-", input=json.dumps(slice_), check=True)

    def _grant_node_rights(self) -> None:
        """The test API server authorises with RBAC only (no Node authorizer)."""
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "omnia-test-nodes"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
        }
        self.plane.kubectl("apply", "-f", "-", input=json.dumps(binding), check=True)

    def _start_dns(self, deadline: float) -> None:
        """CoreDNS for the cluster domain, on the bridge gateway: the pods' only name server.

        It answers Services and pods of ``cluster.local`` and refuses every
        other name (no upstream), so nothing in a pod resolves the outside.
        """
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "omnia-test-dns"},
            "rules": [
                {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "omnia-test-dns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "omnia-test-dns"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "omnia-test-dns"}],
        }
        self.plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                 "items": [role, binding]}), check=True)
        identity = self.plane.add_user("omnia-test-dns")
        (health_port,) = controlplane._free_ports(1)
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {GATEWAY}
    errors
    health 127.0.0.1:{health_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {identity.kubeconfig}
        pods insecure
        ttl 5
    }}
    cache 5
}}
.:53 {{
    bind {GATEWAY}
    errors
}}
"""
        )
        process = self._spawn("coredns", str(self.tools.coredns), "-conf", str(corefile))
        url = f"http://127.0.0.1:{health_port}/health"
        self._wait(deadline=deadline, process=process, what="CoreDNS /health", ready=lambda: controlplane._get_ok(url))

    def _start_kubelet(self, deadline: float) -> None:
        identity = self.plane.add_user(f"system:node:{NODE_NAME}", groups=["system:nodes"])
        config = self.workdir / "kubelet-config.json"
        resolv = self.workdir / "resolv.conf"
        # Pods get no name server but the cluster's: the host's must not be asked.
        resolv.write_text("")
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": "127.0.0.1",
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": 0,
                    "readOnlyPort": 0,
                    # The API server has no kubelet client certificate here;
                    # acceptable for a loopback-only test node, nowhere else.
                    "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
                    "authorization": {"mode": "AlwaysAllow"},
                    "cgroupDriver": "cgroupfs",
                    "failCgroupV1": False,
                    "failSwapOn": False,
                    "evictionHard": {},
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "containerRuntimeEndpoint": f"unix://{self._containerd_socket}",
                    "clusterDomain": CLUSTER_DOMAIN,
                    "clusterDNS": [GATEWAY],
                    "resolvConf": str(resolv),
                    "podLogsDir": str(self.workdir / "pod-logs"),
                    "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
                    "serializeImagePulls": False,
                    "maxPods": 50,
                    "syncFrequency": "5s",
                    "fileCheckFrequency": "5s",
                    "nodeStatusReportFrequency": "10s",
                }
            )
        )
        process = self._spawn(
            "kubelet",
            str(self.tools.kubelet),
            f"--config={config}",
            f"--kubeconfig={identity.kubeconfig}",
            f"--root-dir={self.workdir / 'kubelet'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-labels={NODE_LABEL}={NODE_LABEL_VALUE}",
            "--v=1",
        )
        self._wait(deadline=deadline, process=process, what="node Ready", ready=self._node_ready)

    def _node_ready(self) -> bool:
        result = self.plane.kubectl("get", "node", NODE_NAME, "-o", "json")
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _start_kube_proxy(self, deadline: float) -> None:
        identity = self.plane.add_user("system:kube-proxy")
        config = self.workdir / "kube-proxy-config.json"
        health_port, metrics_port = controlplane._free_ports(2)
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "mode": "iptables",
                    "clientConnection": {"kubeconfig": str(identity.kubeconfig)},
                    "hostnameOverride": NODE_NAME,
                    "clusterCIDR": POD_CIDR,
                    "bindAddress": "127.0.0.1",
                    "healthzBindAddress": f"127.0.0.1:{health_port}",
                    "metricsBindAddress": f"127.0.0.1:{metrics_port}",
                    # Pods and Services on one bridge: the reply of a Service
                    # hop must come back through the host to be un-NATed.
                    "iptables": {"masqueradeAll": True, "localhostNodePorts": False, "syncPeriod": "5s"},
                    # Leave the machine's conntrack sysctls alone.
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                    "nodePortAddresses": ["127.0.0.1/32"],
                }
            )
        )
        process = self._spawn("kube-proxy", str(self.tools.kube_proxy), f"--config={config}", "--v=1")
        url = f"http://127.0.0.1:{health_port}/healthz"
        self._wait(deadline=deadline, process=process, what="kube-proxy /healthz",
                   ready=lambda: controlplane._get_ok(url))

    # -- helpers ------------------------------------------------------------------

    def ctr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.tools.ctr), f"--address={self._containerd_socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _spawn(self, name: str, *args: str) -> controlplane.Process:
        process = controlplane.Process(name=name, args=args, log_file=self._logs / f"{name}.log", env=self._env)
        self._processes.append(process)
        process.start()
        return process

    def _wait(self, *, deadline: float, process: controlplane.Process, what: str, ready) -> None:
        while True:
            code = process.exited()
            if code is not None:
                raise RealNodeError(
                    f"{process.name} exited with code {code} before {what}; "
                    f"{process.log_file}:\n{process.log_tail()}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise RealNodeError(f"{what} not ready after {self.ready_timeout:.0f}s; "
                                    f"{process.log_file}:\n{process.log_tail()}")
            time.sleep(0.2)

    def _remove_pods(self) -> None:
        """Stop and remove every pod sandbox through containerd, so shims and mounts go with them."""
        if not self._containerd_socket.exists():
            return
        tasks = self.ctr("tasks", "list", "--quiet")
        for task in tasks.stdout.split():
            self.ctr("tasks", "kill", "--signal=SIGKILL", "--all", task)
        time.sleep(0.5)
        for task in tasks.stdout.split():
            self.ctr("tasks", "delete", "--force", task)
        containers = self.ctr("containers", "list", "--quiet")
        for container in containers.stdout.split():
            self.ctr("containers", "delete", container)


def reclaim() -> None:
    """Restore what a node of an earlier run left, if that run died before it could."""
    if not STATE_FILE.exists():
        return
    try:
        machine, workdir, socket_path = MachineState.load(STATE_FILE)
    except (OSError, ValueError, KeyError):
        STATE_FILE.unlink(missing_ok=True)
        return
    for fragment in ("--hostname-override=" + NODE_NAME, str(socket_path), str(workdir)):
        for pid in _processes_with(fragment):
            if pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    _kill_cgroup_processes()
    time.sleep(0.5)
    machine.restore(workdir=workdir)
    STATE_FILE.unlink(missing_ok=True)


def _containerd_config(*, root: Path, state: Path, socket: Path, cni_bin: Path, cni_conf: Path, runc: Path) -> str:
    return f"""version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This container lacks CAP_SYS_RESOURCE: runc could not raise a sandbox's
  # oom_score_adj and every pod would fail to start.
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = ""
"""


COMPONENTS = ("omnia", "pause", "services")
"""The images scripts/build-image makes, all imported into the node."""


@dataclasses.dataclass(frozen=True)
class BuiltImages:
    """The archives scripts/build-image wrote, from the manifest it keeps beside them."""

    directory: Path
    manifest: dict

    @classmethod
    def locate(cls, environ: Mapping[str, str] = os.environ) -> BuiltImages:
        configured = environ.get("OMNIA_IMAGE_DIR")
        directory = Path(configured).expanduser() if configured else Path.home() / ".cache" / "omnia" / "image"
        try:
            manifest = json.loads((directory / "image.json").read_text())
        except (OSError, ValueError):
            manifest = {}
        return cls(directory=directory, manifest=manifest)

    def problem(self) -> str | None:
        if not all(name in self.manifest for name in COMPONENTS):
            return f"no image manifest in {self.directory}"
        missing = [str(path) for path in self.archives if not path.is_file()]
        if missing:
            return f"image archives missing: {', '.join(missing)}"
        # An image built from older sources would test them, not these.
        check = subprocess.run(
            [str(REPO / "scripts" / "build-image"), "--check"],
            env={**os.environ, "OMNIA_IMAGE_DIR": str(self.directory)}, capture_output=True, text=True,
        )
        return f"images in {self.directory}: {check.stderr.strip()}" if check.returncode else None

    @property
    def image(self) -> str:
        """Omnia's image reference, as the pods name it."""
        return self.manifest["omnia"]["reference"]

    @property
    def services(self) -> str:
        """The test services' image (Redis), for stores that run as pods."""
        return self.manifest["services"]["reference"]

    @property
    def archives(self) -> list[Path]:
        return [Path(self.manifest[name]["archive"]) for name in COMPONENTS]

    @property
    def aliases(self) -> dict[str, str]:
        return {}
