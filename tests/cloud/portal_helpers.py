"""In-process portal tests: a browser-like client per user (its own cookies), forms posted
with the session's form token, and the page's text for assertions."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
from fastapi.testclient import TestClient

from cloud.portal.session import FLASH_COOKIE, SESSION_COOKIE, csrf_for
from tests.cloud.api_helpers import PASSWORD, World

_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def page_text(markup: str) -> str:
    """What a reader sees of `markup`: tags dropped, entities decoded, spaces collapsed."""
    body = markup.split("<body", 1)[-1]
    return _SPACE.sub(" ", html.unescape(_TAGS.sub(" ", body))).strip()


class Visitor:
    """One person at a browser, logged in to the portal of `world`."""

    def __init__(self, world: World, user_id: str | None, password: str = PASSWORD) -> None:
        self.world = world
        self.user_id = user_id
        self.client = TestClient(world.app, raise_server_exceptions=False)
        if user_id is not None:
            response = self.client.post(
                "/login",
                data={"username": user_id, "password": password, "next": "/"},
                follow_redirects=False,
            )
            assert response.status_code == 303, page_text(response.text)
            assert SESSION_COOKIE in self.client.cookies, "no session cookie after log-in"

    @property
    def csrf(self) -> str:
        """The form token of this visitor's session."""
        return csrf_for(self.client.cookies[SESSION_COOKIE])

    def get(self, path: str, **params: Any) -> httpx.Response:
        """GET a page (redirects followed)."""
        return self.client.get(path, params=params or None)

    def text(self, path: str, status: int = 200, **params: Any) -> str:
        """A page's visible text, after checking its status."""
        response = self.get(path, **params)
        assert response.status_code == status, (response.status_code, page_text(response.text))
        return page_text(response.text)

    def post(self, path: str, follow: bool = True, **fields: Any) -> httpx.Response:
        """Submit a form with the session's form token."""
        data = {"csrf": self.csrf, **{k: str(v) for k, v in fields.items()}}
        return self.client.post(path, data=data, follow_redirects=follow)

    def submit(self, path: str, **fields: Any) -> tuple[str, str]:
        """Submit a form, expect a redirect; returns (where it went, the message shown)."""
        response = self.post(path, follow=False, **fields)
        assert response.status_code == 303, (response.status_code, page_text(response.text))
        flash = response.cookies.get(FLASH_COOKIE, "")
        return response.headers["location"], html.unescape(httpx.QueryParams(f"f={flash}")["f"])
