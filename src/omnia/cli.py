"""The ``omnia`` command line.

Exit codes: 0 success, 1 a failure at run time, 2 bad input (unreadable or
invalid manifests, bad options) — the message always names what to fix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from omnia import __version__


def _examples(*lines: str) -> str:
    """A help epilog: one command a line (kept as written), a comment after ``#``."""
    return "[bold]Examples[/bold]\n\n" + "\n".join(f"  {line}" for line in lines)


app = typer.Typer(
    name="omnia",
    help="Run AI agents in production on Kubernetes, or locally from the same manifests.",
    epilog=_examples(
        "omnia run examples/quickstart        # an agent on the embedded model",
        "omnia chat http://127.0.0.1:8080     # chat with it in the terminal",
        "omnia render examples/quickstart     # what the operator would create",
        "omnia crds | kubectl apply -f -      # install the CRDs",
        "omnia COMMAND --help                 # a command's options and examples",
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_RUNTIME = 1
EXIT_USAGE = 2


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _cannot_start(message: str, termination_log: Path | None) -> typer.Exit:
    """A pod's container that cannot start says why where the kubelet reads it (``omnia.termination``)."""
    from omnia import termination

    termination.write(message, path=termination_log)
    return _fail(message, EXIT_USAGE)


TerminationLog = Annotated[
    Path | None,
    typer.Option(
        envvar="OMNIA_TERMINATION_LOG",
        help="File to write why the process cannot start to; default /dev/termination-log when writable.",
    ),
]


DefaultSessionSecrets = Annotated[
    list[str] | None,
    typer.Option(
        "--default-session-secret",
        metavar="TYPE=NAMESPACE/NAME:KEY",
        help="The Secret key holding the URL of the session store that AgentRuntimes of TYPE (redis or "
        "postgres) use when they set no secretRef; repeat for both types.",
    ),
]


OtlpEndpoint = Annotated[
    str | None,
    typer.Option(help="OTLP/gRPC collector agent pods send traces to, e.g. http://otel-collector.observability.svc:4317; "
                 "AgentRuntimes may name their own (spec.tracing)."),
]
OtlpHeadersSecret = Annotated[
    str | None,
    typer.Option(
        metavar="NAME:KEY",
        help="The Secret key, in each agent's namespace, holding the OTLP headers (key1=value1,key2=value2) "
        "sent to --otlp-endpoint.",
    ),
]
ActivatorServiceOption = Annotated[
    str | None,
    typer.Option(
        "--activator-service",
        metavar="NAMESPACE/NAME",
        help="The activator's Service: agents at zero replicas (minReplicas 0) are routed to it until a pod "
        "is Ready, and KEDA's triggers for active_connections ask its external scaler. None: no activator.",
    ),
]
PrometheusUrl = Annotated[
    str | None,
    typer.Option(help="Prometheus that KEDA's prometheus triggers query for custom metrics; none by default."),
]
TraceSamplingRatio = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Share of new traces agent pods record (parent-based).")
]


def _tracing(endpoint: str | None, headers_secret: str | None, sampling_ratio: float):
    """The installation's collector from the operator's options; a malformed NAME:KEY exits 2."""
    from pydantic import ValidationError

    from omnia.api.v1alpha1 import SecretKeySelector
    from omnia.operator import builders

    headers = None
    if headers_secret is not None:
        name, colon, key = headers_secret.partition(":")
        try:
            if not colon:
                raise ValueError("no key")
            headers = SecretKeySelector(name=name, key=key)
        except (ValueError, ValidationError):
            raise _fail(f"--otlp-headers-secret: {headers_secret!r} is not NAME:KEY", EXIT_USAGE) from None
        if not endpoint:
            raise _fail("--otlp-headers-secret needs --otlp-endpoint, the collector the headers are for", EXIT_USAGE)
    return builders.TracingDefaults(endpoint=endpoint or None, headers=headers, sampling_ratio=sampling_ratio)


def _activator(value: str | None):
    """``--activator-service NAMESPACE/NAME``; a malformed value exits 2."""
    from omnia.operator import builders

    if not value:
        return None
    try:
        return builders.ActivatorService.parse(value)
    except ValueError as exc:
        raise _fail(f"--activator-service: {exc}", EXIT_USAGE) from None


def _session_stores(values: list[str] | None):
    """``--default-session-secret`` values, one store per type; bad ones exit 2."""
    from omnia.operator import sessionstores

    try:
        return sessionstores.parse_all(values or ())
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


def _print_version(requested: bool) -> None:
    if requested:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print Omnia's version and exit."),
    ] = False,
) -> None:
    """Options that come before the command."""


