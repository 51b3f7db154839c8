"""Reading a request: the service context, the JSON body, integer query parameters, LS project ids."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from flask import current_app, request

from backend.limits import LimitError, check_depth, check_text, finite_float, finite_int, parse_id

if TYPE_CHECKING:
    from backend.context import BackendContext

CONTEXT_KEY = "dcpose"  # app.extensions[CONTEXT_KEY] is the BackendContext
# JSON's spelling of NUL or of a UTF-16 surrogate (\ud800-\udfff): only a UTF-8 body holding one of them
# can hold a string that `check_text` refuses (raw NUL and encoded surrogates do not parse)
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


class RequestFormatError(ValueError):
    """A request body or parameter that misses a field or has one of the wrong type (an HTTP 400)."""


class RequestEncodingError(RequestFormatError):
    """A compressed request body (Content-Encoding, or gzip's magic bytes): bodies are plain JSON (an HTTP 415)."""


def current_context() -> BackendContext:
    """The BackendContext of the app serving this request."""
    return current_app.extensions[CONTEXT_KEY]


def json_body() -> dict[str, Any]:
    """The request's JSON object.

    Raises:
        RequestFormatError: empty, malformed, not an object, or an object naming a key twice. (Beyond
            MAX_REQUEST_MB: 413.) RequestEncodingError (415): a compressed body.
        LimitError: nested deeper than MAX_JSON_DEPTH, NaN / Infinity / a number beyond float range (an
            integer too), or a string no database stores as text (a lone UTF-16 surrogate, NUL).
    """
    raw = request.get_data(cache=True)  # raises 413 beyond MAX_REQUEST_MB
    if request.max_content_length is not None and len(raw) >= request.max_content_length:
        request.stream.read(1)  # a streamed (chunked) body stops at the limit without a word: reading on raises 413
    if not raw:
        raise RequestFormatError("empty request body; expected a JSON object")
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise RequestEncodingError(f"Content-Encoding {encoding[:40]!r} is not accepted; send the JSON uncompressed")
    if raw[:2] == b"\x1f\x8b":
        raise RequestEncodingError("the body is gzip-compressed; send the JSON uncompressed")
    depth = current_context().settings.max_json_depth
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, parse_float=finite_float, parse_int=finite_int,
                          object_pairs_hook=_unique_keys)  # fmt: skip
    except RecursionError:
        raise LimitError(f"the JSON nests deeper than MAX_JSON_DEPTH={depth}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, (LimitError, RequestFormatError)):
            raise
        raise RequestFormatError(f"malformed JSON: {exc}; expected a JSON object") from None
    if not isinstance(data, dict):
        raise RequestFormatError(f"expected a JSON object, got {type(data).__name__}")
    check_depth(data, max_depth=depth)  # finite numbers: the parser refused the others
    if _SUSPECT_ESCAPE.search(raw) or json.detect_encoding(raw) != "utf-8":
        check_text(data)
    return data


def _refuse_constant(name: str) -> Any:
    raise LimitError(f"numbers must be finite, got {name}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a key given twice is refused (JSON parsers disagree on which one counts:
    Python's takes the last, others the first)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RequestFormatError(f"duplicate key {key[:40]!r} in a JSON object; each key may appear once")
            seen.add(key)
    return obj


def parse_project_id(value: Any) -> int | None:
    """LS project reference -> id: 3, "3" and LS's "<id>.<created_at unix>" ("3.1795471908").

    Raises:
        RequestFormatError: anything else ("3.x", "3.", "3.1.2" included).
    """
    if value is None or value == "":
        return None
    try:
        number, _, stamp = value.partition(".") if isinstance(value, str) else (value, "", "")
        if isinstance(value, str) and "." in value and not (stamp.isascii() and stamp.isdigit()):
            raise LimitError("the part after the dot must be a unix time")
        return parse_id(number, "project")
    except LimitError:
        raise RequestFormatError(
            f"project must be an id (1 to 2**63-1) like 3 or '3.1795471908', got {str(value)[:40]!r}"
        ) from None


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
        return parse_project_id(raw) if name == "project" else parse_id(raw, name)
    except (RequestFormatError, LimitError):
        raise RequestFormatError(f"query parameter {name}={raw[:40]!r} must be a positive integer "
                                 "(at most 2**63-1)") from None  # fmt: skip
