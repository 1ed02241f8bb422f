"""``omnia activator`` says what to fix when it cannot start."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import yaml

from omnia._proto.externalscaler import externalscaler_pb2 as pb
from omnia._proto.externalscaler import externalscaler_pb2_grpc as pb_grpc

KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "test",
    "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
    "users": [{"name": "test", "user": {"token": "not-a-real-token"}}],
    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
}


def _activator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omnia", "activator", "--host=127.0.0.1", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_missing_kubeconfig_is_named_and_exits_2(tmp_path: Path) -> None:
    result = _activator(f"--kubeconfig={tmp_path / 'nowhere'}")
    assert result.returncode == 2
    assert "--kubeconfig" in result.stderr and "is not a file" in result.stderr


def test_a_busy_port_is_named_and_exits_2(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _activator(f"--kubeconfig={kubeconfig}", f"--port={port}", "--scaler-port=0")
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


class _EmptyLists(BaseHTTPRequestHandler):
    """An API server that has nothing: every list is empty."""

    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).paths.append(self.path)
        body = json.dumps({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                           "items": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_keda_polls_do_not_log_a_line_per_request_to_the_cluster(tmp_path: Path) -> None:
    """Each KEDA poll lists the agent's EndpointSlices and reads its pods' /metrics; httpx's INFO line for
    every one of those requests buried the activator's own lines on the real node."""
    api = ThreadingHTTPServer(("127.0.0.1", 0), _EmptyLists)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    config = json.loads(json.dumps(KUBECONFIG))
    config["clusters"][0]["cluster"] = {"server": f"http://127.0.0.1:{api.server_address[1]}"}
    kubeconfig.write_text(yaml.safe_dump(config))
    port, scaler_port = _free_ports(2)
    process = subprocess.Popen(
        [sys.executable, "-m", "omnia", "activator", "--host=127.0.0.1", f"--kubeconfig={kubeconfig}",
         f"--port={port}", f"--scaler-port={scaler_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{scaler_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            scaler = pb_grpc.ExternalScalerStub(channel)
            ref = pb.ScaledObjectRef(name="agent", namespace="team-a", scalerMetadata={"targetValue": "10"})
            assert scaler.IsActive(ref, timeout=10).result is False
        assert any("endpointslices" in path for path in _EmptyLists.paths)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
        api.shutdown()
        api.server_close()
    assert "activator listening" in stderr
    assert "HTTP Request" not in stderr