@app.command(
    epilog=_examples(
        "omnia run examples/quickstart",
        "omnia run examples/tools --port 9000 --verbose",
        "omnia run agents/ --agent support   # a folder with several agents",
        "omnia run prompts.yaml agent.yaml --host 0.0.0.0",
    )
)
def run(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or folders.")],
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the facade (WebSocket, chat page, OpenAI, MCP, A2A).")] = 8080,
    host: Annotated[str, typer.Option(help="Address the facade listens on.")] = "127.0.0.1",
    agent: Annotated[str | None, typer.Option(help="The AgentRuntime to run when there are several.")] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v",
            help="Show the processes' logs, one line per turn among them: readable in a terminal, JSON otherwise.",
        ),
    ] = False,
) -> None:
    """Run an agent locally from its manifests: runtime and facade, joined by gRPC.

    SIGINT, SIGTERM and SIGHUP each drain and stop it, then it exits 0 (see docs/operations.md).
    """
    from omnia import local, manifests

    requests = local.StopRequests()
    requests.install()
    try:
        loaded = manifests.load(paths)
        plan = manifests.plan_local_agent(loaded, agent_name=agent, env=os.environ)
    except manifests.ManifestLoadError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    for ignored in loaded.ignored:
        typer.echo(f"note: ignoring {ignored}", err=True)
    for note in plan.notes:
        typer.echo(f"note: {note}", err=True)
    config = plan.config
    child_env = {**os.environ, **plan.secret_env}
    problem = local.host_problem(host)
    if problem:
        raise _fail(problem, EXIT_USAGE)
    problem = asyncio.run(local.store_problem(config, env=child_env))
    if problem:
        raise _fail(f"{plan.where}: spec.session: {problem}", EXIT_USAGE)
    _say(f"Starting agent {config.name!r} ({config.provider.type} provider, model {config.provider.model})...")
    if config.provider.type == "local":
        _say(f"Loading the model {config.provider.model} into memory; the agent is ready once it has loaded.")
    try:
        running = local.start(
            config,
            requests=requests,
            host=host,
            port=port,
            env=child_env,
            log_level="info" if verbose else "warning",
            waiting=lambda seconds: _say(f"  still starting ({seconds:.0f} s)..."),
        )
    except local.LocalRunError as exc:
        raise _fail(str(exc), EXIT_RUNTIME) from None
    try:
        if not running.stop_requested:
            ws_url = running.url.replace("http://", "ws://", 1) + "/ws"
            loaded = f" (model {config.provider.model} loaded)" if config.provider.type == "local" else ""
            _say(f"Agent {config.name!r} is ready{loaded}.")
            _say(f"  Chat page:  {running.url}/")
            _say(f"  WebSocket:  {ws_url}")
            _say(f"  Terminal:   omnia chat {running.url}")
            protocols = config.facade.protocols
            if protocols.openai:
                _say(f"  OpenAI:     {running.url}/v1  (model {config.name!r})")
            if protocols.mcp:
                _say(f"  MCP:        {running.url}/mcp")
            if protocols.a2a:
                _say(f"  A2A:        {running.url}/.well-known/agent-card.json")
            _say("Press Ctrl-C to stop.")
            running.wait()
    finally:
        code = running.stop()
    raise typer.Exit(code)


def _say(line: str) -> None:
    """Print a line on standard output, if anyone still reads it.

    The agent serves its clients, not its standard output: when the reader
    has gone (a closed pipe), the rest is discarded and the agent runs on.
    """
    try:
        typer.echo(line)
    except BrokenPipeError:
        # So that the final flush at exit does not fail in turn (the recipe of Python's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@app.command(
    epilog=_examples(
        "omnia chat http://127.0.0.1:8080",
        "omnia chat https://agents.example.com/support --session 3f2a9c",
        "OMNIA_API_KEY=... omnia chat https://agents.example.com/support",
        "echo Hello | omnia chat http://127.0.0.1:8080   # from a script",
    )
)
def chat(
    url: Annotated[str, typer.Argument(help="The agent's URL, e.g. http://127.0.0.1:8080.")],
    session: Annotated[str | None, typer.Option(help="Resume this session id.")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="OMNIA_API_KEY", help="API key, when the facade requires one.")
    ] = None,
) -> None:
    """Chat with an agent in the terminal; one message per line, Ctrl-D to end.

    In a terminal: a "> " prompt with line editing and history (kept, private, in
    $XDG_STATE_HOME/omnia/chat_history). From a pipe: one message per line, no prompt.
    """
    from omnia import chat as chatting

    if sys.stdin.isatty() and sys.stdout.isatty():
        messages = chatting.TerminalPrompt(history=chatting.history_file())
    else:
        messages = chatting.PipedLines(sys.stdin)
    try:
        code = asyncio.run(chatting.chat(url, session_id=session, api_key=api_key, messages=messages))
    except chatting.ChatError as exc:
        raise _fail(str(exc), EXIT_RUNTIME) from None
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


