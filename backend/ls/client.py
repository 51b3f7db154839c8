"""A small Label Studio REST client over `requests` (label-studio-sdk clashes with mediapipe's numpy).

Auth (Label Studio's access-token documentation): a legacy token is sent as `Authorization: Token <key>`; a
personal access token is a JWT *refresh* token, exchanged at `POST /api/token/refresh/` for a
short-lived access token sent as `Bearer`. The kind is detected from the key's shape. Access tokens
are refreshed shortly before they expire and once more on a 401. The key never appears in logs,
reprs or error messages.

A server is not trusted to behave: an API response is read within a size cap (MAX_BODY_BYTES) and a
time cap for the whole exchange (ATTEMPT_DEADLINE_S, however slowly it arrives); redirects are followed
on Label Studio's own host only (the token goes nowhere else); 429 and 502-504 are retried a bounded
number of times, Retry-After capped (MAX_RETRY_WAIT_S); a body that is not JSON, or JSON of the wrong
shape, is a LabelStudioError naming the endpoint; task listings that repeat themselves stop.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import requests
import urllib3

from backend.logs import mask_url_password
from backend.ls.media import Deadline, deadline_session

logger = logging.getLogger(__name__)

TokenKind = Literal["legacy", "personal"]
Json = dict[str, Any]

# Refresh a personal access token this many seconds before its `exp`.
REFRESH_MARGIN_S = 30.0
# Characters of LS's reason text kept in a LabelStudioError.
REASON_CHARS = 500
# Bytes of a streamed error body read for its reason (the rest is never read).
ERROR_BODY_BYTES = 64 * 1024
# The largest API response read (a page of 100 tasks with their annotations is a few MB).
MAX_BODY_BYTES = 128 * 1024 * 1024
# The most one API request may take in all, redirects, headers and body included (a socket timeout
# bounds one read only: a server sending a byte every few seconds could hold a call for hours).
ATTEMPT_DEADLINE_S = 300.0
# The longest pause before a retry, a server's Retry-After included (10**9 s or a date years ahead).
MAX_RETRY_WAIT_S = 60.0
MAX_REDIRECTS = 5
# The most tasks one listing yields: a server inventing new pages for ever is stopped there.
MAX_TASKS = 5_000_000
_IDEMPOTENT = frozenset({"GET", "HEAD"})
# Statuses retried: 429 (any method: it was not processed), 502-504 (GET/HEAD: a proxy's, LS restarting).
_RETRIED = frozenset({429, 502, 503, 504})
_BROKEN = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)


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


def _reason(resp: requests.Response, content: bytes | None = None,
            scrub: Callable[[str], str] = str) -> str:  # fmt: skip
    """LS's explanation of an error response, on one line and truncated (from `content`, the start of a
    streamed body, when given); `scrub` masks secrets before the cut, which could keep a secret's start."""
    try:
        body = resp.json() if content is None else json.loads(content[:ERROR_BODY_BYTES])
    except (ValueError, RecursionError):
        text = resp.text if content is None else content[:ERROR_BODY_BYTES].decode("utf-8", errors="replace")
    else:
        text = json.dumps(body)
        if isinstance(body, dict):  # LS 1.23: {"status_code", "detail", "validation_errors": {field: [msg]}}
            parts = [body[k] for k in ("detail", "error", "validation_errors") if body.get(k)]
            text = ": ".join(p if isinstance(p, str) else json.dumps(p) for p in parts) or text
    text = " ".join(scrub(str(text)).split()) or resp.reason or ""
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "…"


def _kind(body: Any) -> str:
    """How a message names a JSON value's type: "null", "list", "str", ..."""
    return "null" if body is None else type(body).__name__


