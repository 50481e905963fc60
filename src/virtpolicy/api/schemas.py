"""The OpenAPI document: request bodies with the real schemas, and errors.

FastAPI cannot see the bodies (the handlers read them raw, to accept YAML
and to refuse with our own messages), so each route names its body here,
from the same pydantic models that validate it. Every route may answer with
the one error shape; the statuses it can give are listed with it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from virtpolicy.engine.jobs import JobRequest
from virtpolicy.policy.model import GuestPolicy

_REF = "#/components/schemas/{model}"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def body(schema: dict[str, Any], *media: str) -> dict[str, Any]:
    """``openapi_extra`` declaring a required request body of ``schema``."""
    return {
        "requestBody": {
            "required": True,
            "content": {m: {"schema": schema} for m in media or ("application/json",)},
        }
    }


POLICY_BODY = body(ref("GuestPolicy"))
PATCH_BODY = body(ref("PolicyPatch"), "application/json", "application/merge-patch+json")
DOCUMENTS_BODY = body(
    {"anyOf": [ref("GuestPolicy"), {"type": "array", "items": ref("GuestPolicy")}]},
    "application/json",
    "application/yaml",
)
JOB_BODY = body(ref("JobRequest"))

#: Error statuses every route may give, in the one error shape.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
    for code, text in (
        (401, "no credentials (TCP needs a bearer token)"),
        (403, "the role or the socket does not allow it"),
        (404, "no such guest, revision, job or route"),
        (405, "method not allowed; the Allow header lists those that are"),
        (409, "conflict with the stored state"),
        (412, "If-Match names a revision that is no longer current"),
        (413, "body over the limit"),
        (422, "invalid input; the message names the field"),
        (503, "store busy, or libvirt not connected"),
    )
}


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "message", "field"],
                "properties": {
                    "type": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": ["string", "null"]},
                },
            }
        },
    }


def _patch_schema() -> dict[str, Any]:
    """A merge patch: any field of the policy, null to remove; dependencies by guest."""
    dependency = {
        "anyOf": [
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"when": {"type": "string"}, "timeout": {"type": "integer"}},
            },
            {"type": "null"},
        ]
    }
    keyed = {"anyOf": [{"type": "object", "additionalProperties": dependency}, {"type": "null"}]}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "guest": {"type": "string"},
            "cpu": {"anyOf": [ref("CpuPolicy"), {"type": "null"}]},
            "start": {"anyOf": [ref("StartPolicy"), {"type": "null"}]},
            "stop": {"anyOf": [ref("StopPolicy"), {"type": "null"}]},
            "labels": {
                "anyOf": [
                    {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                    {"type": "null"},
                ]
            },
            "requires": keyed,
            "wants": keyed,
        },
    }


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` give the document with these schemas in it."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in (GuestPolicy, JobRequest):
                schema = model.model_json_schema(ref_template=_REF)
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            schemas["PolicyPatch"] = _patch_schema()
            schemas["Error"] = _error_schema()
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