@app.command()
def runtime(
    config: Annotated[Path, typer.Option(help="The rendered agent configuration (JSON).")],
    listen: Annotated[str, typer.Option(help="gRPC address, e.g. 127.0.0.1:9090 or unix:///path.")] = "127.0.0.1:9090",
    health: Annotated[
        str, typer.Option(help="host:port of the grpc.health.v1 service (the kubelet's probe); empty for none.")
    ] = "",
    termination_log: TerminationLog = None,
) -> None:
    """Serve the agent runtime over gRPC (container 2 of an agent pod)."""
    from omnia.runtime import server
    from omnia.termination import StartupError

    try:
        agent_config = _load_config(config)
        _configure_logs(component="runtime")
        _configure_tracing(service_name="omnia-runtime")
        speedups = _speedups(component="runtime")
        speedups.run(server.serve(agent_config, address=listen, health_address=health or None,
                                  config_path=config))
    except StartupError as exc:
        raise _cannot_start(str(exc), termination_log) from None


@app.command()
def facade(
    config: Annotated[Path, typer.Option(help="The rendered agent configuration (JSON).")],
    runtime_address: Annotated[str, typer.Option("--runtime", help="The runtime's gRPC address.")] = "127.0.0.1:9090",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int | None, typer.Option(help="Port; defaults to the configured facade port.")] = None,
    linger: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to keep listening after the drain, answering late connections with DRAINING "
            "(while a load balancer still routes here).",
        ),
    ] = 0.0,
    termination_log: TerminationLog = None,
) -> None:
    """Serve the WebSocket facade (container 1 of an agent pod)."""
    from omnia.facade import server
    from omnia.termination import StartupError

    try:
        agent_config = _load_config(config)
        _configure_logs(component="facade")
        _configure_tracing(service_name="omnia-facade")
        server.serve(
            agent_config,
            runtime_address=runtime_address,
            host=host,
            port=port if port is not None else agent_config.facade.port,
            linger_seconds=linger,
            speedups=_speedups(component="facade"),
        )
    except StartupError as exc:
        raise _cannot_start(str(exc), termination_log) from None


@app.command()
def crds() -> None:
    """Print the CustomResourceDefinitions of the four kinds (for kubectl apply -f -)."""
    from omnia.api import crds as definitions

    typer.echo(definitions.render_yaml(), nl=False)


@app.command()
def version() -> None:
    """Print Omnia's version."""
    typer.echo(__version__)


