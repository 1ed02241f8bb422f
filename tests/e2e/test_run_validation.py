"""`omnia run` checks everything before it starts anything.

Each bad input ends with exit code 2 and one line naming the file and field
(or the option) to fix, before a runtime or facade process exists: a mistake
is reported where it was made, never as a child's exit code or a traceback.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .processes import free_port

GROUP = "apiVersion: omnia.altairalabs.ai/v1alpha1\n"


def _pack(spec: str) -> str:
    return GROUP + f"kind: PromptPack\nmetadata: {{name: p}}\nspec: {spec}\n"


MOCK = GROUP + "kind: Provider\nmetadata: {name: m}\nspec: {type: mock, mock: {replies: [{text: ok}]}}\n"


def _agent(spec: str = "{promptPackRef: {name: p}, providerRef: {name: m}}") -> str:
    return GROUP + f"kind: AgentRuntime\nmetadata: {{name: a}}\nspec: {spec}\n"


def _documents(*documents: str) -> str:
    return "---\n".join(documents)


GOOD_PACK = _pack("{version: 1.0.0, systemPrompt: hi}")
REDIS_AGENT = _agent("{promptPackRef: {name: p}, providerRef: {name: m}, session: {type: redis}}")
POSTGRES_AGENT = _agent("{promptPackRef: {name: p}, providerRef: {name: m}, session: {type: postgres}}")


def _closed_url(scheme: str) -> str:
    return f"{scheme}://127.0.0.1:{free_port()}/0"


MANIFEST_CASES = [
    pytest.param(
        _documents(_pack("{version: 1.0.0, systemPrompt: 'Hi {{ oops'}"), MOCK, _agent()),
        {}, ["agent.yaml", "systemPrompt"], id="template-does-not-compile",
    ),
    pytest.param(
        _documents(
            _pack("{version: 1.0.0, systemPrompt: 'hi', templates: {t: '{% if %}'}}"), MOCK, _agent()
        ),
        {}, ["agent.yaml", "templates.t"], id="named-template-does-not-compile",
    ),
    pytest.param(
        _documents(
            _pack("{version: 1.0.0, systemPrompt: 'Hi {{ nmae }}', variables: {name: Ann}}"), MOCK, _agent()
        ),
        {}, ["agent.yaml", "systemPrompt", "'nmae'"], id="undefined-variable",
    ),
    pytest.param(
        _documents(
            _pack("{version: 1.0.0, systemPrompt: hi, templates: {t: '{{ message }} {{ tone }}'}}"), MOCK, _agent()
        ),
        {}, ["agent.yaml", "templates.t", "'tone'"], id="undefined-variable-in-named-template",
    ),
    pytest.param(
        _documents(GOOD_PACK, MOCK, REDIS_AGENT), {}, ["agent.yaml", "spec.session", "OMNIA_SESSION_URL"],
        id="store-url-missing",
    ),
    pytest.param(
        _documents(GOOD_PACK, MOCK, REDIS_AGENT), {"OMNIA_SESSION_URL": "http://127.0.0.1:1"},
        ["agent.yaml", "spec.session", "scheme 'http'"], id="store-url-wrong-scheme",
    ),
    pytest.param(
        _documents(GOOD_PACK, MOCK, REDIS_AGENT), {"OMNIA_SESSION_URL": _closed_url("redis")},
        ["agent.yaml", "spec.session", "cannot reach"], id="redis-unreachable",
    ),
    pytest.param(
        _documents(GOOD_PACK, MOCK, POSTGRES_AGENT), {"OMNIA_SESSION_URL": _closed_url("postgresql")},
        ["agent.yaml", "spec.session", "cannot reach"], id="postgres-unreachable",
    ),
    pytest.param(
        _documents(GOOD_PACK, MOCK, GROUP + "kind: AgentRuntim\nmetadata: {name: a}\nspec: {}\n"),
        {}, ["agent.yaml", "kind", "did you mean 'AgentRuntime'"], id="kind-typo",
    ),
]


def omnia_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "omnia", "run", *args],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def _assert_refused(result: subprocess.CompletedProcess, expected: list[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for part in expected:
        assert part in errors[0], errors[0]
    assert "Starting agent" not in result.stdout


@pytest.mark.parametrize(("manifest", "env", "expected"), MANIFEST_CASES)
def test_run_refuses_bad_manifests_before_starting(tmp_path, manifest, env, expected):
    path = tmp_path / "agent.yaml"
    path.write_text(manifest)
    _assert_refused(omnia_run(str(path), "--port", str(free_port()), env=env), expected)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(["--port", "70000"], ["--port"], id="port-too-large"),
        pytest.param(["--port", "0"], ["--port"], id="port-zero"),
        pytest.param(["--host", "192.0.2.1"], ["--host", "192.0.2.1", "not an address of this machine"],
                     id="host-not-local"),
        pytest.param(["--host", "no-such-host.invalid"], ["--host", "no-such-host.invalid"], id="host-unknown"),
    ],
)
def test_run_refuses_bad_options_before_starting(tmp_path, options, expected):
    (tmp_path / "agent.yaml").write_text(_documents(GOOD_PACK, MOCK, _agent()))
    args = [str(tmp_path), *options] + ([] if "--port" in options else ["--port", str(free_port())])
    result = omnia_run(*args)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    for part in expected:
        assert part in result.stderr, result.stderr
