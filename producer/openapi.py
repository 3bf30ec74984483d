"""The ingest API's OpenAPI 3.1 description: served at /v1/openapi.json and committed as
docs/openapi.json (a unit test keeps the two equal)."""

from __future__ import annotations

import json
from typing import Any

_ERROR = {"description": "why, in one line of text", "content": {"text/plain": {}}}
_BUSY = {
    **_ERROR,
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}
_WAIT = {
    "name": "wait",
    "in": "query",
    "schema": {"type": "string", "enum": ["written"]},
    "description": "hold the answer until a consumer has durably written the bytes",
}
_TIMEOUT = {
    "name": "timeout",
    "in": "query",
    "schema": {"type": "number", "minimum": 0},
    "description": "seconds to wait with wait=written (capped by --ingest.max-wait)",
}
_RECEIPT_REF = {"$ref": "#/components/schemas/Receipt"}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "logship producer ingest API",
        "version": "1",
        "description": "POST newline-terminated lines; get a receipt once the broker confirmed "
        "them; ask whether they are durably written in an output yet, and where.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Receipt": {
                "type": "object",
                "required": ["id", "state", "source", "start", "end", "lines"],
                "properties": {
                    "id": {"type": "string"},
                    "state": {"type": "string", "enum": ["confirmed", "written"]},
                    "source": {"type": "string", "description": "the ingest source identity"},
                    "start": {"type": "integer", "description": "first byte in the source"},
                    "end": {"type": "integer", "description": "just past the last byte"},
                    "lines": {"type": "integer"},
                    "consumer": {"type": "string", "description": "written: which consumer"},
                    "output": {"type": "string", "description": "written: its output file"},
                    "output_start": {"type": "integer", "description": "written, one piece"},
                    "output_end": {"type": "integer", "description": "written, one piece"},
                    "written": {
                        "type": "array",
                        "description": "written: where each piece of [start, end) landed",
                        "items": {
                            "type": "object",
                            "properties": {
                                "consumer": {"type": "string"},
                                "output": {"type": "string"},
                                "start": {"type": "integer"},
                                "end": {"type": "integer"},
                                "output_start": {"type": "integer"},
                                "output_end": {"type": "integer"},
                            },
                        },
                    },
                },
            }
        },
    },
    "security": [{"bearer": []}, {}],
    "paths": {
        "/v1/lines": {
            "post": {
                "summary": "Ship lines; answered once the broker confirmed them",
                "parameters": [
                    _WAIT,
                    _TIMEOUT,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "schema": {"type": "string", "maxLength": 200},
                        "description": "a retried POST with the same key and body lands once "
                        "(within one producer run, while its receipt is kept)",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "description": "newline-terminated lines, any bytes; Content-Encoding gzip "
                    "accepted",
                    "content": {
                        "application/octet-stream": {"schema": {"type": "string"}},
                        "text/plain": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": {
                        "description": "confirmed by the broker (written, with wait=written)",
                        "content": {"application/json": {"schema": _RECEIPT_REF}},
                    },
                    "202": {
                        "description": "wait=written timed out: confirmed, not written yet",
                        "content": {"application/json": {"schema": _RECEIPT_REF}},
                    },
                    "400": {**_ERROR, "description": "no trailing newline, empty, bad gzip"},
                    "401": {**_ERROR, "description": "missing or wrong bearer token"},
                    "408": {**_ERROR, "description": "the body came slower than the read timeout"},
                    "413": {**_ERROR, "description": "larger than --ingest.max-body-bytes"},
                    "415": {**_ERROR, "description": "another Content-Type or Content-Encoding"},
                    "422": {**_ERROR, "description": "Idempotency-Key reused with another body"},
                    "429": {**_BUSY, "description": "the confirm window is full: retry later"},
                    "503": {**_BUSY, "description": "no broker, stopping, or no confirm in time"},
                },
            }
        },
        "/v1/receipts/{id}": {
            "get": {
                "summary": "Whether a POST's lines are confirmed or written, and where",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    _WAIT,
                    _TIMEOUT,
                ],
                "responses": {
                    "200": {
                        "description": "the receipt (still confirmed if wait timed out)",
                        "content": {"application/json": {"schema": _RECEIPT_REF}},
                    },
                    "401": {**_ERROR, "description": "missing or wrong bearer token"},
                    "404": {**_ERROR, "description": "unknown id, or aged out"},
                },
            }
        },
    },
}


def spec_json() -> bytes:
    """The description as docs/openapi.json holds it."""
    return json.dumps(SPEC, indent=2).encode() + b"\n"
