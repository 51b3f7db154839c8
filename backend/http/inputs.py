"""Reading a request: the service context, the JSON body, integer query parameters, LS project ids."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flask import current_app, request

if TYPE_CHECKING:
    from backend.context import BackendContext

CONTEXT_KEY = "dcpose"  # app.extensions[CONTEXT_KEY] is the BackendContext


class RequestFormatError(ValueError):
    """A request body or parameter that misses a field or has one of the wrong type (an HTTP 400)."""


def current_context() -> BackendContext:
    """The BackendContext of the app serving this request."""
    return current_app.extensions[CONTEXT_KEY]


def json_body() -> dict[str, Any]:
    """The request's JSON object.

    Raises:
        RequestFormatError: empty, malformed, or not an object. (Beyond MAX_REQUEST_MB: 413.)
    """
    raw = request.get_data(cache=True)  # raises 413 beyond MAX_REQUEST_MB
    if not raw:
        raise RequestFormatError("empty request body; expected a JSON object")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestFormatError(f"malformed JSON: {exc}; expected a JSON object") from None
    if not isinstance(data, dict):
        raise RequestFormatError(f"expected a JSON object, got {type(data).__name__}")
    return data


def parse_project_id(value: Any) -> int | None:
    """LS project reference -> id: 3, "3" and LS's "<id>.<created_at unix>" ("3.1795471908").

    Raises:
        RequestFormatError: anything else.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RequestFormatError(f"project must be an id, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.split(".", 1)[0].strip().isdigit():
        return int(value.split(".", 1)[0])
    raise RequestFormatError(f"project must be an id like 3 or '3.1795471908', got {value!r}")


def required_project(body: dict[str, Any]) -> int:
    """The body's "project" id.

    Raises:
        RequestFormatError: missing or not an id.
    """
    project_id = parse_project_id(body.get("project"))
    if project_id is None:
        raise RequestFormatError("'project' (the Label Studio project id) is required")
    return project_id


def query_int(name: str) -> int | None:
    """An integer query parameter (`project` also in LS's "<id>.<timestamp>" form); None when absent.

    Raises:
        RequestFormatError: not an integer.
    """
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_project_id(raw) if name == "project" else int(raw)
    except (RequestFormatError, ValueError):
        raise RequestFormatError(f"query parameter {name}={raw!r} must be an integer") from None