@app.command(
    epilog=_examples(
        "omnia operator --namespace agents --leader-elect",
        "omnia operator --otlp-endpoint http://otel-collector.observability.svc:4317",
    )
)
def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Serve only this namespace; repeat for several."),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", help="Serve every namespace (the default without --namespace).")
    ] = False,
    liveness: Annotated[
        str, typer.Option(help="host:port of the liveness endpoint, GET /healthz; empty for none.")
    ] = "0.0.0.0:8080",
    metrics: Annotated[
        str, typer.Option(help="host:port of the Prometheus metrics, GET /metrics; empty for none.")
    ] = "0.0.0.0:9090",
    image: Annotated[
        str | None, typer.Option(envvar="OMNIA_IMAGE", help="Image of agent pods whose spec.images leaves it out.")
    ] = None,
    prometheus_url: PrometheusUrl = None,
    activator_service: ActivatorServiceOption = None,
    workers: Annotated[int, typer.Option(min=1, help="Reconciles run at once.")] = 16,
    discovery_interval: Annotated[
        float, typer.Option(min=1, help="Seconds between discoveries of a ToolRegistry's MCP and OpenAPI tools.")
    ] = 300.0,
    budget_interval: Annotated[
        float, typer.Option(min=1, help="Seconds between readings of the budget counters shown in the "
                            "AgentRuntimes' status.budgets (also read after each reconcile of an agent).")
    ] = 60.0,
    leader_elect: Annotated[
        bool, typer.Option("--leader-elect", help="Reconcile only while holding the leader Lease (several replicas).")
    ] = False,
    leader_election_namespace: Annotated[
        str | None, typer.Option(envvar="POD_NAMESPACE", help="Namespace of the Lease; defaults to the pod's own.")
    ] = None,
    default_session_secret: DefaultSessionSecrets = None,
    otlp_endpoint: OtlpEndpoint = None,
    otlp_headers_secret: OtlpHeadersSecret = None,
    trace_sampling_ratio: TraceSamplingRatio = 1.0,
    ingress_namespace: Annotated[
        list[str] | None,
        typer.Option(help="Namespace admitted to agents' facade port when their networkPolicy.ingressFrom is "
                     "empty (the ingress controller's); repeat for several, or give it empty for none. "
                     "Default: ingress-nginx."),
    ] = None,
    scrape_namespace: Annotated[
        list[str] | None,
        typer.Option(help="Namespace admitted to every agent's facade port, for Prometheus to read /metrics; "
                     "repeat for several, or give it empty for none. Default: monitoring."),
    ] = None,
) -> None:
    """Run the operator: reconcile AgentRuntimes, PromptPacks, Providers and ToolRegistries."""
    from omnia.operator import builders, credentials, main
    from omnia.termination import StartupError

    if namespace and all_namespaces:
        raise _fail("--namespace and --all-namespaces exclude each other", EXIT_USAGE)
    session_stores = _session_stores(default_session_secret)
    tracing = _tracing(otlp_endpoint, otlp_headers_secret, trace_sampling_ratio)
    lease_namespace = None
    if leader_elect:
        pod_namespace = credentials.SERVICE_ACCOUNT_DIR / "namespace"
        lease_namespace = leader_election_namespace or (
            pod_namespace.read_text().strip() if pod_namespace.exists() else None
        )
        if not lease_namespace:
            raise _fail("--leader-elect needs --leader-election-namespace outside a pod", EXIT_USAGE)
    defaults = builders.Defaults()
    overrides = {"image": image, "prometheus_url": prometheus_url, "session_stores": session_stores,
                 "tracing": tracing, "activator": _activator(activator_service)}
    defaults = builders.Defaults(**{**defaults.__dict__, **{k: v for k, v in overrides.items() if v}})
    # Given at all, a list replaces the default; an empty value stands for none.
    if ingress_namespace is not None:
        defaults = dataclasses.replace(defaults, ingress_namespaces=tuple(n for n in ingress_namespace if n))
    if scrape_namespace is not None:
        defaults = dataclasses.replace(defaults, scrape_namespaces=tuple(n for n in scrape_namespace if n))
    try:
        _configure_logs(component="operator")
    except StartupError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    main.run(
        namespaces=namespace or (),
        liveness=liveness or None,
        metrics_address=metrics or None,
        defaults=defaults,
        workers=workers,
        discovery_interval=discovery_interval,
        budget_interval=budget_interval,
        leader_election_namespace=lease_namespace,
    )


@app.command(
    epilog=_examples(
        "omnia activator   # in a pod, as the chart runs it",
        "omnia activator --kubeconfig ~/.kube/config --port 8080 --scaler-port 9090",
    )
)
def activator(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port of agents' HTTP and WebSocket traffic.")] = 8080,
    scaler_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of KEDA's external scaler (gRPC).")
    ] = 9090,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    max_held: Annotated[
        int, typer.Option(min=1, help="Connections held at once while their agents start; more are refused.")
    ] = 1000,
    max_held_per_agent: Annotated[
        int, typer.Option(min=1, help="Connections held at once for one agent; more are refused, so one "
                          "agent's clients cannot take every place.")
    ] = 100,
    wake_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds a connection waits for its agent's first ready pod.")
    ] = 60.0,
    drain_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds relayed connections may run on after SIGTERM.")
    ] = 25.0,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubeconfig of the cluster; default: the pod's ServiceAccount, "
                     "else $KUBECONFIG or ~/.kube/config."),
    ] = None,
) -> None:
    """Hold connections to agents at zero replicas until KEDA wakes them, then relay them (see docs/scaling.md).

    SIGTERM drains: held connections are told to reconnect, relayed ones get --drain-timeout seconds.
    """
    import kopf

    from omnia.activator import server
    from omnia.activator.backends.kubernetes import KubernetesBackends
    from omnia.operator import applying, credentials
    from omnia.termination import StartupError

    try:
        _configure_logs(component="activator")
    except StartupError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if kubeconfig is not None and not kubeconfig.is_file():
        raise _fail(f"--kubeconfig: {kubeconfig} is not a file", EXIT_USAGE)
    try:
        identity = credentials.Kubeconfig.load(os.fspath(kubeconfig)) if kubeconfig is not None \
            else credentials.discover(kopf.OperatorSettings())
    except kopf.LoginError as exc:
        raise _fail(f"cannot reach the cluster: {exc}", EXIT_USAGE) from None

    async def main() -> None:
        backends = KubernetesBackends(applying.http_client(identity))
        try:
            await server.run(server.ActivatorServer(
                backends=backends, host=host, port=port, scaler_port=scaler_port, max_held=max_held,
                max_held_per_agent=max_held_per_agent,
                wake_timeout=wake_timeout, drain_timeout=drain_timeout,
            ))
        finally:
            await backends.aclose()

    try:
        asyncio.run(main())
    except StartupError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


