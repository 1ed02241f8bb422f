"""The chat page's files: served from the package, vendored libraries as recorded, a strict policy."""

from __future__ import annotations

import hashlib
import re

import pytest

from omnia.facade.app import STATIC_DIR

from .conftest import RunningFacade

VENDOR = STATIC_DIR / "vendor"


def _recorded_hashes() -> dict[str, str]:
    """File name → SHA-256, from the table in vendor/README.md."""
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", (VENDOR / "README.md").read_text(), re.M)
    return dict(rows)


def test_every_vendored_library_is_the_recorded_release_with_its_licence() -> None:
    """The README's table says which release each file is; a changed file must change the table."""
    recorded = _recorded_hashes()
    scripts = {path.name for path in VENDOR.glob("*.js")}
    assert scripts and set(recorded) == scripts
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert {path.name for path in VENDOR.glob("*.LICENSE")} == {"marked.LICENSE", "dompurify.LICENSE"}


@pytest.mark.parametrize("name", ["marked.umd.js", "purify.min.js"])
async def test_vendored_libraries_are_served_by_the_facade(facade: RunningFacade, name: str) -> None:
    async with facade.http() as http:
        response = await http.get(f"/static/vendor/{name}")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert response.content == (VENDOR / name).read_bytes()


async def test_the_chat_page_forbids_inline_script_and_foreign_origins(facade: RunningFacade) -> None:
    """Defence in depth behind the sanitiser: no inline script, no image or connection elsewhere."""
    async with facade.http() as http:
        response = await http.get("/")
    policy = dict(
        directive.strip().split(" ", 1) for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["script-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    assert policy["connect-src"] == "'self'"
    assert policy["object-src"] == "'none'"
