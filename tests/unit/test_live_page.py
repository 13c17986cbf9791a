"""The live page at / as the API serves it: the page and each asset with its content type,
nothing it loads from anywhere but the API, and no way for data to become markup."""
from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest
from fastapi.testclient import TestClient

from api.page import ASSET_TYPES, PAGE_FILE, read_static
from api.paths import PAGE_ASSETS_PATH, PAGE_PATH
from support.api_world import bare_api

REMOTE = ("http://", "https://", "//", "ws://", "wss://")


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(bare_api(), raise_server_exceptions=False)


class References(HTMLParser):
    """Every attribute of the page that makes a browser fetch something."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []    # tag, attribute, value

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data", "poster", "formaction"):
                self.found.append((tag, name, value or ""))


def references() -> list[tuple[str, str, str]]:
    parser = References()
    parser.feed(read_static(PAGE_FILE).decode())
    parser.close()
    return parser.found


def test_the_page_is_html_at_the_root(client: TestClient) -> None:
    response = client.get(PAGE_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == read_static(PAGE_FILE)
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "connect-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize("name", sorted(ASSET_TYPES))
def test_each_asset_is_served_with_its_type(client: TestClient, name: str) -> None:
    response = client.get(f"{PAGE_ASSETS_PATH}/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == ASSET_TYPES[name]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == read_static(name) and response.content


def test_every_file_the_page_loads_is_served_by_the_api(client: TestClient) -> None:
    loaded = [value for tag, name, value in references() if not value.startswith("data:")]
    assert {urljoin(PAGE_PATH, v) for v in loaded} == {
        f"{PAGE_ASSETS_PATH}/{name}" for name in ASSET_TYPES}
    for value in loaded:
        assert client.get(urljoin(PAGE_PATH, value)).status_code == 200, value


def test_the_page_refers_to_nothing_outside_the_api() -> None:
    remote = [r for r in references() if r[2].strip().lower().startswith(REMOTE)]
    assert not remote, f"the page refers to the network: {remote}"
    for name in [PAGE_FILE, *ASSET_TYPES]:
        text = read_static(name).decode().lower()
        assert not [s for s in ("http://", "https://", "ws://", "wss://") if s in text], name
        assert "@import" not in text and "url(" not in text, name


def test_the_script_never_turns_data_into_markup() -> None:
    script = read_static("live.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, f"live.js uses {sink}"
    assert "textContent" in script


def test_an_unknown_asset_is_a_404_message(client: TestClient) -> None:
    response = client.get(f"{PAGE_ASSETS_PATH}/secrets.txt")
    assert response.status_code == 404
    assert "no page asset 'secrets.txt'" in response.json()["message"]


def test_the_page_is_no_part_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert PAGE_PATH not in paths and not [p for p in paths if p.startswith(PAGE_ASSETS_PATH)]
