"""The HTTP API's OpenAPI 3.1 document: complete, current, valid, and truthful about the
answers a real hub gives."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from openapi_spec_validator import validate

from server.api import openapi
from server.hub import create_app
from server.settings import load_settings
from tests.helpers import XIGONG, Api, auth


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
    assert committed == _document(), "run: python -m server.api.openapi"


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


async def test_real_answers_match_the_published_schemas(hubs) -> None:
    hub = hubs.start()
    api = Api(hub)
    served = await api.http.get("/api/v1/openapi.json", headers=auth("center"))
    assert served.status_code == 200
    document = served.json()
    assert (await api.http.get("/api/v1/openapi.json")).status_code == 401
    created = await api.request(*XIGONG)
    _answer_schema(document, "/api/v1/requests", "post", 201).validate(created)
    detail = await api.get_request(created["id"])
    _answer_schema(document, "/api/v1/requests/{request_id}", "get", 200).validate(detail)
    health = (await api.http.get("/api/v1/health", headers=auth("admin"))).json()
    _answer_schema(document, "/api/v1/health", "get", 200).validate(health)
    categories = (await api.http.get("/api/v1/categories", headers=auth("calltaker"))).json()
    _answer_schema(document, "/api/v1/categories", "get", 200).validate(categories)
    bad = await api.http.post("/api/v1/requests", headers=auth("calltaker"), json={"lat": 1})
    _answer_schema(document, "/api/v1/requests", "post", 422).validate(bad.json())
    await api.close()