def as_id(value: Any, method: str, path: str, what: str) -> int:
    """`value` as a Label Studio object id: a positive integer (not a bool, a float or a string).

    Raises:
        LabelStudioError: anything else, named by `what` ("'id'", "task 3's 'id'").
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    shown = repr(value)[:40] if value is not None else "missing"
    raise LabelStudioError(method, path, f"{what} is {shown}, not a Label Studio id (a positive integer)")


def retry_wait(resp: requests.Response, fallback: float, cap: float) -> float:
    """Seconds to wait before retrying `resp`: its Retry-After (seconds or an HTTP date) or `fallback`,
    at most `cap` (a server asking for 10**9 s, or a date years ahead, gets `cap`)."""
    value = resp.headers.get("Retry-After", "").strip()
    if value.isascii() and value.isdigit():
        wait = float(value) if len(value) < 10 else cap
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        wait = (when - datetime.now(UTC)).total_seconds() if when is not None else fallback
    return min(max(wait, 0.0), cap)


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
        timeout: seconds per socket operation (connect, each read).
        retries: extra attempts for GET/HEAD requests that fail to connect, time out, break off or get
            429/502/503/504, and for any request that gets 429 (Label Studio did not process it).
        backoff: seconds before the first retry; doubled for each next one.
        session: a requests.Session to use (one whose requests a `Deadline` can cut is created otherwise).
        max_body_bytes: the largest API response read; a larger one fails the call.
        deadline: the most seconds one API request may take in all (redirects, headers and body).
        max_wait: the longest pause before a retry, a server's Retry-After included.

    Raises:
        ValueError: empty api_key, or a url that is not http(s)://host.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30, retries: int = 3, backoff: float = 0.5,
                 session: requests.Session | None = None, max_body_bytes: int = MAX_BODY_BYTES,
                 deadline: float = ATTEMPT_DEADLINE_S, max_wait: float = MAX_RETRY_WAIT_S) -> None:  # fmt: skip
        if urlsplit(url or "").scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValueError(f"Label Studio url must look like http://host:port, got {shown_url(url)!r}")
        if not api_key or not api_key.strip():
            raise ValueError("Label Studio api_key is empty (set LABEL_STUDIO_API_KEY)")
        self.url = url.rstrip("/")
        self._shown_url = shown_url(self.url)  # what messages and the repr name: no password
        self.timeout, self.retries, self.backoff = timeout, max(int(retries), 0), backoff
        self.max_body_bytes, self.deadline, self.max_wait = max_body_bytes, deadline, max_wait
        self._key = api_key.strip()
        self.kind: TokenKind = token_kind(self._key)
        self._access: str | None = None
        self._access_exp: float | None = None
        self._lock = threading.Lock()
        self._session = session or deadline_session()

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
        """Exchanges the personal access (refresh) token for a new access token (the token travels in the
        body: a redirect to another host is not followed)."""
        path = "/api/token/refresh/"
        resp, content = self._fetch("POST", path, auth=False, json_body={"refresh": self._key})
        if resp.status_code != 200:
            reason = _reason(resp, content, self._scrub)
            message = f"{resp.status_code}: personal access token {mask_secret(self._key)} was refused"
            message += f" ({reason}); create a new one in Label Studio (Account & Settings)"
            raise LabelStudioError("POST", path, message, status=resp.status_code, reason=reason)
        body = self._json(resp, content, "POST", path)
        access = body.get("access") if isinstance(body, dict) else None
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

    def _send(self, method: str, url: str, *, auth: bool, retry: bool = True, **kwargs: Any) -> requests.Response:
        """One request with auth (refreshing once on 401); `retry`: retries for idempotent methods that
        fail to connect or time out (else such failures are raised as they are)."""
        path = urlsplit(url).path
        attempts = 1 + (self.retries if retry and method in _IDEMPOTENT else 0)
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
                if not retry:
                    raise
                if attempt + 1 >= attempts:
                    message = f"cannot reach {self._shown_url} after {attempts} attempt(s): {type(exc).__name__}"
                    raise LabelStudioError(method, path, message) from None
                delay = self.backoff * 2**attempt
                logger.warning("%s %s: %s, retrying in %.1f s", method, path, type(exc).__name__, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(self, method: str, path: str, *, auth: bool = True, params: Json | None = None,
               json_body: Any = None) -> tuple[requests.Response, bytes]:  # fmt: skip
        """An API call's (closed) response and body, with bounded retries (see the class's `retries`).

        Raises:
            LabelStudioError: unreachable or broken off after the retries, redirected off Label Studio's
                host, a body over `max_body_bytes`, or longer than `deadline`.
        """
        method = method.upper()
        retried = _RETRIED if method in _IDEMPOTENT else frozenset({429})
        for attempt in range(1 + self.retries):
            last = attempt == self.retries
            try:
                resp, content = self._attempt(method, self.url + path, auth=auth, params=params, json=json_body)
            except requests.RequestException as exc:
                if method not in _IDEMPOTENT or last:
                    failed = f"the answer from {self._shown_url} broke off" if isinstance(exc, _BROKEN) \
                        else f"cannot reach {self._shown_url}"  # fmt: skip
                    message = f"{failed} after {attempt + 1} attempt(s): {type(exc).__name__}"
                    raise LabelStudioError(method, path, message) from None
                why, wait = type(exc).__name__, self._backoff(attempt)
            else:
                if resp.status_code not in retried or last:
                    return resp, content
                why, wait = str(resp.status_code), retry_wait(resp, self._backoff(attempt), self.max_wait)
            logger.warning("%s %s: %s, retrying in %.1f s", method, path, why, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff * 2**attempt, self.max_wait)

    def _attempt(self, method: str, url: str, *, auth: bool, **kwargs: Any) -> tuple[requests.Response, bytes]:
        """One request and its body within `deadline`, redirects followed on Label Studio's host only.

        Raises:
            requests.RequestException: unreachable, timed out or broken off.
            LabelStudioError: redirected elsewhere or too often, a body too large or too slow.
        """
        path = urlsplit(url).path
        with Deadline(self.deadline) as deadline:
            try:
                for _ in range(MAX_REDIRECTS + 1):
                    resp = self._send(method, url, auth=auth, retry=False, stream=True, allow_redirects=False,
                                      **kwargs)  # fmt: skip
                    with resp:
                        if not resp.is_redirect:
                            return resp, self._body(resp, method, path, deadline)
                        url, kwargs = self._redirect(resp, method, path, url, kwargs)
            except requests.RequestException:
                if deadline.expired:  # the cut connection failed in its own words
                    raise self._too_slow(method, path) from None
                raise
        raise LabelStudioError(method, path, f"more than {MAX_REDIRECTS} redirects (a redirect loop?)")

    def _redirect(self, resp: requests.Response, method: str, path: str, url: str,
                  kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:  # fmt: skip
        """(url, request arguments) of the redirect `resp` answers, when it may be followed.

        Raises:
            LabelStudioError: it leaves Label Studio's host (the token would go there, or be dropped),
                or it would turn a request with a body into a GET.
        """
        target = urljoin(url, resp.headers["Location"])
        if self._session.should_strip_auth(url, target):
            where = urlsplit(target)
            host = shown_url(f"{where.scheme}://{where.netloc}")
            message = (f"{resp.status_code}: redirected to {host}, another host: not followed (the token goes to "
                       f"Label Studio only); set LABEL_STUDIO_URL to the address Label Studio answers at")  # fmt: skip
            raise LabelStudioError(method, path, message, status=resp.status_code)
        if method not in _IDEMPOTENT and resp.status_code not in (307, 308):
            message = f"{resp.status_code}: redirected to {urlsplit(target).path}: not followed (the {method} " \
                      f"would become a GET)"  # fmt: skip
            raise LabelStudioError(method, path, message, status=resp.status_code)
        return target, {**kwargs, "params": None}  # the query is in the target

    def _body(self, resp: requests.Response, method: str, path: str, deadline: Deadline) -> bytes:
        """The body of a streamed response, within `max_body_bytes` and the attempt's deadline.

        Raises:
            LabelStudioError: larger than the cap, or still arriving at the deadline.
            requests.RequestException: the connection broke off.
        """
        cap = self.max_body_bytes
        too_large = LabelStudioError(method, path, f"{resp.status_code}: the response is larger than "
                                     f"{cap / 2**20:g} MB; not read", status=resp.status_code)  # fmt: skip
        declared = resp.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and (len(declared) > 15 or int(declared) > cap):
            raise too_large
        body = bytearray()
        for chunk in resp.iter_content(64 * 1024):
            body += chunk
            if len(body) > cap:
                raise too_large
        if deadline.expired:  # cut where a body without a length may end: what came is not all of it
            raise self._too_slow(method, path)
        return bytes(body)

    def _too_slow(self, method: str, path: str) -> LabelStudioError:
        message = f"no complete answer from {self._shown_url} within {self.deadline:g} s"
        return LabelStudioError(method, path, message)

    def _json(self, resp: requests.Response, content: bytes, method: str, path: str) -> Any:
        """The decoded JSON body.

        Raises:
            LabelStudioError: not JSON (a login page, a proxy's error page), or nested beyond Python's reach.
        """
        try:
            return json.loads(content)
        except (ValueError, RecursionError):
            kind = resp.headers.get("Content-Type", "no Content-Type").split(";")[0].strip()[:100]
            start = " ".join(self._scrub(content[:ERROR_BODY_BYTES].decode("utf-8", errors="replace")).split())
            message = f"{resp.status_code}: the response is not JSON ({kind}: {start[:200]!r}); is " \
                      f"{self._shown_url} Label Studio's API (not a login page or a proxy)?"  # fmt: skip
            raise LabelStudioError(method, path, message, status=resp.status_code) from None

    def _check(self, resp: requests.Response, method: str, path: str,
               content: bytes | None = None) -> requests.Response:  # fmt: skip
        """`resp` when it succeeded, else a LabelStudioError with LS's reason (from `content` if given)."""
        if resp.status_code < 400:
            return resp
        reason = _reason(resp, content, self._scrub)
        hint = ""
        if resp.status_code == 401:
            hint = f" (the token {mask_secret(self._key)}, {self.kind}, was refused: wrong, expired, or legacy " \
                   f"tokens off)"  # fmt: skip
        elif resp.status_code == 403:
            hint = " (the token's user may not do this)"
        elif resp.status_code == 404:
            hint = " (no such object: deleted, or not visible to the token's user)"
        raise LabelStudioError(method, path, f"{resp.status_code}: {reason}{hint}", status=resp.status_code,
                               reason=reason)  # fmt: skip

    def request(self, method: str, path: str, *, params: Json | None = None, json_body: Any = None,
                expect_json: bool = True) -> Any:  # fmt: skip
        """Calls the API: `path` like "/api/projects"; returns the decoded JSON (None for an empty body).

        Raises:
            LabelStudioError: an HTTP error status, an unreachable server or a non-JSON body.
        """
        method = method.upper()
        resp, content = self._fetch(method, path, params=params, json_body=json_body)
        self._check(resp, method, path, content)
        if not expect_json or not content:
            return None
        return self._json(resp, content, method, path)

    def _object(self, method: str, path: str, **kwargs: Any) -> Json:
        """`request` for an endpoint answering one JSON object with its positive integer "id".

        Raises:
            LabelStudioError: as `request`; another shape (a list, null, no id, an id "7").
        """
        body = self.request(method, path, **kwargs)
        if not isinstance(body, dict):
            raise LabelStudioError(method, path, f"expected a JSON object, got {_kind(body)}")
        as_id(body.get("id"), method, path, "'id'")
        return body

    # ------------------------------------------------------------------------------- API

    def whoami(self) -> Json:
        """The user the key belongs to (`GET /api/current-user/whoami`)."""
        return self._object("GET", "/api/current-user/whoami")

    def create_project(self, title: str, label_config: str, **fields: Any) -> Json:
        """Creates a project; extra `fields` go into the body (e.g. description)."""
        body = {"title": title, "label_config": label_config, **fields}
        return self._object("POST", "/api/projects", json_body=body)

    def get_project(self, project: int) -> Json:
        """One project (`GET /api/projects/{id}`): a JSON object with its id.

        Raises:
            LabelStudioError: LS refused (404: no such project), or answered another shape.
        """
        return self._object("GET", f"/api/projects/{int(project)}")

    def iter_tasks(self, project: int, *, page_size: int = 100, fields: str = "all") -> Iterator[Json]:
        """Yields the project's tasks page by page (`GET /api/tasks`).

        LS 1.23 answers `{"tasks": [...], "total": n, ...}`; older servers a bare list. Both are read;
        paging stops at `total`, at a short or empty page, or at LS's 404 past the last page.
        `fields="task_only"` leaves out annotations and predictions (their counts stay). A task listed
        again on a later page is yielded once.

        Raises:
            LabelStudioError: LS refused; a page of another shape (not a list of objects with integer ids, a
                `total` that is no count); a page holding only tasks already listed (the same page again,
                which would never end); more than MAX_TASKS tasks.
        """
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        path, seen, page = "/api/tasks", set(), 1
        while True:
            params = {"project": int(project), "fields": fields, "page": page, "page_size": page_size}
            resp, content = self._fetch("GET", path, params=params)
            if resp.status_code == 404 and page > 1:
                return
            self._check(resp, "GET", path, content)
            tasks, total = self._task_page(self._json(resp, content, "GET", path), page)
            new = [t for t in tasks if t["id"] not in seen]
            if tasks and not new:
                message = f"page {page} lists only tasks of earlier pages (the same page again?); stopped"
                raise LabelStudioError("GET", path, message, status=resp.status_code)
            seen.update(t["id"] for t in new)
            if len(seen) > MAX_TASKS:
                raise LabelStudioError("GET", path, f"more than {MAX_TASKS} tasks listed; stopped")
            yield from new
            if not tasks or len(tasks) < page_size or (total is not None and len(seen) >= total):
                return
            page += 1

    @staticmethod
    def _task_page(body: Any, page: int) -> tuple[list[Json], int | None]:
        """(tasks, total or None) of one page of `GET /api/tasks`.

        Raises:
            LabelStudioError: another shape.
        """
        path = "/api/tasks"
        if isinstance(body, dict) and isinstance(body.get("tasks"), list):
            tasks, total = body["tasks"], body.get("total")
        elif isinstance(body, list):
            tasks, total = body, None
        else:
            keys = sorted(body)[:6] if isinstance(body, dict) else ""
            raise LabelStudioError("GET", path, f"unexpected response shape {_kind(body)} {keys}".rstrip())
        if total is not None and not (isinstance(total, int) and not isinstance(total, bool) and total >= 0):
            raise LabelStudioError("GET", path, f"page {page}: 'total' is {repr(total)[:40]}, not a task count")
        for n, task in enumerate(tasks):
            if not isinstance(task, dict):
                raise LabelStudioError("GET", path, f"page {page}: task {n} is {_kind(task)}, not a JSON object")
            as_id(task.get("id"), "GET", path, f"page {page}: task {n}'s 'id'")
        return tasks, total

    def list_tasks(self, project: int, page_size: int = 100, *, fields: str = "all") -> list[Json]:
        """All tasks of a project (see `iter_tasks`)."""
        return list(self.iter_tasks(project, page_size=page_size, fields=fields))

    def get_task(self, task: int) -> Json:
        """One task with annotations and predictions. Note: LS asks a connected ML backend for a
        prediction when the task has none (as when the labelling UI opens it)."""
        return self._object("GET", f"/api/tasks/{int(task)}")

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
        return [as_id(i, "POST", path, "a returned task id") for i in ids]

    def create_prediction(self, task: int, result: list[Json], score: float | None = None,
                          model_version: str | None = None) -> Json:  # fmt: skip
        """Stores a prediction on a task (`POST /api/predictions`)."""
        body: Json = {"task": int(task), "result": result}
        if score is not None:
            body["score"] = float(score)
        if model_version is not None:
            body["model_version"] = model_version
        return self._object("POST", "/api/predictions", json_body=body)

    def create_annotation(self, task: int, result: list[Json], *, lead_time: float | None = None,
                          parent_prediction: int | None = None, ground_truth: bool = False,
                          was_cancelled: bool = False) -> Json:  # fmt: skip
        """Submits an annotation as the key's user (`POST /api/tasks/{id}/annotations`)."""
        body: Json = {"result": result, "ground_truth": ground_truth, "was_cancelled": was_cancelled}
        if lead_time is not None:
            body["lead_time"] = float(lead_time)
        if parent_prediction is not None:
            body["parent_prediction"] = int(parent_prediction)
        return self._object("POST", f"/api/tasks/{int(task)}/annotations", json_body=body)

    def update_annotation(self, annotation: int, result: list[Json], **fields: Any) -> Json:
        """Replaces an annotation's result (`PATCH /api/annotations/{id}`)."""
        body = {"result": result, **fields}
        return self._object("PATCH", f"/api/annotations/{int(annotation)}", json_body=body)

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
        return self._object("POST", "/api/ml", json_body=body)

    def list_local_storages(self, project: int) -> list[Json]:
        """The project's local-files import storages (JSON objects with their ids)."""
        path = "/api/storages/localfiles"
        body = self.request("GET", path, params={"project": int(project)})
        if not isinstance(body, list) or not all(isinstance(s, dict) for s in body):
            raise LabelStudioError("GET", path, f"expected a list of storages, got {_kind(body)}")
        for n, storage in enumerate(body):
            as_id(storage.get("id"), "GET", path, f"storage {n}'s 'id'")
        return body

    def create_local_storage(self, project: int, path: str | Path, *, title: str | None = None,
                             sync: bool = False) -> Json:  # fmt: skip
        """Creates a local-files storage for `path` (an existing absolute folder under LS's document root).

        LS serves `/data/local-files/?d=...` only for files under some storage's path. That is all
        frame tasks with explicit URLs need, so there is no sync by default (a sync would add one
        task per image file).
        """
        body = {"project": int(project), "path": str(path), "use_blob_urls": True}
        body["title"] = title or f"frames {Path(path).name}"
        storage = self._object("POST", "/api/storages/localfiles", json_body=body)
        if sync:
            self.sync_local_storage(storage["id"])
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
