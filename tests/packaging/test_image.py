"""The built container image: its configuration, its files, and its commands run in a real container.

scripts/build-image (``make image``) builds the Dockerfile without a registry
and leaves a docker-archive and ``image.json`` in a cache folder outside the
repo. These tests read that archive as ``ctr images import`` or ``docker load``
would, unpack its layers, and run ``omnia`` inside with runc the way the Helm
chart runs it: as UID 10001, on a read-only root filesystem with only /tmp
writable, and without a network. A missing archive (or runc, or root) skips
them on a developer's machine and fails them in CI.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.packaging import tools
from tests.packaging.charts import REPO

PUBLIC_BASE = "python:3.11-slim-bookworm"
UID = 10001


def image_dir() -> Path:
    return Path(os.environ.get("OMNIA_IMAGE_DIR") or Path.home() / ".cache" / "omnia" / "image")


@dataclass(frozen=True)
class Archive:
    """One image of a docker-archive tar: its tag, configuration and layers (lowest first)."""

    path: Path
    tags: list[str]
    config: dict[str, Any]
    layers: list[str]

    @classmethod
    def read(cls, path: Path) -> Archive:
        with tarfile.open(path) as archive:
            (entry,) = json.load(archive.extractfile("manifest.json"))
            config = json.load(archive.extractfile(entry["Config"]))
        return cls(path=path, tags=entry["RepoTags"], config=config, layers=entry["Layers"])

    def unpack(self, root: Path) -> None:
        """The layers applied in order, whiteouts included, as a container runtime would."""
        with tarfile.open(self.path) as archive:
            for name in self.layers:
                with tarfile.open(fileobj=archive.extractfile(name)) as layer:
                    _apply(layer, root)


def _apply(layer: tarfile.TarFile, root: Path) -> None:
    kept = []
    for member in layer.getmembers():
        path = PurePosixPath(member.name)
        if path.name == ".wh..wh..opq":
            for child in (root / path.parent).glob("*"):
                _remove(child)
        elif path.name.startswith(".wh."):
            _remove(root / path.parent / path.name.removeprefix(".wh."))
        else:
            kept.append(member)
    layer.extractall(root, members=kept, numeric_owner=True, filter=_within_root)


def _within_root(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    """tarfile's ``tar`` filter (nothing lands outside ``destination``), but the image's own modes.

    The ``tar`` filter clears sticky and group/other-write bits; runc gives a
    tmpfs the mode of the folder it covers, so /tmp must keep its 1777.
    """
    return tarfile.tar_filter(member, destination).replace(mode=member.mode, deep=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    path = image_dir() / "image.json"
    if not path.is_file():
        tools.missing_tool(f"the image is not built ({path} is missing); run make image (scripts/build-image)")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def image(manifest: dict[str, Any]) -> Archive:
    if "omnia" not in manifest:
        tools.missing_tool("image.json lists no omnia image; run make image (scripts/build-image)")
    return Archive.read(Path(manifest["omnia"]["archive"]))


@pytest.fixture(scope="module")
def root_filesystem(image: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image's layers unpacked (about 1 GB, removed afterwards)."""
    root = tmp_path_factory.mktemp("image") / "rootfs"
    root.mkdir()
    image.unpack(root)
    yield root
    shutil.rmtree(root)


# --- the archive ----------------------------------------------------------------------------


def test_archive_is_tagged_with_the_reference_the_manifest_records(manifest: dict[str, Any], image: Archive) -> None:
    """``ctr images import`` names the image after the archive's tag; pods name it by the manifest's."""
    reference = manifest["omnia"]["reference"]
    assert image.tags == [reference]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert re.fullmatch(rf"localhost/omnia:{re.escape(version)}-[0-9a-f]{{12}}", reference)
    assert manifest["omnia"]["inputs"].startswith(reference.rpartition("-")[2])


def test_image_runs_as_the_numeric_non_root_user(image: Archive) -> None:
    assert image.config["config"]["User"] == f"{UID}:{UID}"


def test_entrypoint_is_omnia(image: Archive) -> None:
    assert image.config["config"]["Entrypoint"] == ["omnia"]


def test_last_layer_holds_the_virtual_environment(image: Archive) -> None:
    """The final stage copies only /opt/omnia on top of the base and its libraries."""
    with tarfile.open(image.path) as archive, tarfile.open(fileobj=archive.extractfile(image.layers[-1])) as layer:
        names = {PurePosixPath(name) for name in layer.getnames()}
    assert PurePosixPath("opt/omnia/bin/omnia") in names
    assert {name.parts[0] for name in names} == {"opt"}


