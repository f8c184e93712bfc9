"""The OpenAPI document is valid, shipped with the package, and lists exactly the routes.

A route added without documenting it (or a documented route that is gone) fails here;
whether the responses match the document is Schemathesis' job (tests/test_schemathesis.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from cronmetrics.web.api import OPENAPI

REPO = Path(__file__).resolve().parent.parent
DOCS_SPEC = REPO / "docs" / "openapi.yaml"
METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DOCS_SPEC.read_text())
    return data


def test_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_docs_copy_is_the_packaged_file() -> None:
    """docs/openapi.yaml is a relative symlink, so the two can never drift."""
    assert DOCS_SPEC.is_symlink()
    assert not Path(DOCS_SPEC.readlink()).is_absolute()
    assert DOCS_SPEC.resolve() == OPENAPI.resolve()
    assert OPENAPI.parent.name == "web"


def test_package_data_ships_the_document() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "openapi.yaml" in project["tool"]["setuptools"]["package-data"]["cronmetrics.web"]


def test_served_document_is_docs_openapi_yaml(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client()
    response = client.get("/api/openapi.yaml")
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    assert response.data == DOCS_SPEC.read_bytes()


def _flask_routes(client: Any) -> set[tuple[str, str]]:
    routes = set()
    for rule in client.application.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("dashboard."):
            continue  # the dashboard's HTML pages: docs/dashboard.md
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method, path))
    return routes


def _spec_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_is_documented_and_every_documented_route_exists(
    spec: dict[str, Any],
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    routes = _flask_routes(make_client())
    documented = _spec_routes(spec)
    assert routes - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - routes == set(), "documented routes the server does not have"


def test_path_parameters_are_declared(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            if method not in METHODS:
                continue
            params = [*item.get("parameters", []), *operation.get("parameters", [])]
            declared = {
                _resolve(spec, p)["name"] for p in params if _resolve(spec, p)["in"] == "path"
            }
            assert declared == names, f"{method.upper()} {path}"


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_job_definition_matches_the_published_job_schema(spec: dict[str, Any]) -> None:
    published = json.loads((REPO / "schemas" / "job.schema.json").read_text())
    documented = spec["components"]["schemas"]["JobDefinition"]
    assert set(documented["properties"]) == set(published["properties"])
    for key in ("properties", "required", "anyOf", "additionalProperties", "type"):
        assert documented[key] == published[key], key


def test_job_schema_shows_every_definition_field(spec: dict[str, Any]) -> None:
    """A Job is its definition plus id, file, unmanaged and state."""
    job = spec["components"]["schemas"]["Job"]
    definition = set(spec["components"]["schemas"]["JobDefinition"]["properties"])
    assert set(job["properties"]) == definition | {"id", "file", "unmanaged", "state"}
    assert set(job["required"]) == set(job["properties"])


def test_every_error_response_uses_the_error_schema(spec: dict[str, Any]) -> None:
    error_ref = "#/components/schemas/Error"
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")) or path == "/health/deep":
                    continue
                if status == "414":  # gunicorn's own HTML page, before the app runs
                    assert response == {"$ref": "#/components/responses/UriTooLong"}
                    continue
                body = _resolve(spec, response)["content"]["application/json"]["schema"]
                assert body == {"$ref": error_ref}, f"{method.upper()} {path} {status}"


def test_operations_that_need_a_token_name_their_scope(spec: dict[str, Any]) -> None:
    scopes = {"admin", "submit", "read", "metrics", "maintenance"}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            security = operation.get("security", spec.get("security"))
            assert security is not None, f"{method.upper()} {path} has no security"
            for requirement in security:
                for scheme, needed in requirement.items():
                    assert scheme == "bearerAuth"
                    assert len(needed) == 1 and needed[0] in scopes
                    assert f"`{needed[0]}`" in operation["description"], path
            if security and all(security):  # a token is required
                assert "401" in operation["responses"], f"{method.upper()} {path}"
                assert "403" in operation["responses"], f"{method.upper()} {path}"
                assert "429" in operation["responses"], f"{method.upper()} {path}"
