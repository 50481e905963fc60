"""The OpenAPI document: request bodies with the real schemas, and errors.

FastAPI cannot see the bodies (the handlers read them raw, to accept YAML
and to refuse with our own messages), so each route names its body here,
from the same pydantic models that validate it. Every route may answer with
the one error shape; the statuses it can give are listed with it.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from virtpolicy.engine.jobs.run import JobRequest
from virtpolicy.engine.runtime.bus import KINDS
from virtpolicy.policy.cpuset import MAX_CPUSET_CHARS
from virtpolicy.policy.model import (
    CONTROL_RANGE,
    GUEST_NAME_MAX,
    GUEST_NAME_PATTERN,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_MAX,
    TIMEOUT_MAX,
    GuestPolicy,
)

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


#: A write that created the policy answers 201 (with its ETag), else 200.
CREATED = {201: {"description": "created: revision 1 of a new policy"}}
POLICY_BODY = {**body(ref("PolicyBody")), "responses": CREATED}
PATCH_BODY = {
    **body(ref("PolicyPatch"), "application/json", "application/merge-patch+json"),
    "responses": CREATED,
}
DOCUMENTS_BODY = body(
    {
        "anyOf": [
            ref("GuestPolicy"),
            {"type": "array", "items": ref("GuestPolicy"), "minItems": 1},
        ]
    },
    "application/json",
    "application/yaml",
)
JOB_BODY = body(ref("JobRequest"))

# -- what the models' own schemas cannot say -----------------------------------------

#: A libvirt domain name: 1-255 characters, no '/', no control characters, no
#: blank at either end.
GUEST_NAME: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": GUEST_NAME_MAX,
    "pattern": GUEST_NAME_PATTERN,
}
#: libvirt's cpuset syntax (``0-3,^2,8``): CPUs below 16384, selecting at least one.
CPUSET: dict[str, Any] = {
    "type": "string",
    "format": "cpuset",
    "minLength": 1,
    "maxLength": MAX_CPUSET_CHARS,
    "pattern": r"^[0-9 \t,^-]+$",
}
#: ``running``, ``agent``, ``tcp:HOST:PORT`` or ``exec:COMMAND``.
CONDITION: dict[str, Any] = {
    "type": "string",
    "format": "virtpolicy-condition",
    "pattern": r"^(running|agent|tcp:.+:[0-9]{1,5}|exec:[\s\S]*\S[\s\S]*)$",
}
LABEL_KEY = {"type": "string", "pattern": LABEL_KEY_PATTERN}
LABEL_VALUE = {
    "type": "string",
    "maxLength": LABEL_VALUE_MAX,
    "pattern": f"^[^{CONTROL_RANGE}]*$",
}
#: A vCPU number below 16384, as JSON keys are written (leading zeros allowed).
VCPU_KEY = {
    "type": "string",
    "pattern": r"^(?=[0-9]{1,6}$)0*(0|[1-9][0-9]{0,3}|1[0-5][0-9]{3}|16[0-2][0-9]{2}"
    r"|163[0-7][0-9]|1638[0-3])$",
}
#: A revision's ETag in If-Match (``"3"``, ``W/"3"`` or ``3``), and an event id.
ETAG_PATTERN = r'^[ \t]*(W/)?"?[0-9]{1,12}"?[ \t]*$'
EVENT_ID_PATTERN = r"^[ \t]*[0-9]{1,18}[ \t]*$"
#: A size with a binary unit (``512M``, ``1.5G``), from 1M to 64T, in whole KiB.
SIZE: dict[str, Any] = {
    "type": "string",
    "format": "virtpolicy-size",
    "pattern": r"^\s*[0-9]{1,11}(\.[0-9]{1,6})?\s*[KMGTkmgt](iB)?\s*$",
}
#: ``KEY=VALUE`` in a query.
SELECTOR = {"type": "string", "pattern": "^[^=]+="}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _refine(schemas: dict[str, Any]) -> None:
    """Say in the document what the models' validators check: names, cpusets,
    conditions, labels, and which CPU and NUMA fields go together. What no JSON
    Schema can say is in the descriptions: a dependency on the guest itself, a
    guest listed twice among its dependencies, and a cycle are refused (422; a
    cycle through stored policies is a conflict, 409)."""
    policy, cpu, numa = schemas["GuestPolicy"], schemas["CpuPolicy"], schemas["NumaPolicy"]
    memory = schemas["MemoryPolicy"]
    policy["properties"]["guest"] = GUEST_NAME
    policy["properties"]["labels"].update(
        {"propertyNames": LABEL_KEY, "additionalProperties": LABEL_VALUE}
    )
    policy["description"] += (
        " A dependency on the guest itself, a guest listed twice in requires and"
        " wants, and a dependency cycle are refused."
    )
    dependency = schemas["Dependency"]["properties"]
    dependency["guest"] = GUEST_NAME
    dependency["when"] = {**CONDITION, "default": "running"}
    props = cpu["properties"]
    props["vcpupin"].update({"propertyNames": VCPU_KEY, "additionalProperties": CPUSET})
    props["vcpus"] = {"anyOf": [CPUSET, {"const": "auto"}, {"type": "null"}], "default": None}
    props["allowed"] = {**_nullable(CPUSET), "default": None}
    props["emulatorpin"] = {**_nullable(CPUSET), "default": None}
    unset = {"type": "null"}
    dedicated = {"properties": {"placement": {"const": "dedicated"}}, "required": ["placement"]}
    auto = {"properties": {"vcpus": {"const": "auto"}}, "required": ["vcpus"]}
    cpu["allOf"] = [
        {  # dedicated: the placer chooses the CPUs; shared: no dedicated options
            "if": dedicated,
            "then": {
                "properties": {
                    "vcpus": unset,
                    "emulatorpin": unset,
                    "vcpupin": {"maxProperties": 0},
                }
            },
            "else": {
                "properties": {
                    "threads": {"const": "prefer"},
                    "emulator": {"const": "share"},
                    "topology": unset,
                }
            },
        },
        {  # auto: a tuner places every vCPU, within allowed
            "if": auto,
            "then": {"properties": {"vcpupin": {"maxProperties": 0}}},
            "else": {"properties": {"allowed": unset}},
        },
    ]
    numa["allOf"] = [
        {
            "if": {"properties": {"memory": {"type": "string"}}, "required": ["memory"]},
            "then": {"properties": {"nodes": {"type": "integer"}}, "required": ["nodes"]},
        }
    ]
    for name in ("floor", "soft_limit"):
        memory["properties"][name] = {**_nullable(SIZE), "default": None}
    memory["allOf"] = [
        {  # the tuner moves the balloon only above a floor
            "if": {"properties": {"balloon": {"const": "auto"}}, "required": ["balloon"]},
            "then": {"properties": {"floor": SIZE}, "required": ["floor"]},
        }
    ]
    # PUT's body may leave out the guest: it is the URL's.
    schemas["PolicyBody"] = {
        **{k: v for k, v in policy.items() if k != "required"},
        "title": "PolicyBody",
        "description": policy["description"] + " The guest, if given, is the URL's.",
    }
    job = schemas["JobRequest"]
    job["properties"]["guests"].update({"items": GUEST_NAME, "uniqueItems": True})
    job["properties"]["to"] = {"anyOf": [GUEST_NAME, {"type": "null"}]}
    none, some = {"maxItems": 0}, {"minItems": 1}
    named = _selection(some, False, {"maxProperties": 0}, "guests")
    job["allOf"] = [
        {
            "oneOf": [  # exactly one way to choose the guests
                named,
                _selection(none, True, {"maxProperties": 0}, "all"),
                _selection(none, False, {"minProperties": 1}, "labels"),
            ]
        },
        {
            "oneOf": [  # a migration names its guests and its host; nothing else has a host
                {
                    "properties": {"action": {"const": "migrate"}, "to": GUEST_NAME},
                    "required": ["to"],
                    "allOf": [named],
                },
                {"properties": {"action": {"enum": ["start", "stop"]}, "to": {"type": "null"}}},
            ]
        },
    ]


def _selection(
    guests: dict[str, Any], every: bool, labels: dict[str, Any], given: str
) -> dict[str, Any]:
    return {
        "properties": {"guests": guests, "all": {"const": every}, "labels": labels},
        "required": [given],
    }


#: Error statuses every route may give, in the one error shape.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
    for code, text in (
        (400, "the path or the query is not UTF-8 text"),
        (401, "no credentials (TCP needs a bearer token)"),
        (403, "the role or the socket does not allow it"),
        (404, "no such guest, revision, job or route"),
        (405, "method not allowed; the Allow header lists those that are"),
        (409, "conflict with the stored state"),
        (412, "If-Match names a revision that is no longer current"),
        (413, "body over the limit"),
        (415, "a body that is not JSON (or YAML, where the route reads it)"),
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
                "properties": {
                    "when": CONDITION,
                    "timeout": {"type": "integer", "minimum": 1, "maximum": TIMEOUT_MAX},
                },
            },
            {"type": "null"},
        ]
    }
    keyed = {
        "anyOf": [
            {"type": "object", "propertyNames": GUEST_NAME, "additionalProperties": dependency},
            {"type": "null"},
        ]
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "guest": {**GUEST_NAME, "description": "the guest of the URL, if given"},
            "cpu": {"anyOf": [ref("CpuPolicy"), {"type": "null"}]},
            "start": {"anyOf": [ref("StartPolicy"), {"type": "null"}]},
            "stop": {"anyOf": [ref("StopPolicy"), {"type": "null"}]},
            "labels": {
                "anyOf": [
                    {
                        "type": "object",
                        "propertyNames": LABEL_KEY,
                        "additionalProperties": {"anyOf": [LABEL_VALUE, {"type": "null"}]},
                    },
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
            _refine(schemas)
            schemas["PolicyPatch"] = _patch_schema()
            schemas["Error"] = _error_schema()
            _parameters(doc, tcp=app.state.listener == "tcp")
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _parameters(doc: dict[str, Any], *, tcp: bool) -> None:
    """Guest names in paths and queries, label selectors, headers' forms, and how
    a caller is known: a bearer token over TCP (a security scheme, not a header
    parameter); on the Unix sockets the peer's credentials, so no scheme."""
    if tcp:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            operation["parameters"] = [
                {**param, "schema": _parameter(param)}
                for param in operation.get("parameters", [])
                if (param["name"], param["in"]) != ("authorization", "header")
            ]


#: (name, where) -> what one value of the parameter may be, where FastAPI's own
#: schema says less.
_PARAMETERS: dict[tuple[str, str], dict[str, Any]] = {
    ("guest", "path"): GUEST_NAME,
    ("guest", "query"): GUEST_NAME,
    ("label", "query"): SELECTOR,
    ("kind", "query"): {"enum": list(KINDS)},
    ("operation", "path"): {"type": "string", "enum": ["start", "stop"]},
    ("if-match", "header"): {"type": "string", "pattern": ETAG_PATTERN},
    ("last-event-id", "header"): {"type": "string", "pattern": EVENT_ID_PATTERN},
}


def _parameter(param: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema from :data:`_PARAMETERS`, as a list in a query that
    takes several."""
    schema: dict[str, Any] = param["schema"]
    found = _PARAMETERS.get((param["name"], param["in"]))
    if found is None:
        return schema
    many = param["in"] == "query" and '"array"' in json.dumps(schema)
    return {"type": "array", "items": found} if many else found