def test_pause_image_is_one_static_binary(manifest: dict[str, Any]) -> None:
    """The real test node's sandbox image: nothing but /pause, run as upstream runs it."""
    if "pause" not in manifest:
        tools.missing_tool("image.json lists no pause image; run scripts/build-image pause")
    pause = Archive.read(Path(manifest["pause"]["archive"]))
    assert pause.tags == [manifest["pause"]["reference"]] == ["localhost/pause:3.10-omnia"]
    assert pause.config["config"]["Entrypoint"] == ["/pause"]
    assert pause.config["config"]["User"] == "65535:65535"
    with tarfile.open(pause.path) as archive, tarfile.open(fileobj=archive.extractfile(pause.layers[-1])) as layer:
        files = [member for member in layer.getmembers() if member.isfile()]
    assert [PurePosixPath(member.name) for member in files] == [PurePosixPath("pause")]
    assert files[0].mode & 0o111


# --- running it -----------------------------------------------------------------------------


class Runc:
    """Containers run by runc from one unpacked root filesystem, with a state folder of their own.

    A container that outlives its timeout is killed, and every container is
    deleted when ``run`` returns or raises.
    """

    def __init__(self, *, binary: str, rootfs: Path, state: Path, config: dict[str, Any]) -> None:
        self.binary = binary
        self.rootfs = rootfs
        self.state = state
        self.config = config

    def spec(self, args: Sequence[str], bundle: Path) -> dict[str, Any]:
        """runc's default spec, changed to how the Helm chart runs the image."""
        subprocess.run([self.binary, "spec", "--bundle", str(bundle)], check=True, capture_output=True)
        spec = json.loads((bundle / "config.json").read_text())
        user, _, group = self.config["User"].partition(":")
        spec["process"] |= {
            "terminal": False,
            "user": {"uid": int(user), "gid": int(group or user)},
            "args": [*args],
            "env": self.config["Env"],
            "cwd": self.config["WorkingDir"],
        }
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        # An emptyDir on /tmp, as the chart mounts; the rest stays read-only.
        spec["mounts"].append(
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
        )
        return spec

    def run(self, args: Sequence[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        name = f"omnia-image-test-{secrets.token_hex(4)}"
        bundle = self.state / "bundles" / name
        bundle.mkdir(parents=True)
        (bundle / "config.json").write_text(json.dumps(self.spec(args, bundle)))
        runc = [self.binary, "--root", str(self.state / "runc")]
        try:
            return subprocess.run(
                [*runc, "run", "--bundle", str(bundle), name],
                capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
            )
        finally:
            subprocess.run([*runc, "kill", name, "KILL"], capture_output=True, check=False)
            subprocess.run([*runc, "delete", "--force", name], capture_output=True, check=False)
            shutil.rmtree(bundle)


@pytest.fixture(scope="module")
def runc(image: Archive, root_filesystem: Path, tmp_path_factory: pytest.TempPathFactory) -> Runc:
    binary = shutil.which("runc")
    if binary is None:
        tools.missing_tool("runc is not installed (apt-get install runc; scripts/install-test-deps does)")
    if os.geteuid() != 0:
        tools.missing_tool("running the image with runc needs root")
    return Runc(binary=binary, rootfs=root_filesystem, state=tmp_path_factory.mktemp("runc"), config=image.config["config"])


def test_omnia_version_runs_in_the_image(runc: Runc) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = runc.run(["omnia", "version"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert version in result.stdout


@pytest.mark.parametrize("command", ["facade", "runtime", "operator"])
def test_each_component_starts_as_the_image_user_on_a_read_only_root(runc: Runc, command: str) -> None:
    """The three uses of the one image load their code without writing anything outside /tmp."""
    result = runc.run(["omnia", command, "--help"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage" in result.stdout


def test_process_runs_as_uid_10001_and_cannot_write_the_root(runc: Runc) -> None:
    script = (
        "import os, pathlib\n"
        "print(os.getuid(), os.getgid())\n"
        "pathlib.Path('/tmp/ok').write_text('x')\n"
        "try:\n"
        "    pathlib.Path('/opt/omnia/written').write_text('x')\n"
        "except OSError as error:\n"
        "    print(error.errno)\n"
    )
    result = runc.run(["python", "-c", script])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [str(UID), str(UID), "30"]  # 30: EROFS


def test_llama_cpp_finds_its_shared_libraries(runc: Runc) -> None:
    """xllamacpp links against libgomp and libstdc++: the final stage's apt step must have left both."""
    result = runc.run(["python", "-c", "import xllamacpp"])
    assert result.returncode == 0, result.stdout + result.stderr


# --- the recipe -----------------------------------------------------------------------------


def test_dockerfile_defaults_to_the_public_python_base() -> None:
    """Users build from the public image; scripts/build-image swaps the base with --build-arg."""
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    first_from = next(index for index, line in enumerate(instructions) if line.startswith("FROM "))
    assert f"ARG BASE_IMAGE={PUBLIC_BASE}" in instructions[:first_from]
    froms = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
