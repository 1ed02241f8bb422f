"""Who may open a conversation: no auth, API keys, or JWTs checked against a JWKS.

Credentials are read from the WebSocket upgrade request. Browsers cannot set
headers on a WebSocket, so each method also accepts a query parameter
(``api_key``, ``access_token``) next to ``Authorization: Bearer``.

Every method fails closed: an ``apiKey`` agent whose key variable is empty
refuses to start rather than admitting everyone, and a JWKS that cannot be
fetched rejects tokens rather than skipping the signature check.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt

from omnia.config import AuthConfig

# Asymmetric only: a JWKS publishes public keys, and accepting HS* would let
# anyone holding a public key forge tokens.
JWT_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller; ``subject`` is passed to the runtime as session metadata.

    Method and subject together are the principal a session belongs to.
    """

    subject: str
    method: str

    @property
    def identified(self) -> bool:
        """Whether the caller is told apart from others (with auth none, everyone is one)."""
        return self.method != "none"


def too_many_connections(limit: int) -> str:
    """The refusal of a principal holding ``limit`` connections to the replica already."""
    return f"this client already holds {limit} connections to this replica (its limit); close one and retry"


class Unauthorized(Exception):
    pass


class Authenticator(Protocol):
    async def authenticate(
        self, *, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Principal:
        """The caller of one upgrade request, or raise ``Unauthorized``."""
        ...


def from_config(
    auth: AuthConfig,
    *,
    environ: Mapping[str, str],
    http: httpx.AsyncClient | None = None,
) -> Authenticator:
    """The authenticator an agent's ``facade.auth`` asks for; raises ``ValueError`` if unusable."""
    if auth.type == "none":
        return Anonymous()
    if auth.type == "apiKey":
        if not auth.api_keys_env:
            raise ValueError("auth type apiKey needs apiKeysEnv")
        keys = [key.strip() for key in environ.get(auth.api_keys_env, "").split(",")]
        if not any(keys):
            raise ValueError(
                f"auth type apiKey needs its keys in the environment variable {auth.api_keys_env}, "
                "which is unset or empty (set spec.facade.auth.secretRef to a Secret key holding them)"
            )
        return ApiKeys(key for key in keys if key)
    if auth.type == "jwt":
        return JwtVerifier(
            jwks_url=auth.jwks_url,
            issuer=auth.jwt_issuer,
            audience=auth.jwt_audience,
            http=http or httpx.AsyncClient(timeout=5.0),
        )
    raise ValueError(f"unknown auth type {auth.type!r}")


def bearer_token(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Anonymous:
    async def authenticate(
        self, *, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Principal:
        return Principal(subject="anonymous", method="none")


class ApiKeys:
    """Static API keys, compared in constant time.

    The subject is a short digest of the key, so logs and sessions can tell
    keys apart without ever holding one.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)
        if not self._keys:
            raise ValueError("auth type apiKey needs at least one key")

    async def authenticate(
        self, *, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Principal:
        presented = bearer_token(headers) or query.get("api_key")
        if not presented:
            raise Unauthorized("an API key is required (Authorization: Bearer or ?api_key=)")
        candidate = presented.encode()
        # Compare against every key, so timing reveals nothing about which matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise Unauthorized("invalid API key")
        digest = hashlib.sha256(candidate).hexdigest()[:12]
        return Principal(subject=f"key:{digest}", method="apiKey")


class JwtVerifier:
    """JWTs signed by a key of a JWKS, with issuer, audience and expiry checked.

    The key set is fetched on first use and cached for ``cache_seconds``; a
    token signed with an unknown ``kid`` (a key rotation) refetches it, but at
    most once per ``min_refetch_seconds`` so that garbage tokens cannot turn
    the facade into a JWKS flooder. Without ``jwks_url`` the set is found via
    the issuer's OpenID Connect discovery document.
    """

    def __init__(
        self,
        *,
        jwks_url: str | None,
        issuer: str | None,
        audience: str | None,
        http: httpx.AsyncClient,
        cache_seconds: float = 300.0,
        min_refetch_seconds: float = 30.0,
        leeway_seconds: float = 30.0,
    ) -> None:
        if not jwks_url and not issuer:
            raise ValueError("auth type jwt needs jwksURL or jwtIssuer (for OIDC discovery)")
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self.leeway_seconds = leeway_seconds
        self._http = http
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def authenticate(
        self, *, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Principal:
        token = bearer_token(headers) or query.get("access_token")
        if not token:
            raise Unauthorized("a token is required (Authorization: Bearer or ?access_token=)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        algorithm = header.get("alg")
        # The header is the client's JSON: ``alg`` may be a list or an object.
        if not isinstance(algorithm, str):
            raise Unauthorized("malformed token: its algorithm (alg) is not a string")
        if algorithm not in JWT_ALGORITHMS:
            raise Unauthorized(f"token algorithm {algorithm[:32]!r} is not accepted")
        key = await self._key(header.get("kid"), algorithm)
        options = {"require": ["exp"], "verify_aud": self.audience is not None}
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options=options,
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            # Sessions belong to the subject: tokens without one would all share them.
            raise Unauthorized("invalid token: it names no subject (sub)")
        return Principal(subject=subject, method="jwt")

    async def _key(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        jwk = self._find(kid)
        if jwk is None or self._stale(self.cache_seconds):
            async with self._lock:
                # Another connection may have refreshed while this one waited.
                jwk = self._find(kid)
                rotated = jwk is None and self._stale(self.min_refetch_seconds)
                if rotated or self._stale(self.cache_seconds):
                    await self._refresh()
                    jwk = self._find(kid)
        if jwk is None:
            raise Unauthorized("token signed by an unknown key")
        try:
            return jwt.PyJWK(jwk, algorithm=algorithm)
        except jwt.PyJWTError:
            raise Unauthorized("token key does not fit its algorithm") from None

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            # Tokens without a kid are accepted only from a single-key set.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _stale(self, age: float) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > age

    async def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            url = self.jwks_url or await self._discover()
            response = await self._http.get(url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unauthorized(f"cannot fetch the signing keys: {exc}") from None
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise Unauthorized("the JWKS document has no 'keys'")
        self._keys = {
            str(key.get("kid", index)): key
            for index, key in enumerate(keys)
            if isinstance(key, dict) and key.get("use", "sig") == "sig"
        }

    async def _discover(self) -> str:
        assert self.issuer is not None
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        response = await self._http.get(url)
        response.raise_for_status()
        jwks_uri = response.json().get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ValueError(f"{url} names no jwks_uri")
        self.jwks_url = jwks_uri
        return jwks_uri