@app.command(
    epilog=_examples(
        "omnia render examples/quickstart",
        "omnia render agents/ | kubectl diff -f -   # compare with the cluster",
    )
)
def render(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or folders.")],
    image: Annotated[
        str | None, typer.Option(envvar="OMNIA_IMAGE", help="Image the operator would use by default.")
    ] = None,
    default_session_secret: DefaultSessionSecrets = None,
    otlp_endpoint: OtlpEndpoint = None,
    otlp_headers_secret: OtlpHeadersSecret = None,
    trace_sampling_ratio: TraceSamplingRatio = 1.0,
    prometheus_url: PrometheusUrl = None,
    activator_service: ActivatorServiceOption = None,
) -> None:
    """Print, offline, the objects the operator would create for these manifests (multi-document YAML).

    Give the operator's --default-session-secret for agents on the installation's session store,
    its tracing options for the pods' OTEL_* variables, and its --prometheus-url and
    --activator-service for KEDA's triggers.
    """
    from omnia import manifests
    from omnia.operator import builders
    from omnia.operator import render as rendering

    session_stores = _session_stores(default_session_secret)
    tracing = _tracing(otlp_endpoint, otlp_headers_secret, trace_sampling_ratio)
    defaults = builders.Defaults(session_stores=session_stores, tracing=tracing, prometheus_url=prometheus_url or None,
                                 activator=_activator(activator_service))
    if image:
        defaults = dataclasses.replace(defaults, image=image)
    try:
        objects = rendering.render(manifests.load(paths), defaults=defaults)
    except manifests.ManifestLoadError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    typer.echo(rendering.to_yaml(objects), nl=False)


def _configure_logs(*, component: str) -> None:
    """Logs as ``OMNIA_LOG_LEVEL`` and ``OMNIA_LOG_FORMAT`` ask (see ``omnia.logs``); bad values cannot start."""
    from omnia import logs
    from omnia.termination import StartupError

    try:
        logs.configure(level=os.environ.get("OMNIA_LOG_LEVEL", "info"), component=component)
    except ValueError as exc:
        raise StartupError(f"OMNIA_LOG_LEVEL or OMNIA_LOG_FORMAT: {exc}") from None


def _speedups(*, component: str):
    """The speedups ``OMNIA_SPEEDUPS`` asks for (see ``omnia.speedups``); a bad value cannot start."""
    from omnia.speedups import Speedups
    from omnia.termination import StartupError

    try:
        speedups = Speedups.from_env(os.environ)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    # The runtime serves gRPC only: the HTTP parser is the facade's.
    chosen = str(speedups) if component == "facade" else f"event loop {speedups.loop_name}"
    logging.getLogger(f"omnia.{component}").info("%s using %s", component, chosen)
    return speedups


def _configure_tracing(*, service_name: str) -> None:
    from omnia import telemetry
    from omnia.termination import StartupError

    try:
        telemetry.configure(service_name=service_name, env=os.environ)
    except telemetry.TracingConfigError as exc:
        raise StartupError(str(exc)) from None


def _load_config(path: Path):
    from pydantic import ValidationError

    from omnia.config import AgentConfig
    from omnia.termination import StartupError

    try:
        return AgentConfig.load(path)
    except OSError as exc:
        raise StartupError(f"{path}: {exc.strerror}") from None
    except (ValueError, ValidationError) as exc:
        raise StartupError(f"{path}: invalid agent configuration: {exc}") from None


def main() -> None:
    app(prog_name="omnia")


if __name__ == "__main__":
    sys.exit(main())
