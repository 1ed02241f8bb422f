"""Secret header values: referenced in the config by environment variable, never copied into it."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from omnia import manifests
from omnia.api.v1alpha1 import parse_manifest
from omnia.rendering import RenderError, tool_configs
from omnia.tools import credentials

REGISTRY = """\
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: ToolRegistry
metadata: {name: tools}
spec:
  handlers:
    - name: lookup-order
      type: http
      http:
        method: GET
        url: https://orders.test/{{ id }}
        headers:
          - {name: Authorization, secretRef: {name: orders-api, key: token}}
          - {name: X-Team, value: support}
    - name: kb
      type: mcp
      mcp:
        transport: stdio
        command: python
        args: [server.py]
        env:
          - {name: KB_TOKEN, secretRef: {name: kb, key: token}}
          - {name: KB_MODE, value: read-only}
    - name: shop
      type: openapi
      openapi:
        configMapRef: {name: shop-api, key: openapi.yaml}
        baseURL: https://shop.test
        headers:
          - {name: X-Api-Key, secretRef: {name: shop, key: key}}
"""

AGENT = """\
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: PromptPack
metadata: {name: p}
spec: {version: 1.0.0, systemPrompt: hi}
---
apiVersion: omnia.altairalabs.ai/v1alpha1
kind: AgentRuntime
metadata: {name: a}
spec: {promptPackRef: {name: p}, toolRegistryRef: {name: tools}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: shop-api}
data:
  openapi.yaml: |
    openapi: 3.0.0
    paths: {}
"""

SECRETS = """\
apiVersion: v1
kind: Secret
metadata: {name: orders-api}
stringData: {token: Bearer orders-s3cret}
---
apiVersion: v1
kind: Secret
metadata: {name: kb}
data: {token: %s}
""" % base64.b64encode(b"kb-s3cret").decode()


def registry(text: str = REGISTRY):
    return parse_manifest(yaml.safe_load(text))


@pytest.mark.parametrize(
    ("handler", "name", "kind", "expected"),
    [
        pytest.param("lookup-order", "Authorization", "header", "OMNIA_TOOL_LOOKUP_ORDER_AUTHORIZATION", id="header"),
        pytest.param("kb", "KB_TOKEN", "env", "OMNIA_TOOL_KB_ENV_KB_TOKEN", id="stdio-env"),
        pytest.param("shop", "x-api-key", "header", "OMNIA_TOOL_SHOP_X_API_KEY", id="lowercase-header"),
    ],
)
def test_env_names(handler, name, kind, expected):
    assert credentials.env_name(handler, name, kind=kind) == expected


def test_the_pod_gets_one_secret_key_ref_per_secret_value():
    envs = credentials.secret_envs(registry().spec)
    assert [env.env_var() for env in envs] == [
        {"name": "OMNIA_TOOL_LOOKUP_ORDER_AUTHORIZATION",
         "valueFrom": {"secretKeyRef": {"name": "orders-api", "key": "token"}}},
        {"name": "OMNIA_TOOL_KB_ENV_KB_TOKEN", "valueFrom": {"secretKeyRef": {"name": "kb", "key": "token"}}},
        {"name": "OMNIA_TOOL_SHOP_X_API_KEY", "valueFrom": {"secretKeyRef": {"name": "shop", "key": "key"}}},
    ]
    assert envs[0].field == "http.headers[Authorization].secretRef"


def test_rendered_tools_name_variables_and_carry_no_secret_references():
    rendered = tool_configs(registry(), config_maps={"shop-api": {"openapi.yaml": "openapi: 3.0.0\npaths: {}\n"}})
    http, kb, shop = rendered
    assert http.handler["headers"] == [
        {"name": "Authorization", "valueFromEnv": "OMNIA_TOOL_LOOKUP_ORDER_AUTHORIZATION"},
        {"name": "X-Team", "value": "support"},
    ]
    assert kb.handler["env"] == [
        {"name": "KB_TOKEN", "valueFromEnv": "OMNIA_TOOL_KB_ENV_KB_TOKEN"},
        {"name": "KB_MODE", "value": "read-only"},
    ]
    assert shop.handler["document"].startswith("openapi: 3.0.0") and "configMapRef" not in shop.handler
    assert "secretRef" not in json.dumps([tool.model_dump() for tool in rendered])


def test_two_values_on_one_variable_are_refused():
    clash = REGISTRY.replace("{name: X-Team, value: support}", "{name: authorization, secretRef: {name: o, key: k}}")
    with pytest.raises(RenderError, match="would share the environment variable OMNIA_TOOL_LOOKUP_ORDER_AUTHORIZATION"):
        tool_configs(registry(clash), config_maps={"shop-api": {"openapi.yaml": ""}})


def test_a_missing_config_map_names_the_handler():
    with pytest.raises(RenderError, match="handler 'shop' openapi.configMapRef: ConfigMap 'shop-api'"):
        tool_configs(registry(), config_maps={})


def test_resolve_reads_variables_and_names_the_one_missing():
    values = [{"name": "A", "value": "1"}, {"name": "B", "valueFromEnv": "OMNIA_TOOL_X_B"}]
    assert credentials.resolve(values, {"OMNIA_TOOL_X_B": "2"}, what="header") == {"A": "1", "B": "2"}
    with pytest.raises(credentials.CredentialError, match="header B: the environment variable OMNIA_TOOL_X_B"):
        credentials.resolve(values, {}, what="header")


def write_manifests(folder, *texts):
    folder.mkdir(exist_ok=True)
    for index, text in enumerate(texts):
        (folder / f"{index}.yaml").write_text(text)
    return manifests.load([folder])


def test_omnia_run_fills_tool_secrets_from_secret_manifests_and_the_environment(tmp_path):
    loaded = write_manifests(tmp_path / "agent", AGENT, REGISTRY, SECRETS)
    plan = manifests.plan_local_agent(loaded, agent_name=None, env={"SHOP_KEY": "shop-s3cret"})
    assert {k: v for k, v in plan.secret_env.items() if k.startswith("OMNIA_TOOL_")} == {
        "OMNIA_TOOL_LOOKUP_ORDER_AUTHORIZATION": "Bearer orders-s3cret",
        "OMNIA_TOOL_KB_ENV_KB_TOKEN": "kb-s3cret",
        "OMNIA_TOOL_SHOP_X_API_KEY": "shop-s3cret",
    }
    rendered = plan.config.to_json()
    assert not any(secret in rendered for secret in ("orders-s3cret", "kb-s3cret", "shop-s3cret"))


def test_omnia_run_starts_stdio_servers_beside_the_registry_manifest(tmp_path):
    loaded = write_manifests(tmp_path / "agent", AGENT, REGISTRY, SECRETS)
    plan = manifests.plan_local_agent(loaded, agent_name=None, env={"SHOP_KEY": "k"})
    kb = next(tool for tool in plan.config.tools if tool.name == "kb")
    assert kb.handler["workingDir"] == str((tmp_path / "agent").resolve())


def test_omnia_run_names_a_missing_tool_secret_and_where_it_is_used(tmp_path):
    loaded = write_manifests(tmp_path / "agent", AGENT, REGISTRY, SECRETS)
    with pytest.raises(manifests.ManifestLoadError) as caught:
        manifests.plan_local_agent(loaded, agent_name=None, env={})
    message = str(caught.value)
    assert "ToolRegistry 'tools' handler 'shop' openapi.headers[X-Api-Key].secretRef" in message
    assert "set the environment variable SHOP_KEY" in message
