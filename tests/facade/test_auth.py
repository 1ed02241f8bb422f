"""Who may connect: API keys and JWTs, from headers or (for browsers) the query string."""

from __future__ import annotations

import base64
import json

import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from omnia.config import AuthConfig
from omnia.facade import auth

from .conftest import StartFacade
from .harness import RuntimeDouble, closed, connect, receive, receive_until, send

KEYS = auth.ApiKeys(["k-one", "k-two"])


@pytest.mark.parametrize(
    ("headers", "query", "accepted"),
    [
        pytest.param({"authorization": "Bearer k-one"}, {}, True, id="bearer-header"),
        pytest.param({"authorization": "bearer k-two"}, {}, True, id="scheme-case-insensitive"),
        pytest.param({}, {"api_key": "k-two"}, True, id="query-for-browsers"),
        pytest.param({}, {}, False, id="missing"),
        pytest.param({"authorization": "Bearer nope"}, {}, False, id="wrong-key"),
        pytest.param({"authorization": "Basic k-one"}, {}, False, id="wrong-scheme"),
        pytest.param({}, {"api_key": ""}, False, id="empty-query-key"),
    ],
)
async def test_api_keys(headers: dict, query: dict, accepted: bool) -> None:
    if accepted:
        principal = await KEYS.authenticate(headers=headers, query=query)
        assert principal.method == "apiKey" and principal.subject.startswith("key:")
    else:
        with pytest.raises(auth.Unauthorized):
            await KEYS.authenticate(headers=headers, query=query)


async def test_api_key_subjects_tell_keys_apart_without_revealing_them() -> None:
    one = await KEYS.authenticate(headers={}, query={"api_key": "k-one"})
    two = await KEYS.authenticate(headers={}, query={"api_key": "k-two"})
    assert one.subject != two.subject
    assert "k-one" not in one.subject


@pytest.mark.parametrize(
    ("config", "environ"),
    [
        pytest.param(AuthConfig(type="apiKey"), {}, id="apikey-without-env-name"),
        pytest.param(AuthConfig(type="apiKey", api_keys_env="KEYS"), {}, id="apikey-env-unset"),
        pytest.param(
            AuthConfig(type="apiKey", api_keys_env="KEYS"), {"KEYS": " , "}, id="apikey-env-blank"
        ),
        pytest.param(AuthConfig(type="jwt"), {}, id="jwt-without-keys-or-issuer"),
    ],
)
def test_unusable_auth_config_refuses_to_start(config: AuthConfig, environ: dict) -> None:
    """Failing closed: a misconfigured agent must not silently admit everyone."""
    with pytest.raises(ValueError):
        auth.from_config(config, environ=environ)


def test_api_keys_come_from_the_named_variable() -> None:
    authenticator = auth.from_config(
        AuthConfig(type="apiKey", api_keys_env="KEYS"), environ={"KEYS": "a, b ,"}
    )
    assert isinstance(authenticator, auth.ApiKeys)


# -- JWT ---------------------------------------------------------------------

ISSUER = "https://issuer.test"
AUDIENCE = "omnia-agents"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Jwks:
    """An in-memory OIDC issuer: discovery document and key set, counting fetches."""

    def __init__(self, *keys: tuple[str, rsa.RSAPrivateKey]) -> None:
        self.keys = list(keys)
        self.fetches = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"jwks_uri": f"{ISSUER}/keys"})
        if request.url.path == "/keys":
            self.fetches += 1
            jwks = []
            for kid, key in self.keys:
                jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwks.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
            return httpx.Response(200, json={"keys": jwks})
        return httpx.Response(404)

    def verifier(self, **kwargs: object) -> auth.JwtVerifier:
        return auth.JwtVerifier(
            jwks_url=None,
            issuer=ISSUER,
            audience=AUDIENCE,
            http=httpx.AsyncClient(transport=httpx.MockTransport(self.handler)),
            **kwargs,
        )


def token(key: rsa.RSAPrivateKey, *, kid: str = "k1", algorithm: str = "RS256", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 60}
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


def crafted(header: object) -> str:
    """A token with this header, a plausible body and a signature of nothing."""
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part({'sub': 'x', 'exp': int(time.time()) + 60})}.c2ln"


async def test_jwt_signed_by_the_issuer_is_accepted(signing_key) -> None:
    verifier = Jwks(("k1", signing_key)).verifier()
    principal = await verifier.authenticate(
        headers={"authorization": f"Bearer {token(signing_key)}"}, query={}
    )
    assert principal == auth.Principal(subject="alice", method="jwt")


