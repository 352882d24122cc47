"""The admin API's OpenAPI 3.1 document (served at ``/openapi.json``; docs/operations.md's
REST reference is generated from it by docs/generate.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["document", "reference_markdown"]

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The connector (pipeline) name.",
    "schema": {"type": "string"},
}
_DRY_RUN = {
    "name": "dry_run",
    "in": "query",
    "required": False,
    "description": "true: say what the reset would do; change nothing.",
    "schema": {"type": "boolean", "default": False},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _PROBLEM for c in (401, *codes)}


def _op(
    summary: str,
    ok: dict[str, Any],
    *errors: int,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    code: str = "200",
    tag: str = "connectors",
    public: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "operationId": "",
        "responses": {code: ok, **_errors(*errors)},
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if public:
        op["security"] = [{}, {"bearer": []}]
    return op


_TASK = {
    "type": "object",
    "required": ["id", "kind", "connector", "state", "restarts", "records_in", "records_out"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"enum": ["source", "sink"]},
        "connector": {"type": "string"},
        "state": {
            "enum": ["STARTING", "RUNNING", "FAILED", "DONE", "STOPPED"],
            "description": "The task's own state.",
        },
        "error": {"oneOf": [_ref("Error"), {"type": "null"}]},
        "restarts": {"type": "integer", "minimum": 0},
        "next_restart_at": {"type": ["string", "null"], "format": "date-time"},
        "backoff_seconds": {"type": ["number", "null"]},
        "records_in": {"type": "integer"},
        "records_out": {"type": "integer"},
        "failed": {"type": "integer"},
        "dead_lettered": {"type": "integer"},
    },
}

_TARGET_STATE = {
    "enum": ["STARTED", "PAUSED", "STOPPED"],
    "description": "What pause, resume and stop on any member asked of the pipeline; every "
    "member applies it to the units it owns.",
}

_CLUSTER_UNIT = {
    "type": "object",
    "description": "A unit of a cluster's pipeline (its source, or one sink's consumer group) "
    "and who owns it.",
    "required": ["unit", "owner", "worker", "epoch", "lease_left", "local", "task"],
    "properties": {
        "unit": {
            "type": "string",
            "description": "`source PIPELINE/NAME` or `group PIPELINE/SINK`.",
        },
        "owner": {
            "type": ["string", "null"],
            "description": "The identity of the member whose lease is live, or null (none).",
        },
        "worker": {"type": ["string", "null"], "description": "The owner, described."},
        "epoch": {
            "type": ["integer", "null"],
            "description": "The lease's fencing epoch (kept after the lease expired).",
        },
        "lease_left": {"type": ["number", "null"], "description": "Seconds (negative: expired)."},
        "local": {"type": "boolean", "description": "Whether this worker runs the unit."},
        "task": {
            "oneOf": [_ref("Task"), {"type": "null"}],
            "description": "This worker's task of the unit (null unless local).",
        },
    },
}

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "An RFC 7807 problem.",
        "required": ["title", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "problems": {"type": "array", "items": _ref("ValidationProblem")},
        },
    },
    "ValidationProblem": {
        "type": "object",
        "required": ["message"],
        "properties": {
            "location": {
                "type": ["string", "null"],
                "description": "Where: connectors/NAME/config (or connector-plugins/TYPE/config).",
            },
            "message": {
                "type": "string",
                "description": "The problem, naming the field by its path in the body.",
            },
        },
    },
    "Error": {
        "type": "object",
        "description": "A task's last failure (kept after it restarted).",
        "required": ["task", "message", "at"],
        "properties": {
            "task": {"type": "string"},
            "kind": {"enum": ["source", "sink"]},
            "message": {"type": "string"},
            "at": {"type": ["string", "null"], "format": "date-time"},
            "topic": {"type": ["string", "null"], "description": "The failing record's topic."},
            "offset": {"type": ["integer", "null"], "description": "The failing record's offset."},
        },
    },
    "Task": _TASK,
    "Status": {
        "type": "object",
        "required": ["name", "state", "tasks", "records_in", "records_out", "lag"],
        "properties": {
            "name": {"type": "string"},
            "state": {"enum": ["RUNNING", "DEGRADED", "FAILED", "PAUSED", "STOPPED"]},
            "origin": {
                "type": "string",
                "description": "`api`, `file <path>`, or `cluster <name> version <n>`.",
            },
            "error": {"oneOf": [_ref("Error"), {"type": "null"}]},
            "restarts": {"type": "integer"},
            "next_restart_at": {"type": ["string", "null"], "format": "date-time"},
            "records_in": {"type": "integer"},
            "records_out": {"type": "integer"},
            "rate_in": {"type": "number", "description": "Records/s in, last 5 s."},
            "rate_out": {"type": "number", "description": "Records/s written by sinks."},
            "lag": {
                "type": "integer",
                "description": "Stored records its sinks have not committed.",
            },
            "tasks": {
                "type": "array",
                "items": _ref("Task"),
                "description": "This worker's tasks (in cluster mode: the units it owns).",
            },
            "cluster": {
                "type": "object",
                "description": "Cluster mode only: the pipeline's version and who owns each of "
                "its units.",
                "required": ["name", "version", "target_state", "units"],
                "properties": {
                    "name": {"type": "string", "description": "The cluster."},
                    "version": {"type": ["integer", "null"]},
                    "target_state": _TARGET_STATE,
                    "units": {"type": "array", "items": _ref("ClusterUnit")},
                },
            },
        },
    },
    "ClusterUnit": _CLUSTER_UNIT,
    "Cluster": {
        "type": "object",
        "description": "The whole cluster as the store shows it (`meshconnect status --cluster "
        "--json`), with this worker and its tasks.",
        "required": ["cluster", "store", "member", "members", "pipelines"],
        "properties": {
            "cluster": {"type": "string"},
            "store": {"type": "string"},
            "member": {
                "type": "object",
                "description": "This worker.",
                "required": ["id", "worker", "joined"],
                "properties": {
                    "id": {"type": ["string", "null"]},
                    "worker": {"type": ["string", "null"]},
                    "joined": {"type": "boolean"},
                },
            },
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "worker", "alive", "lease_left"],
                    "properties": {
                        "id": {"type": "string"},
                        "worker": {"type": "string"},
                        "alive": {"type": "boolean"},
                        "lease_left": {"type": "number"},
                    },
                },
            },
            "pipelines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "version", "target_state", "units", "loaded"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": ["integer", "null"]},
                        "target_state": _TARGET_STATE,
                        "published_by": {"type": "string"},
                        "file": {"type": ["string", "null"]},
                        "loaded": {
                            "type": "boolean",
                            "description": "Whether this worker could load it (plugins, "
                            "variables).",
                        },
                        "units": {"type": "array", "items": _ref("ClusterUnit")},
                    },
                },
            },
        },
    },
    "Info": {
        "type": "object",
        "required": ["name", "type", "origin", "config", "tasks"],
        "properties": {
            "name": {"type": "string"},
            "type": {"enum": ["source", "sink", "pipeline"]},
            "origin": {"type": "string"},
            "config": {"type": "object", "description": "The pipeline, secrets masked."},
            "tasks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "kind", "connector"],
                    "properties": {
                        "id": {"type": "string"},
                        "kind": {"enum": ["source", "sink"]},
                        "connector": {"type": "string"},
                    },
                },
            },
        },
    },
    "PipelineConfig": {
        "type": "object",
        "description": "One entry of a pipeline file's `pipelines:` list, as JSON (docs/yaml.md); "
        "`name` may be left out (the URL names it).",
        "properties": {
            "name": {"type": "string"},
            "source": {"type": "object"},
            "transforms": {"type": "array"},
            "topic": {"type": "string"},
            "sinks": {"type": "array"},
        },
    },
    "Offsets": {
        "type": "object",
        "required": ["name", "sources", "sinks"],
        "properties": {
            "name": {"type": "string"},
            "sources": {"type": "array", "items": {"type": "object"}},
            "sinks": {"type": "array", "items": {"type": "object"}},
        },
    },
    "OffsetsChange": {
        "type": "object",
        "description": "Where to move the source and/or sinks: `beginning`, `end`, an offset "
        "(sinks) or a position object per partition (sources).",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            "source": {"oneOf": [{"enum": ["beginning", "end"]}, {"type": "object"}]},
            "sinks": {
                "type": "object",
                "additionalProperties": {
                    "oneOf": [{"enum": ["beginning", "end"]}, {"type": "integer", "minimum": 0}]
                },
            },
        },
    },
    "ResetResult": {
        "type": "object",
        "required": ["name", "dry_run", "plans"],
        "properties": {
            "name": {"type": "string"},
            "dry_run": {"type": "boolean"},
            "plans": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["kind", "id", "describe"],
                    "properties": {
                        "kind": {"enum": ["source", "sink"]},
                        "id": {"type": "string"},
                        "new": {},
                        "describe": {"type": "string"},
                    },
                },
            },
        },
    },
    "Plugin": {
        "type": "object",
        "required": ["name", "kind", "status"],
        "properties": {
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "plugin": {"type": ["string", "null"]},
            "distribution": {"type": ["string", "null"]},
            "version": {"type": ["string", "null"]},
            "status": {"type": "string"},
            "reason": {"type": ["string", "null"]},
        },
    },
    "Validation": {
        "type": "object",
        "required": ["name", "kind", "error_count", "problems"],
        "properties": {
            "name": {"type": "string"},
            "kind": {"enum": ["source", "sink"]},
            "error_count": {"type": "integer"},
            "problems": {"type": "array", "items": _ref("ValidationProblem")},
        },
    },
    "Topic": {
        "type": "object",
        "required": ["topic", "records", "start", "end", "lag"],
        "properties": {
            "topic": {"type": "string"},
            "records": {"type": "integer", "description": "Records stored."},
            "start": {"type": "integer"},
            "end": {"type": "integer"},
            "lag": {
                "type": "object",
                "description": "Consumer lag in records, by consumer group.",
                "additionalProperties": {"type": "integer"},
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["UP", "READY", "NOT_READY"]},
            "detail": {"type": "string"},
        },
    },
}

_ACCEPTED = _json(
    {"type": "object", "properties": {"name": {"type": "string"}, "state": {"type": "string"}}},
    "Done; the connector's state after it.",
)


def document(version: str = "0") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the admin API."""
    expand = {
        "name": "expand",
        "in": "query",
        "required": False,
        "description": "status and/or info: an object by name with those parts instead of a "
        "list of names.",
        "schema": {"type": "array", "items": {"enum": ["status", "info"]}},
        "style": "form",
        "explode": True,
    }
    # PUT /connectors/{name} and PUT /connectors/{name}/config are one operation: 201 when
    # the connector is new, 200 when it replaced one.
    put = _op(
        "Add or replace a connector (kept in the store: it survives a restart; 409 in "
        "cluster mode).",
        _json(_ref("Info"), "Replaced."),
        400,
        409,
        params=[_NAME],
        body=_ref("PipelineConfig"),
    )
    put["responses"]["201"] = _json(_ref("Info"), "Added.")
    delete = _op(
        "Stop and delete a connector added over the API (409 in cluster mode).",
        {"description": "Deleted."},
        404,
        409,
        params=[_NAME],
        code="204",
    )
    paths: dict[str, Any] = {
        "/connectors": {
            "get": _op(
                "The connectors (pipelines) of this worker (in cluster mode: of the cluster, "
                "those this worker can load).",
                _json(
                    {
                        "oneOf": [
                            {"type": "array", "items": {"type": "string"}},
                            {
                                "type": "object",
                                "additionalProperties": {
                                    "type": "object",
                                    "properties": {
                                        "status": _ref("Status"),
                                        "info": _ref("Info"),
                                    },
                                },
                            },
                        ]
                    },
                    "Names, or with expand an object by name.",
                ),
                400,
                params=[expand],
            )
        },
        "/connectors/{name}": {
            "get": _op(
                "A connector's config and tasks.", _json(_ref("Info"), "It."), 404, params=[_NAME]
            ),
            "put": put,
            "delete": delete,
        },
        "/connectors/{name}/config": {
            "get": _op(
                "A connector's config, secrets masked.",
                _json({"type": "object"}, "The pipeline as loaded."),
                404,
                params=[_NAME],
            ),
            "put": dict(put),
            "delete": dict(delete),
        },
        "/connectors/{name}/status": {
            "get": _op(
                "A connector's state, last error, restarts, counts, rates and lag.",
                _json(_ref("Status"), "Its status."),
                404,
                params=[_NAME],
            )
        },
        "/connectors/{name}/pause": {
            "put": _op(
                "Pause: the source stops polling; sinks commit and wait (in cluster mode on "
                "every member, and on units taken over later; 409 when stopped).",
                _ACCEPTED,
                404,
                409,
                params=[_NAME],
                code="202",
            )
        },
        "/connectors/{name}/resume": {
            "put": _op(
                "Resume a paused or stopped connector (in cluster mode on every member).",
                _ACCEPTED,
                404,
                409,
                params=[_NAME],
                code="202",
            )
        },
        "/connectors/{name}/stop": {
            "put": _op(
                "Stop: drain the source, flush and commit the sinks, end the tasks (in cluster "
                "mode on every member: no member runs them until resumed).",
                _ACCEPTED,
                404,
                409,
                params=[_NAME],
                code="202",
            )
        },
        "/connectors/{name}/restart": {
            "post": _op(
                "Stop the connector and start it again (unpaused); in cluster mode the units "
                "this worker owns, paused if the connector is (409 when it owns none).",
                _ACCEPTED,
                404,
                409,
                params=[_NAME],
                code="202",
            )
        },
        "/connectors/{name}/offsets": {
            "get": _op(
                "Source positions and sink offsets with lag.",
                _json(_ref("Offsets"), "Its offsets."),
                404,
                params=[_NAME],
            ),
            "patch": _op(
                "Move the source and/or sinks while running (stop, reset, start again; in "
                "cluster mode only with dry_run).",
                _json(_ref("ResetResult"), "What moved (or would, with dry_run)."),
                400,
                404,
                409,
                params=[_NAME, _DRY_RUN],
                body=_ref("OffsetsChange"),
            ),
            "delete": _op(
                "Reset the source and every sink to the beginning, while running (in cluster "
                "mode only with dry_run).",
                _json(_ref("ResetResult"), "What moved (or would, with dry_run)."),
                400,
                404,
                409,
                params=[_NAME, _DRY_RUN],
            ),
        },
        "/connector-plugins": {
            "get": _op(
                "Installed connectors and transforms with their status.",
                _json({"type": "array", "items": _ref("Plugin")}, "Every plugin."),
                tag="plugins",
            )
        },
        "/connector-plugins/{type}/config/validate": {
            "put": _op(
                "Validate a connector config: the problems `meshconnect validate` prints.",
                _json(_ref("Validation"), "The problems (none: valid)."),
                400,
                params=[
                    {
                        "name": "type",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "The connector plugin name.",
                    },
                    {
                        "name": "kind",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": ["source", "sink"]},
                        "description": "Validate as a source or a sink (default: source if "
                        "the plugin has one).",
                    },
                ],
                body={"type": "object"},
                tag="plugins",
            )
        },
        "/topics": {
            "get": _op(
                "Stored topics: records, offsets and each consumer group's lag.",
                _json({"type": "array", "items": _ref("Topic")}, "Every topic."),
                tag="worker",
            )
        },
        "/cluster": {
            "get": _op(
                "Cluster mode: the members, the pipelines with their versions, who owns each "
                "unit with its epoch, and this worker's tasks.",
                _json(_ref("Cluster"), "The cluster."),
                404,
                tag="worker",
            )
        },
        "/health": {
            "get": _op(
                "The worker process answers.",
                _json(_ref("Health"), "Up."),
                tag="worker",
            )
        },
        "/ready": {
            "get": _op(
                "Every pipeline started (leases taken, tasks out of STARTING) and not stopping.",
                _json(_ref("Health"), "Ready."),
                tag="worker",
            ),
        },
        "/metrics": {
            "get": _op(
                "Prometheus text exposition of the worker's metrics.",
                {
                    "description": "The metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                tag="worker",
            )
        },
    }
    paths["/"] = {
        "get": _op(
            "The dashboard page (no data in it: it asks for the token and polls the API).",
            {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
            tag="worker",
        )
    }
    paths["/openapi.json"] = {
        "get": _op(
            "This document.",
            _json({"type": "object"}, "OpenAPI 3.1."),
            tag="worker",
        )
    }
    paths["/ready"]["get"]["responses"]["503"] = _json(_ref("Health"), "Not ready (yet).")
    for path, ops in paths.items():
        for method, op in ops.items():
            op["operationId"] = (
                f"{method}{path.replace('/', '_').replace('{', '').replace('}', '')}"
            )
            op["responses"] = dict(op["responses"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "meshconnect admin API",
            "version": version,
            "description": "Operate a running meshconnect worker (docs/operations.md).",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Problem": {
                    "description": "An error (RFC 7807).",
                    "content": {"application/problem+json": {"schema": _ref("Problem")}},
                }
            },
        },
    }


def reference_markdown() -> str:
    """The REST reference of docs/operations.md, from :func:`document`."""
    doc = document()
    lines = ["| method | path | what | success | errors |", "| --- | --- | --- | --- | --- |"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = sorted(op["responses"])
            ok = ", ".join(c for c in codes if c < "400")
            bad = ", ".join(c for c in codes if c >= "400")
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
            query = f" (`?{'`, `?'.join(params)}`)" if params else ""
            lines.append(
                f"| {method.upper()} | `{path}`{query} | {op['summary']} | {ok} | {bad or '-'} |"
            )
    lines.append("")
    lines.append("Schemas (JSON Schema, from `/openapi.json`):")
    lines.append("")
    for name, schema in doc["components"]["schemas"].items():
        props = ", ".join(f"`{p}`" for p in schema.get("properties", {}))
        what = schema.get("description", "")
        lines.append(f"- **{name}**: {what + ' ' if what else ''}{props}".rstrip())
    return "\n".join(lines) + "\n"
