"""The HTTP API's OpenAPI 3.1 document: complete, current, valid, and truthful about the
answers a real hub gives."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
from openapi_spec_validator import validate

from server.api import openapi
from server.app import create_app
from server.settings import load_settings
from tests.helpers import XIGONG, auth


def _document() -> dict[str, Any]:
    return openapi.document(create_app(load_settings({})).routes)


def test_every_api_route_is_described() -> None:
    routes = create_app(load_settings({})).routes
    assert openapi.undescribed(routes) == []
    document = _document()
    for route in routes:
        path = getattr(route, "path", "")
        if path.startswith("/api/v1"):
            for method in route.methods - {"HEAD"}:  # type: ignore[attr-defined]
                assert method.lower() in document["paths"][path], (method, path)


def test_the_committed_document_is_current() -> None:
    committed = json.loads(openapi.DOCUMENT_PATH.read_text())
    assert committed == _document(), "run: python -m server.api"


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(_document())


def test_roles_and_errors_are_published() -> None:
    intake = _document()["paths"]["/api/v1/requests"]["post"]
    assert intake["x-roles"] == ["calltaker"]
    assert {"201", "401", "403", "409", "413", "422"} <= set(intake["responses"])
    assert intake["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NewRequest"
    }
    health = _document()["paths"]["/api/v1/health"]["get"]
    assert health["security"] == [] and health["x-roles"] == []


def _answer_schema(
    document: dict[str, Any], path: str, method: str, status: int
) -> jsonschema.Draft202012Validator:
    """A validator of one answer; its ``#/components/...`` references resolve in the
    document's own components."""
    content = document["paths"][path][method]["responses"][str(status)]["content"]
    schema = content["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


async def test_real_answers_match_the_published_schemas(app: httpx.AsyncClient) -> None:
    served = await app.get("/api/v1/openapi.json", headers=auth("center"))
    assert served.status_code == 200
    document = served.json()
    assert (await app.get("/api/v1/openapi.json")).status_code == 401
    created = await app.post(
        "/api/v1/requests",
        headers=auth("calltaker"),
        json={
            "caller_phone": "13800000000",
            "category": "water_main_burst",
            "description": "pipe burst on the street",
            "lat": XIGONG[0],
            "lon": XIGONG[1],
        },
    )
    assert created.status_code == 201, created.text
    _answer_schema(document, "/api/v1/requests", "post", 201).validate(created.json())
    detail = await app.get(f"/api/v1/requests/{created.json()['id']}", headers=auth("center"))
    _answer_schema(document, "/api/v1/requests/{request_id}", "get", 200).validate(detail.json())
    health = (await app.get("/api/v1/health", headers=auth("admin"))).json()
    _answer_schema(document, "/api/v1/health", "get", 200).validate(health)
    categories = (await app.get("/api/v1/categories", headers=auth("calltaker"))).json()
    _answer_schema(document, "/api/v1/categories", "get", 200).validate(categories)
    squad = await app.post(
        "/api/v1/squads", headers=auth("admin"), json={"unit": "water", "name": "W1"}
    )
    _answer_schema(document, "/api/v1/squads", "post", 201).validate(squad.json())
    roster = (await app.get("/api/v1/squads?unit=water", headers=auth("center"))).json()
    assert roster, "a squad to check the roster's schema against"
    _answer_schema(document, "/api/v1/squads", "get", 200).validate(roster)
    bad = await app.post("/api/v1/requests", headers=auth("calltaker"), json={"lat": 1})
    _answer_schema(document, "/api/v1/requests", "post", 422).validate(bad.json())