async def test_jwt_from_the_query_string_is_accepted(signing_key) -> None:
    verifier = Jwks(("k1", signing_key)).verifier()
    principal = await verifier.authenticate(headers={}, query={"access_token": token(signing_key)})
    assert principal.subject == "alice"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda key, other: token(key, exp=int(time.time()) - 3600), id="expired"),
        pytest.param(lambda key, other: token(key, aud="someone-else"), id="wrong-audience"),
        pytest.param(lambda key, other: token(key, iss="https://evil.test"), id="wrong-issuer"),
        pytest.param(lambda key, other: token(other), id="signed-by-another-key"),
        pytest.param(lambda key, other: token(key, kid="unknown"), id="unknown-kid"),
        pytest.param(
            lambda key, other: jwt.encode(
                {"sub": "x", "exp": int(time.time()) + 60},
                "a-shared-secret-of-at-least-32-bytes!",
                algorithm="HS256",
                headers={"kid": "k1"},
            ),
            id="symmetric-algorithm",
        ),
        pytest.param(lambda key, other: token(key, sub=None), id="no-subject"),
        pytest.param(lambda key, other: token(key, sub=""), id="empty-subject"),
        pytest.param(lambda key, other: "not.a.token", id="malformed"),
        # A header is the client's JSON: its fields may be of any type.
        pytest.param(lambda key, other: crafted({"alg": ["RS256"], "kid": "k1"}), id="alg-a-list"),
        pytest.param(lambda key, other: crafted({"alg": {"RS256": 1}, "kid": "k1"}), id="alg-an-object"),
        pytest.param(lambda key, other: crafted({"alg": "RS256", "kid": ["k1"]}), id="kid-a-list"),
        pytest.param(lambda key, other: crafted(["RS256"]), id="header-not-an-object"),
        pytest.param(lambda key, other: "", id="missing"),
    ],
)
async def test_bad_jwts_are_rejected(signing_key, other_key, make) -> None:
    verifier = Jwks(("k1", signing_key)).verifier()
    with pytest.raises(auth.Unauthorized):
        await verifier.authenticate(
            headers={"authorization": f"Bearer {make(signing_key, other_key)}"}, query={}
        )


async def test_jwks_is_cached_and_refetched_on_key_rotation(signing_key, other_key) -> None:
    issuer = Jwks(("k1", signing_key))
    verifier = issuer.verifier(min_refetch_seconds=0)
    for _ in range(3):
        await verifier.authenticate(headers={}, query={"access_token": token(signing_key)})
    assert issuer.fetches == 1
    issuer.keys.append(("k2", other_key))
    principal = await verifier.authenticate(
        headers={}, query={"access_token": token(other_key, kid="k2")}
    )
    assert principal.subject == "alice" and issuer.fetches == 2


async def test_unknown_kids_do_not_make_the_facade_hammer_the_issuer(signing_key) -> None:
    issuer = Jwks(("k1", signing_key))
    verifier = issuer.verifier(min_refetch_seconds=60)
    for _ in range(5):
        with pytest.raises(auth.Unauthorized):
            await verifier.authenticate(
                headers={}, query={"access_token": token(signing_key, kid="bogus")}
            )
    assert issuer.fetches == 1


# -- on the wire ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "headers", "accepted"),
    [
        pytest.param("", {"Authorization": "Bearer k-one"}, True, id="header"),
        pytest.param("?api_key=k-two", {}, True, id="query"),
        pytest.param("", {}, False, id="no-key"),
        pytest.param("?api_key=wrong", {}, False, id="wrong-key"),
    ],
)
async def test_websocket_without_a_valid_key_gets_unauthorized_and_4401(
    start_facade: StartFacade, runtime: RuntimeDouble, suffix: str, headers: dict, accepted: bool
) -> None:
    facade = await start_facade(authenticator=KEYS)
    async with await connect(facade.ws_url + suffix, additional_headers=headers) as ws:
        first = await receive(ws)
        if accepted:
            await send(ws, {"type": "message", "content": "hi"})
            await receive_until(ws, "done")
        else:
            code, _ = await closed(ws)
    if accepted:
        assert first["type"] == "connected"
        assert runtime.servicer.opens[-1].metadata["auth_method"] == "apiKey"
    else:
        assert (first["code"], first["retryable"], code) == ("UNAUTHORIZED", False, 4401)
        assert runtime.servicer.opens == []
