"""A small Label Studio REST client over `requests` (label-studio-sdk clashes with mediapipe's numpy).

Auth (Label Studio's access-token documentation): a legacy token is sent as `Authorization: Token <key>`; a
personal access token is a JWT *refresh* token, exchanged at `POST /api/token/refresh/` for a
short-lived access token sent as `Bearer`. The kind is detected from the key's shape. Access tokens
are refreshed shortly before they expire and once more on a 401. The key never appears in logs,
reprs or error messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import requests
import urllib3

from backend.settings import mask_url_password

logger = logging.getLogger(__name__)

TokenKind = Literal["legacy", "personal"]
Json = dict[str, Any]

# Refresh a personal access token this many seconds before its `exp`.
REFRESH_MARGIN_S = 30.0
# Characters of LS's reason text kept in a LabelStudioError.
REASON_CHARS = 500
# Bytes of a streamed error body read for its reason (the rest is never read).
ERROR_BODY_BYTES = 64 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD"})


class LabelStudioError(RuntimeError):
    """A Label Studio request failed: "METHOD /path: status: LS's reason" (truncated, token-free).

    Attributes:
        method: the HTTP method.
        path: the request path (no host, no query).
        status: the HTTP status, or None when no response came (connection error).
        reason: LS's reason text, truncated to `REASON_CHARS`.
    """

    def __init__(
        self, method: str, path: str, message: str, *, status: int | None = None, reason: str = ""
    ) -> None:
        super().__init__(f"{method} {path}: {message}")
        self.method, self.path, self.status, self.reason = method, path, status, reason


class RedirectedError(LabelStudioError):
    """A download answered with a redirect that was not followed; `location` is where it points."""

    def __init__(self, method: str, path: str, message: str, *, location: str) -> None:
        super().__init__(method, path, message)
        self.location = location


def _b64json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode((part + "=" * (-len(part) % 4)).encode("ascii")))


def jwt_claims(token: str) -> Json | None:
    """The payload of a JWT (unverified), or None when `token` is not a JWT.

    A JWT is three dot-separated base64url parts whose first two decode to JSON objects.
    """
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    try:
        header, claims = _b64json(parts[0]), _b64json(parts[1])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(header, dict) and isinstance(claims, dict) else None


def token_kind(key: str) -> TokenKind:
    """'personal' for a JWT (personal access token), else 'legacy'."""
    return "personal" if jwt_claims(key) is not None else "legacy"


def shown_url(url: str | None) -> str:
    """`url` as messages show it: the password of its user-info part (http://user:pass@host) masked."""
    try:
        return mask_url_password(url) or ""
    except ValueError:  # an unparsable port or host
        return "(an unparsable URL)"


def mask_secret(secret: str | None) -> str:
    """A loggable stand-in for a secret: nothing of it (no prefix, no length), only whether one is set."""
    return "***" if secret else "<none>"


def _reason(resp: requests.Response, content: bytes | None = None) -> str:
    """LS's explanation of an error response, on one line and truncated (from `content`, the start of a
    streamed body, when given)."""
    try:
        body = resp.json() if content is None else json.loads(content)
    except ValueError:
        text = resp.text if content is None else content.decode("utf-8", errors="replace")
    else:
        text = json.dumps(body)
        if isinstance(body, dict):  # LS 1.23: {"status_code", "detail", "validation_errors": {field: [msg]}}
            parts = [body[k] for k in ("detail", "error", "validation_errors") if body.get(k)]
            text = ": ".join(p if isinstance(p, str) else json.dumps(p) for p in parts) or text
    text = " ".join(str(text).split()) or resp.reason or ""
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "…"


def _start_of(resp: requests.Response) -> bytes:
    """The first ERROR_BODY_BYTES of a streamed body (what arrived, or nothing, when it breaks off)."""
    try:
        return resp.raw.read(ERROR_BODY_BYTES, decode_content=True)
    except urllib3.exceptions.HTTPError:
        return b""


class LabelStudioClient:
    """Label Studio REST API client (LS 1.23). Thread-safe for concurrent calls.

    Args:
        url: base URL of Label Studio, e.g. "http://127.0.0.1:8080".
        api_key: a legacy token or a personal access token (JWT refresh token).
        timeout: seconds per request (connect and read).
        retries: extra attempts for GET/HEAD requests that fail to connect or time out.
        backoff: seconds before the first retry; doubled for each next one.
        session: a requests.Session to use (one is created otherwise).

    Raises:
        ValueError: empty api_key, or a url that is not http(s)://host.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30, retries: int = 3, backoff: float = 0.5,
                 session: requests.Session | None = None) -> None:  # fmt: skip
        if urlsplit(url or "").scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValueError(f"Label Studio url must look like http://host:port, got {shown_url(url)!r}")
        if not api_key or not api_key.strip():
            raise ValueError("Label Studio api_key is empty (set LABEL_STUDIO_API_KEY)")
        self.url = url.rstrip("/")
        self._shown_url = shown_url(self.url)  # what messages and the repr name: no password
        self.timeout, self.retries, self.backoff = timeout, max(int(retries), 0), backoff
        self._key = api_key.strip()
        self.kind: TokenKind = token_kind(self._key)
        self._access: str | None = None
        self._access_exp: float | None = None
        self._lock = threading.Lock()
        self._session = session or requests.Session()

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self._shown_url!r}, token={mask_secret(self._key)}, kind={self.kind!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- auth

    def _scrub(self, text: str) -> str:
        """`text` with the key and the access token masked (LS may echo what it got)."""
        for secret in (self._key, self._access):
            if secret:
                text = text.replace(secret, mask_secret(secret))
        return text

    def _refresh_access(self) -> None:
        """Exchanges the personal access (refresh) token for a new access token."""
        path = "/api/token/refresh/"
        try:
            resp = self._session.post(self.url + path, json={"refresh": self._key}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise LabelStudioError("POST", path, f"cannot reach {self._shown_url}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            reason = self._scrub(_reason(resp))
            message = f"{resp.status_code}: personal access token {mask_secret(self._key)} was refused"
            message += f" ({reason}); create a new one in Label Studio (Account & Settings)"
            raise LabelStudioError("POST", path, message, status=resp.status_code, reason=reason)
        try:
            access = resp.json().get("access")
        except (ValueError, AttributeError):
            access = None
        if not isinstance(access, str) or not access:
            raise LabelStudioError("POST", path, "response has no 'access' token", status=resp.status_code)
        exp = (jwt_claims(access) or {}).get("exp")
        self._access = access
        self._access_exp = float(exp) if isinstance(exp, (int, float)) else None
        logger.debug("refreshed the Label Studio access token (expires at %s)", self._access_exp)

    def _auth_header(self, *, force_refresh: bool = False) -> dict[str, str]:
        if self.kind == "legacy":
            return {"Authorization": f"Token {self._key}"}
        with self._lock:
            stale = self._access_exp is not None and time.time() > self._access_exp - REFRESH_MARGIN_S
            if force_refresh or self._access is None or stale:
                self._refresh_access()
            return {"Authorization": f"Bearer {self._access}"}

    # ------------------------------------------------------------------------------- requests

    def _send(self, method: str, url: str, *, auth: bool, **kwargs: Any) -> requests.Response:
        """One request with auth (refreshing once on 401) and retries for idempotent methods."""
        path = urlsplit(url).path
        attempts = 1 + (self.retries if method in _IDEMPOTENT else 0)
        kwargs.setdefault("timeout", self.timeout)
        for attempt in range(attempts):
            try:
                headers = self._auth_header() if auth else {}
                resp = self._session.request(method, url, headers=headers, **kwargs)
                if resp.status_code == 401 and auth and self.kind == "personal":
                    logger.info("%s %s: 401, refreshing the access token once", method, path)
                    resp.close()
                    headers = self._auth_header(force_refresh=True)
                    resp = self._session.request(method, url, headers=headers, **kwargs)
                return resp
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt + 1 >= attempts:
                    message = f"cannot reach {self._shown_url} after {attempts} attempt(s): {type(exc).__name__}"
                    raise LabelStudioError(method, path, message) from None
                delay = self.backoff * 2**attempt
                logger.warning("%s %s: %s, retrying in %.1f s", method, path, type(exc).__name__, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, resp: requests.Response, method: str, path: str,
               content: bytes | None = None) -> requests.Response:  # fmt: skip
        """`resp` when it succeeded, else a LabelStudioError with LS's reason (from `content` if given)."""
        if resp.status_code < 400:
            return resp
        reason = self._scrub(_reason(resp, content))
        hint = ""
        if resp.status_code == 401:
            hint = f" (token {mask_secret(self._key)}, {self.kind}: wrong, expired, or legacy tokens off)"
        raise LabelStudioError(method, path, f"{resp.status_code}: {reason}{hint}", status=resp.status_code,
                               reason=reason)  # fmt: skip

    def request(self, method: str, path: str, *, params: Json | None = None, json_body: Any = None,
                expect_json: bool = True) -> Any:  # fmt: skip
        """Calls the API: `path` like "/api/projects"; returns the decoded JSON (None for an empty body).

        Raises:
            LabelStudioError: an HTTP error status, an unreachable server or a non-JSON body.
        """
        method = method.upper()
        resp = self._check(self._send(method, self.url + path, auth=True, params=params, json=json_body),
                           method, path)  # fmt: skip
        if not expect_json or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            message = f"{resp.status_code}: response is not JSON: {self._scrub(resp.text[:200])!r}"
            raise LabelStudioError(method, path, message, status=resp.status_code) from None

    # ------------------------------------------------------------------------------- API

    def whoami(self) -> Json:
        """The user the key belongs to (`GET /api/current-user/whoami`)."""
        return self.request("GET", "/api/current-user/whoami")

    def create_project(self, title: str, label_config: str, **fields: Any) -> Json:
        """Creates a project; extra `fields` go into the body (e.g. description)."""
        body = {"title": title, "label_config": label_config, **fields}
        return self.request("POST", "/api/projects", json_body=body)

    def get_project(self, project: int) -> Json:
        return self.request("GET", f"/api/projects/{int(project)}")

    def iter_tasks(self, project: int, *, page_size: int = 100, fields: str = "all") -> Iterator[Json]:
        """Yields the project's tasks page by page (`GET /api/tasks`).

        LS 1.23 answers `{"tasks": [...], "total": n, ...}`; older servers a bare list. Both are read;
        paging stops at `total`, at a short or empty page, or at LS's 404 past the last page.
        `fields="task_only"` leaves out annotations and predictions (their counts stay).
        """
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        seen, page = 0, 1
        while True:
            params = {"project": int(project), "fields": fields, "page": page, "page_size": page_size}
            resp = self._send("GET", self.url + "/api/tasks", auth=True, params=params)
            if resp.status_code == 404 and page > 1:
                return
            body = self._check(resp, "GET", "/api/tasks").json()
            if isinstance(body, dict) and isinstance(body.get("tasks"), list):
                tasks, total = body["tasks"], body.get("total")
            elif isinstance(body, list):
                tasks, total = body, None
            else:
                keys = sorted(body)[:6] if isinstance(body, dict) else ""
                message = f"unexpected response shape {type(body).__name__} {keys}"
                raise LabelStudioError("GET", "/api/tasks", message, status=resp.status_code)
            yield from tasks
            seen += len(tasks)
            if not tasks or len(tasks) < page_size or (isinstance(total, int) and seen >= total):
                return
            page += 1

    def list_tasks(self, project: int, page_size: int = 100, *, fields: str = "all") -> list[Json]:
        """All tasks of a project (see `iter_tasks`)."""
        return list(self.iter_tasks(project, page_size=page_size, fields=fields))

    def get_task(self, task: int) -> Json:
        """One task with annotations and predictions. Note: LS asks a connected ML backend for a
        prediction when the task has none (as when the labelling UI opens it)."""
        return self.request("GET", f"/api/tasks/{int(task)}")

    def import_tasks(self, project: int, tasks: list[Json]) -> list[int]:
        """Imports tasks (`{"data": ..., "annotations"?: [...], "predictions"?: [...]}`); returns their ids.

        Raises:
            LabelStudioError: LS refused the import, or did not return the ids of all tasks.
        """
        if not tasks:
            return []
        path = f"/api/projects/{int(project)}/import"
        body = self.request("POST", path, params={"return_task_ids": "true"}, json_body=tasks)
        ids = body.get("task_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or len(ids) != len(tasks):
            count = body.get("task_count") if isinstance(body, dict) else None
            got = len(ids) if isinstance(ids, list) else "no"
            message = f"imported {count} of {len(tasks)} task(s), {got} task ids back"
            raise LabelStudioError("POST", path, message)
        return [int(i) for i in ids]

    def create_prediction(self, task: int, result: list[Json], score: float | None = None,
                          model_version: str | None = None) -> Json:  # fmt: skip
        """Stores a prediction on a task (`POST /api/predictions`)."""
        body: Json = {"task": int(task), "result": result}
        if score is not None:
            body["score"] = float(score)
        if model_version is not None:
            body["model_version"] = model_version
        return self.request("POST", "/api/predictions", json_body=body)

    def create_annotation(self, task: int, result: list[Json], *, lead_time: float | None = None,
                          parent_prediction: int | None = None, ground_truth: bool = False,
                          was_cancelled: bool = False) -> Json:  # fmt: skip
        """Submits an annotation as the key's user (`POST /api/tasks/{id}/annotations`)."""
        body: Json = {"result": result, "ground_truth": ground_truth, "was_cancelled": was_cancelled}
        if lead_time is not None:
            body["lead_time"] = float(lead_time)
        if parent_prediction is not None:
            body["parent_prediction"] = int(parent_prediction)
        return self.request("POST", f"/api/tasks/{int(task)}/annotations", json_body=body)

    def update_annotation(self, annotation: int, result: list[Json], **fields: Any) -> Json:
        """Replaces an annotation's result (`PATCH /api/annotations/{id}`)."""
        body = {"result": result, **fields}
        return self.request("PATCH", f"/api/annotations/{int(annotation)}", json_body=body)

    def delete_annotation(self, annotation: int) -> None:
        self.request("DELETE", f"/api/annotations/{int(annotation)}", expect_json=False)

    def export(self, project: int) -> list[Json]:
        """Labelled tasks with annotations and predictions (`GET .../export?exportType=JSON`)."""
        path = f"/api/projects/{int(project)}/export"
        body = self.request("GET", path, params={"exportType": "JSON"})
        if not isinstance(body, list):
            raise LabelStudioError("GET", path, f"expected a list of tasks, got {type(body).__name__}")
        return body

    def add_ml_backend(self, project: int, url: str, title: str, *, is_interactive: bool = False) -> Json:
        """Connects an ML backend (`POST /api/ml`). LS then calls its /health and /setup."""
        body = {"project": int(project), "url": url, "title": title, "is_interactive": is_interactive}
        return self.request("POST", "/api/ml", json_body=body)

    def list_local_storages(self, project: int) -> list[Json]:
        """The project's local-files import storages."""
        body = self.request("GET", "/api/storages/localfiles", params={"project": int(project)})
        return body if isinstance(body, list) else []

    def create_local_storage(self, project: int, path: str | Path, *, title: str | None = None,
                             sync: bool = False) -> Json:  # fmt: skip
        """Creates a local-files storage for `path` (an existing absolute folder under LS's document root).

        LS serves `/data/local-files/?d=...` only for files under some storage's path. That is all
        frame tasks with explicit URLs need, so there is no sync by default (a sync would add one
        task per image file).
        """
        body = {"project": int(project), "path": str(path), "use_blob_urls": True}
        body["title"] = title or f"frames {Path(path).name}"
        storage = self.request("POST", "/api/storages/localfiles", json_body=body)
        if sync:
            self.sync_local_storage(int(storage["id"]))
        return storage

    def sync_local_storage(self, storage: int) -> Json:
        """Scans a local-files storage and creates a task per new file."""
        return self.request("POST", f"/api/storages/localfiles/{int(storage)}/sync")

    def dm_action(self, project: int, action: str, task_ids: list[int]) -> Any:
        """Runs a Data Manager action (e.g. "retrieve_tasks_predictions") on the given tasks."""
        body = {"selectedItems": {"all": False, "included": [int(t) for t in task_ids]}}
        params = {"id": action, "project": int(project)}
        return self.request("POST", "/api/dm/actions", params=params, json_body=body)

    # ------------------------------------------------------------------------------- files

    def resolve_url(self, url: str) -> tuple[str, bool]:
        """(absolute URL, whether to send auth) for a task image URL.

        Relative URLs (`/data/local-files/?d=...`, `/data/upload/...`) are joined to the base URL;
        both they and absolute URLs on LS's own host get auth, other hosts none.
        """
        parts = urlsplit(url)
        if not parts.scheme:
            return urljoin(self.url + "/", url.lstrip("/")), True
        return url, parts.netloc == urlsplit(self.url).netloc

    def download(self, url_or_path: str | Path, *, allow_redirects: bool = True,
                 read: Callable[[requests.Response], bytes] | None = None) -> bytes:  # fmt: skip
        """The bytes of a task's image: an LS-relative or http(s) URL, a file:// URL or a local path.

        A string is read as a local path when such a file exists and it does not start with
        "/data/"; otherwise a string starting with "/" is a URL relative to LS.

        Args:
            read: reads the body of the streamed response as it arrives (`MediaPolicy.read`: capped in
                size and time); of an error body only ERROR_BODY_BYTES are read then. None: the whole body.

        Raises:
            LabelStudioError: the server answered an error status or could not be reached.
            FileNotFoundError: a local path that does not exist.
            ValueError: a URL scheme other than http(s) and file.
        """
        text = str(url_or_path)
        parts = urlsplit(text)
        local = not parts.scheme and not text.startswith("/data/") and Path(text).exists()
        if isinstance(url_or_path, Path) or parts.scheme == "file" or local:
            path = Path(url2pathname(parts.path)) if parts.scheme == "file" else Path(text)
            if not path.is_file():
                raise FileNotFoundError(f"image file not found: {path}")
            return path.read_bytes()
        if parts.scheme not in ("", "http", "https"):
            raise ValueError(f"cannot download {text[:200]!r}: only http(s), file:// URLs and local paths")
        if not parts.scheme and not text.startswith("/"):
            raise FileNotFoundError(f"image file not found and not an LS URL: {text[:200]}")
        absolute, auth = self.resolve_url(text)
        path, stream = urlsplit(absolute).path, read is not None
        with self._send("GET", absolute, auth=auth, allow_redirects=allow_redirects, stream=stream) as resp:
            self._check(resp, "GET", path, _start_of(resp) if stream and resp.status_code >= 400 else None)
            if not allow_redirects and 300 <= resp.status_code < 400:
                location = urljoin(absolute, resp.headers.get("Location", ""))
                raise RedirectedError("GET", path, f"{resp.status_code}: redirected", location=location)
            return read(resp) if read is not None else resp.content
