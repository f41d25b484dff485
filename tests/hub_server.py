"""A small, local Hugging Face Hub-protocol server for offline tests (stdlib only).

It implements the subset of the Hub HTTP API that ``huggingface_hub`` 2.x calls for
``create_repo`` / ``delete_repo`` / ``upload_folder`` / ``upload_file`` / ``create_commit`` /
``list_repo_files`` / ``list_repo_tree`` / ``get_paths_info`` / ``repo_info`` / ``model_info`` /
``hf_hub_download`` / ``snapshot_download`` / ``whoami`` / ``create_branch`` / ``create_tag`` /
``list_repo_refs`` / ``list_repo_commits`` / ``update_repo_settings``, including the legacy
(non-Xet) LFS upload protocol, so ``transformers``/``peft`` ``push_to_hub`` and
``from_pretrained("user/name")`` work against it.

Storage: file contents live content-addressed (sha256) in a temporary directory; repos,
refs and commits (each commit holds a full path -> blob snapshot) live in memory.

Auth mimics the real Hub: ``Authorization: Bearer <token>``; an unknown token gets 401
``Invalid credentials in Authorization header`` on every endpoint, a write operation with no
token gets 401, a read-only token or another user's namespace gets 403, a private repo seen
by someone else is a ``RepoNotFound``. Errors carry ``X-Error-Code`` / ``X-Error-Message``
headers and an ``{"error": ...}`` JSON body, so ``huggingface_hub`` raises its usual
``HfHubHTTPError`` subclasses (``RepositoryNotFoundError``, ``RevisionNotFoundError``,
``RemoteEntryNotFoundError``, ``BadRequestError``).

Known users and tokens (see :data:`TOKENS`): ``alice`` (write token :data:`ALICE_WRITE_TOKEN`,
read-only token :data:`ALICE_READ_TOKEN`, member of no organisation) and ``bob`` (write
token :data:`BOB_WRITE_TOKEN`), whose namespace alice cannot write to.

pytest usage: ``from hub_server import hub, local_hub  # noqa: F401`` in ``tests/conftest.py``
(before anything imports huggingface_hub). Importing this module reserves a free loopback
port and sets ``HF_ENDPOINT`` (and ``HF_HUB_DISABLE_XET=1``) *at import time*, because
``huggingface_hub`` reads them only once, when first imported; every Hub call of the test
session (subprocesses included) then goes to 127.0.0.1. Fixtures:

* ``local_hub`` (session): the :class:`LocalHub` serving at ``HF_ENDPOINT``, started on first use.
* ``hub`` (function): the same server with ``HF_TOKEN`` = alice's write token and
  huggingface_hub's offline mode off for the test; fails the test if the server crashed or
  got a request it does not implement. Helpers: ``hub.new_repo_id()``, ``hub.seed_repo()``,
  ``hub.files()``, ``hub.requests``.

``ORIGINAL_HF_ENDPOINT`` keeps the value HF_ENDPOINT had before (for a real-Hub test, which
must run its client in a subprocess with that endpoint).
"""
from __future__ import annotations

import base64
import datetime as _dt
import fnmatch
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

ALICE_WRITE_TOKEN = "hf_localhub_alice_write_0000000000"
ALICE_READ_TOKEN = "hf_localhub_alice_read_00000000000"
BOB_WRITE_TOKEN = "hf_localhub_bob_write_000000000000"
WRONG_TOKEN = "hf_localhub_wrong_token_0000000000"

#: token -> (user name, role) where role is "write" or "read".
TOKENS: dict[str, tuple[str, str]] = {
    ALICE_WRITE_TOKEN: ("alice", "write"),
    ALICE_READ_TOKEN: ("alice", "read"),
    BOB_WRITE_TOKEN: ("bob", "write"),
}
#: user -> organisations the user may write to (besides their own namespace).
USER_ORGS: dict[str, list[str]] = {"alice": [], "bob": []}

#: Files above this size (bytes) are stored through LFS, like the Hub's 10 MB rule.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

#: Default `.gitattributes` of a new repo (the LFS patterns the Hub writes on creation).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib",
        "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot",
        "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors",
        "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip",
        "*.zst", "*tfevents*",
    )
)

_REPO_TYPES_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


# --------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class _Entry:
    """One file in a commit snapshot."""

    sha256: str
    size: int
    lfs: bool
    last_commit: str

    @property
    def git_oid(self) -> str:
        """Git blob id: of the content for regular files, of the LFS pointer for LFS files."""
        return _git_blob_oid(_lfs_pointer(self.sha256, self.size)) if self.lfs else self._content_oid

    _content_oid: str = ""


@dataclass
class _Commit:
    oid: str
    parents: list[str]
    title: str
    message: str
    author: str
    date: str
    tree: dict[str, _Entry]


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    owner: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)


class HubError(Exception):
    """An HTTP error the handler turns into a Hub-like JSON response."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}
        self.extra = extra or {}


@dataclass
class _Caller:
    token: str | None
    user: str | None
    role: str | None  # "write" | "read" | None (anonymous)


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------
class LocalHub:
    """A local Hub-protocol HTTP server.

    Args:
        port: TCP port on 127.0.0.1 (0 = pick a free one).
        root: directory for blob storage (default: a new temporary directory, removed by
            :meth:`stop`).

    Attributes:
        write_token / read_token / bob_token / wrong_token: the tokens tests use.
        requests: ``(method, path, status)`` of every request served, in order.
        unhandled: requests that matched no route (a test can assert it is empty).
        errors: tracebacks of requests that crashed the handler (500s).
    """

    write_token = ALICE_WRITE_TOKEN
    read_token = ALICE_READ_TOKEN
    bob_token = BOB_WRITE_TOKEN
    wrong_token = WRONG_TOKEN

    def __init__(self, port: int = 0, root: str | Path | None = None) -> None:
        self.port = port
        self._own_root = root is None
        self.root = Path(root) if root is not None else None
        self.endpoint: str | None = None
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._uploads: dict[str, tuple[str, int]] = {}  # upload id -> (sha256, size)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> str:
        """Start serving in a background thread; return the endpoint URL (no trailing slash)."""
        if self._server is not None:
            return self.endpoint  # type: ignore[return-value]
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="localhub-"))
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "incoming").mkdir(parents=True, exist_ok=True)
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="LocalHub",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        """Stop serving and delete the temporary storage (if this object created it)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._own_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "LocalHub":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests ---------------------------------------------------------------
    def new_repo_id(self, name: str = "repo", user: str = "alice") -> str:
        """A repo id that no test has used yet in this server, e.g. ``alice/repo-3``."""
        return f"{user}/{name}-{next(self._counter)}"

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        """Whether the repo exists on this server (no auth)."""
        return (repo_type, repo_id) in self.repos

    def seed_repo(self, repo_id: str, files: str | Path | dict[str, bytes], *, repo_type: str = "model",
                  private: bool = False, message: str = "seed") -> str:
        """Create (or add a commit to) a repo server-side, bypassing auth; return the commit id.

        For tests needing a repo in a namespace no test token can write, e.g. a base model
        ``sentence-transformers/all-MiniLM-L6-v2`` that a frozen/LoRA push refers to.
        ``files`` is a local folder (uploaded recursively) or ``{path_in_repo: bytes}``.
        """
        if not isinstance(files, dict):
            folder = Path(files)
            files = {p.relative_to(folder).as_posix(): p.read_bytes()
                     for p in sorted(folder.rglob("*")) if p.is_file()}
        with self._lock:
            repo = self.repos.get((repo_type, repo_id))
            if repo is None:
                repo = self._create_repo(repo_type, repo_id, repo_id.split("/")[0], private)
            parent = repo.branches["main"]
            oid = self._new_commit_oid(repo_id)
            tree = dict(repo.commits[parent].tree)
            patterns = self._lfs_patterns(tree)
            for path, data in files.items():
                sha, git_oid = self._store_bytes(data)
                lfs = len(data) >= LFS_SIZE_THRESHOLD or self._matches_any(path, patterns)
                tree[path] = _Entry(sha256=sha, size=len(data), lfs=lfs, last_commit=oid,
                                    _content_oid="" if lfs else git_oid)
            repo.commits[oid] = _Commit(oid=oid, parents=[parent], title=message, message="",
                                        author=repo.owner, date=_now(), tree=tree)
            repo.branches["main"] = oid
            return oid

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Content of every file of a repo at a revision (for assertions, no auth)."""
        with self._lock:
            repo = self.repos[(repo_type, repo_id)]
            commit = repo.commits[self._resolve(repo, revision)]
            return {path: self._blob_path(e.sha256).read_bytes() for path, e in commit.tree.items()}

    # -- storage ---------------------------------------------------------------------------
    def _blob_path(self, sha256: str) -> Path:
        assert self.root is not None
        return self.root / "blobs" / sha256

    def _store_bytes(self, data: bytes) -> tuple[str, str]:
        sha = hashlib.sha256(data).hexdigest()
        path = self._blob_path(sha)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha, _git_blob_oid(data)

    def _create_repo(self, repo_type: str, repo_id: str, owner: str, private: bool) -> _Repo:
        repo = _Repo(repo_type=repo_type, repo_id=repo_id, owner=owner, private=private,
                     created_at=_now())
        sha, oid = self._store_bytes(DEFAULT_GITATTRIBUTES.encode())
        commit_oid = self._new_commit_oid(repo_id)
        entry = _Entry(sha256=sha, size=len(DEFAULT_GITATTRIBUTES.encode()), lfs=False,
                       last_commit=commit_oid, _content_oid=oid)
        repo.commits[commit_oid] = _Commit(oid=commit_oid, parents=[], title="initial commit",
                                           message="", author=owner, date=_now(),
                                           tree={".gitattributes": entry})
        repo.branches["main"] = commit_oid
        self.repos[(repo_type, repo_id)] = repo
        return repo

    @staticmethod
    def _new_commit_oid(seed: str) -> str:
        return hashlib.sha1(f"{seed}{secrets.token_hex(16)}".encode()).hexdigest()

    @staticmethod
    def _resolve(repo: _Repo, revision: str) -> str:
        """Branch / tag / refs/... / commit id -> commit id; HubError 404 if unknown."""
        rev = revision
        if rev.startswith("refs/heads/"):
            rev = rev[len("refs/heads/"):]
        elif rev.startswith("refs/tags/"):
            rev = rev[len("refs/tags/"):]
            if rev in repo.tags:
                return repo.tags[rev]
        m = re.fullmatch(r"refs/pr/(\d+)", rev)
        if m and int(m.group(1)) in repo.prs:
            return repo.prs[int(m.group(1))]
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.tags:
            return repo.tags[rev]
        if re.fullmatch(r"[0-9a-f]{7,40}", rev):
            matches = [c for c in repo.commits if c.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _lfs_patterns(self, tree: dict[str, _Entry]) -> list[str]:
        entry = tree.get(".gitattributes")
        if entry is None:
            return []
        text = self._blob_path(entry.sha256).read_text(errors="replace")
        return [line.split()[0] for line in text.splitlines()
                if line.strip() and not line.startswith("#") and "filter=lfs" in line]

    @staticmethod
    def _matches_any(path: str, patterns: list[str]) -> bool:
        name = path.rsplit("/", 1)[-1]
        for pattern in patterns:
            if "/" in pattern:
                if fnmatch.fnmatch(path, pattern.replace("**/", "*")):
                    return True
            elif fnmatch.fnmatch(name, pattern):
                return True
        return False


# --------------------------------------------------------------------------------------
# HTTP handler
# --------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub  # set on the bound subclass
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"

    # Silence the default stderr logging; requests are recorded on hub.requests instead.
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    # -- dispatch ------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        self._status = 0
        self._body_read = False
        try:
            self._route(method, url.path)
        except HubError as err:
            self._drain()
            if self._status:  # response already started: cannot send another one
                self.close_connection = True
            else:
                self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # pragma: no cover - a bug in the server; surfaced to the test
            tb = traceback.format_exc()
            self.hub.errors.append(tb)
            self._drain()
            if self._status:
                self.close_connection = True
            else:
                self._send_error(HubError(500, "Internal error in LocalHub: " + tb.splitlines()[-1]))
        finally:
            with self.hub._lock:
                self.hub.requests.append((method, self.path, self._status))

    def _route(self, method: str, path: str) -> None:
        seg = path.split("/")[1:]  # raw (still %-encoded) segments
        if seg[:1] == ["api"]:
            return self._route_api(method, seg[1:])
        if seg[:1] == ["lfs-upload"] and len(seg) == 2 and method == "PUT":
            return self._lfs_put(seg[1])
        repo_type = "model"
        if seg and seg[0] in ("datasets", "spaces") and len(seg) > 3:
            repo_type, seg = _REPO_TYPES_PLURAL[seg[0]], seg[1:]
        if len(seg) >= 4 and seg[1].endswith(".git") and seg[2:4] == ["info", "lfs"]:
            repo_id = f"{unquote(seg[0])}/{unquote(seg[1][:-4])}"
            tail = "/".join(seg[4:])
            if method == "POST" and tail == "objects/batch":
                return self._lfs_batch(repo_type, repo_id)
            if method == "POST" and tail == "objects/verify":
                return self._lfs_verify(repo_type, repo_id)
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            repo_id = f"{unquote(seg[0])}/{unquote(seg[1])}"
            return self._resolve_file(method, repo_type, repo_id, unquote(seg[3]),
                                      unquote("/".join(seg[4:])))
        self._unhandled(method)

    def _route_api(self, method: str, seg: list[str]) -> None:
        if seg == ["whoami-v2"] and method == "GET":
            return self._whoami()
        if seg == ["repos", "create"] and method == "POST":
            return self._create_repo()
        if seg == ["repos", "delete"] and method == "DELETE":
            return self._delete_repo()
        if seg == ["validate-yaml"] and method == "POST":
            return self._validate_yaml()
        if len(seg) >= 3 and seg[0] in _REPO_TYPES_PLURAL:
            repo_type = _REPO_TYPES_PLURAL[seg[0]]
            repo_id = f"{unquote(seg[1])}/{unquote(seg[2])}"
            rest = seg[3:]
            action = rest[0] if rest else ""
            arg = unquote(rest[1]) if len(rest) > 1 else None
            tail = unquote("/".join(rest[2:]))
            if not rest and method == "GET":
                return self._repo_info(repo_type, repo_id, None)
            if action == "revision" and arg is not None and method == "GET":
                return self._repo_info(repo_type, repo_id, arg)
            if action == "preupload" and arg is not None and method == "POST":
                return self._preupload(repo_type, repo_id, arg)
            if action == "commit" and arg is not None and method == "POST":
                return self._commit(repo_type, repo_id, arg)
            if action == "tree" and arg is not None and method == "GET":
                return self._tree(repo_type, repo_id, arg, tail)
            if action == "paths-info" and arg is not None and method == "POST":
                return self._paths_info(repo_type, repo_id, arg)
            if action == "refs" and len(rest) == 1 and method == "GET":
                return self._refs(repo_type, repo_id)
            if action == "commits" and arg is not None and method == "GET":
                return self._commits(repo_type, repo_id, arg)
            if action == "branch" and arg is not None and method in ("POST", "DELETE"):
                return self._branch(method, repo_type, repo_id, arg)
            if action == "tag" and arg is not None and method in ("POST", "DELETE"):
                return self._tag(method, repo_type, repo_id, arg)
            if action == "settings" and len(rest) == 1 and method == "PUT":
                return self._settings(repo_type, repo_id)
        self._unhandled(method)

    def _unhandled(self, method: str) -> None:
        with self.hub._lock:
            self.hub.unhandled.append((method, self.path))
        raise HubError(404, f"LocalHub does not implement {method} {urlsplit(self.path).path}")

    # -- request / response helpers --------------------------------------------------------
    def _read_body(self) -> bytes:
        """Read the whole request body (Content-Length or chunked transfer encoding)."""
        if self._body_read:
            return b""
        self._body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return b"".join(self._iter_chunks())
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _iter_chunks(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline()
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield self.rfile.read(size)
            self.rfile.readline()  # CRLF after the chunk

    def _iter_body(self) -> Iterator[bytes]:
        """Stream the request body in pieces (for LFS uploads)."""
        self._body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._iter_chunks()
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            piece = self.rfile.read(min(remaining, 1 << 20))
            if not piece:
                break
            remaining -= len(piece)
            yield piece

    def _drain(self) -> None:
        try:
            self._read_body()
        except Exception:
            self.close_connection = True

    def _json_body(self) -> Any:
        raw = self._read_body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from None

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict[str, str] | None = None, head_only: bool = False,
              length: int | None = None) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body and not head_only:
            self.wfile.write(body)

    def _send_json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None,
                   content_type: str = "application/json") -> None:
        self._send(status, json.dumps(data).encode(), content_type, headers)

    def _send_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message.replace("\n", " "), **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        body = {"error": err.message, **err.extra}
        self._send(err.status, json.dumps(body).encode(), "application/json", headers,
                   head_only=self.command == "HEAD")

    # -- auth ------------------------------------------------------------------------------
    def _caller(self) -> _Caller:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return _Caller(None, None, None)
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else auth.strip()
        if token not in TOKENS:
            raise HubError(401, "Invalid credentials in Authorization header")
        user, role = TOKENS[token]
        return _Caller(token, user, role)

    @staticmethod
    def _can_write_namespace(caller: _Caller, namespace: str) -> bool:
        return caller.user is not None and (
            namespace == caller.user or namespace in USER_ORGS.get(caller.user, []))

    def _require_write(self, caller: _Caller, namespace: str, what: str) -> None:
        if caller.user is None:
            raise HubError(401, f"You must be authenticated to {what}. Pass a token "
                                "with write access in the Authorization header.")
        if not self._can_write_namespace(caller, namespace):
            raise HubError(403, f"You don't have the rights to {what} under the namespace "
                                f"\"{namespace}\" (authenticated as \"{caller.user}\")")
        if caller.role != "write":
            raise HubError(403, f"You don't have the rights to {what} under the namespace "
                                f"\"{namespace}\": this token is read-only; use a token with "
                                "write access")

    def _get_repo(self, repo_type: str, repo_id: str, caller: _Caller) -> _Repo:
        repo = self.hub.repos.get((repo_type, repo_id))
        visible = repo is not None and (
            not repo.private or self._can_write_namespace(caller, repo.owner))
        if not visible:
            raise HubError(401 if caller.user is None else 404, "Repository not found",
                           "RepoNotFound")
        return repo  # type: ignore[return-value]

    # -- endpoints: users / repos ----------------------------------------------------------
    def _whoami(self) -> None:
        caller = self._caller()
        self._read_body()
        if caller.user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        orgs = [{"type": "org", "name": org, "roleInOrg": "write"}
                for org in USER_ORGS.get(caller.user, [])]
        self._send_json({
            "type": "user", "id": hashlib.md5(caller.user.encode()).hexdigest()[:24],
            "name": caller.user, "fullname": caller.user.capitalize(),
            "email": f"{caller.user}@localhub.test", "emailVerified": True, "canPay": False,
            "isPro": False, "orgs": orgs,
            "auth": {"type": "access_token", "accessToken": {
                "displayName": f"localhub-{caller.user}-{caller.role}", "role": caller.role,
                "createdAt": "2024-01-01T00:00:00.000Z"}},
        })

    def _create_repo(self) -> None:
        caller = self._caller()
        body = self._json_body()
        repo_type = body.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        name = body.get("name") or ""
        namespace = body.get("organization") or caller.user or ""
        if not _NAME_RE.match(name) or "--" in name or ".." in name or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name: {name!r}")
        self._require_write(caller, namespace, f"create a {repo_type}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.hub.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}"
        with self.hub._lock:
            if (repo_type, repo_id) in self.hub.repos:
                raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            private = body.get("visibility") == "private" or bool(body.get("private"))
            self.hub._create_repo(repo_type, repo_id, namespace, private)
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        caller = self._caller()
        body = self._json_body()
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or caller.user or ""
        repo_id = f"{namespace}/{body.get('name')}"
        with self.hub._lock:
            self._get_repo(repo_type, repo_id, caller)
            self._require_write(caller, namespace, f"delete a {repo_type}")
            del self.hub.repos[(repo_type, repo_id)]
        self._send_json({})

    def _settings(self, repo_type: str, repo_id: str) -> None:
        caller = self._caller()
        body = self._json_body()
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, caller)
            self._require_write(caller, repo.owner, f"change the settings of a {repo_type}")
            if "visibility" in body:
                repo.private = body["visibility"] == "private"
            if "private" in body:
                repo.private = bool(body["private"])
        self._send_json({})

    def _validate_yaml(self) -> None:
        self._caller()
        body = self._json_body()
        content = body.get("content", "")
        errors = [{"message": msg} for msg in validate_card_metadata(content)]
        if errors:
            self._send_json({"errors": errors, "warnings": []}, status=400)
        else:
            self._send_json({"errors": [], "warnings": []})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str | None) -> None:
        caller = self._caller()
        self._read_body()
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, caller)
            sha = self.hub._resolve(repo, revision or "main")
            commit = repo.commits[sha]
            with_blobs = _truthy(self.query.get("blobs"))
            siblings = []
            for path in sorted(commit.tree):
                entry = commit.tree[path]
                sibling: dict[str, Any] = {"rfilename": path}
                if with_blobs:
                    sibling.update(size=entry.size, blobId=entry.git_oid)
                    if entry.lfs:
                        sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256,
                                          "pointerSize": len(_lfs_pointer(entry.sha256, entry.size))}
                siblings.append(sibling)
            card = self._card_data(commit)
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id,
            "author": repo.owner, "sha": sha, "lastModified": commit.date,
            "createdAt": repo.created_at, "private": repo.private, "gated": False,
            "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.tree.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        if card is not None:
            info["cardData"] = card
            tags = card.get("tags") or []
            info["tags"] = [t for t in (tags if isinstance(tags, list) else [tags]) if isinstance(t, str)]
            for key in ("library_name", "pipeline_tag"):
                if isinstance(card.get(key), str):
                    info[key] = card[key]
            if "model-index" in card:
                info["model-index"] = card["model-index"]
        config_entry = commit.tree.get("config.json")
        if config_entry is not None and config_entry.size < 1_000_000:
            try:
                config = json.loads(self.hub._blob_path(config_entry.sha256).read_bytes())
                info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
            except ValueError:
                pass
        expand = self.query.get("expand") or self.query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        self._send_json(info)

    def _card_data(self, commit: _Commit) -> dict | None:
        entry = commit.tree.get("README.md")
        if entry is None:
            return None
        text = self.hub._blob_path(entry.sha256).read_text(errors="replace")
        try:
            data = parse_front_matter(text)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    # -- endpoints: uploads ------------------------------------------------------------------
    def _write_target(self, repo_type: str, repo_id: str, revision: str,
                      caller: _Caller) -> tuple[_Repo, bool]:
        """Check the caller may push to `revision`; returns (repo, create_pr)."""
        repo = self._get_repo(repo_type, repo_id, caller)
        create_pr = _truthy(self.query.get("create_pr"))
        if create_pr:
            if caller.user is None:
                raise HubError(401, "You must be authenticated to open a pull request")
            if caller.role != "write":
                raise HubError(403, "This token is read-only; opening a pull request needs a "
                                    "token with write access")
        else:
            self._require_write(caller, repo.owner, f"write to a {repo_type}")
        return repo, create_pr

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        caller = self._caller()
        body = self._json_body()
        with self.hub._lock:
            repo, _ = self._write_target(repo_type, repo_id, revision, caller)
            sha = self.hub._resolve(repo, revision)
            tree = repo.commits[sha].tree
            patterns = self.hub._lfs_patterns(tree)
            files = []
            for item in body.get("files", []):
                path, size = item["path"], int(item.get("size", 0))
                sample = base64.b64decode(item.get("sample", ""))
                lfs = size >= LFS_SIZE_THRESHOLD or self.hub._matches_any(path, patterns) or (
                    b"\x00" in sample)
                mode = "lfs" if lfs else "regular"
                existing = tree.get(path)
                oid = None
                if existing is not None:
                    oid = existing.sha256 if mode == "lfs" else (
                        None if existing.lfs else existing.git_oid)
                files.append({"path": path, "uploadMode": mode, "shouldIgnore": False,
                              "oid": oid})
        self._send_json({"files": files, "commitOid": sha})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        caller = self._caller()
        body = self._json_body()
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, caller)
            if body.get("ref") is not None:
                self._require_write(caller, repo.owner, f"write to a {repo_type}")
            elif caller.user is None or caller.role != "write":
                raise HubError(401 if caller.user is None else 403,
                               "Uploading LFS objects needs a token with write access")
            if body.get("operation") != "upload":
                raise HubError(400, "LocalHub only implements the LFS 'upload' operation")
            objects = []
            for obj in body.get("objects", []):
                oid, size = str(obj.get("oid")), int(obj.get("size", -1))
                if not re.fullmatch(r"[0-9a-f]{64}", oid) or size < 0:
                    objects.append({"oid": oid, "size": max(size, 0),
                                    "error": {"code": 422, "message": "Invalid oid or size"}})
                    continue
                out: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if not self.hub._blob_path(oid).exists():
                    upload_id = secrets.token_hex(16)
                    self.hub._uploads[upload_id] = (oid, size)
                    prefix = _URL_PREFIX[repo_type]
                    out["actions"] = {
                        "upload": {"href": f"{self.hub.endpoint}/lfs-upload/{upload_id}",
                                   "expires_in": 3600},
                        "verify": {"href": f"{self.hub.endpoint}/{prefix}{repo_id}.git/info/lfs"
                                           "/objects/verify", "expires_in": 3600},
                    }
                objects.append(out)
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                        content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, upload_id: str) -> None:
        with self.hub._lock:
            target = self.hub._uploads.pop(upload_id, None)
        if target is None:
            self._drain()
            raise HubError(403, "Unknown or expired upload URL")
        oid, size = target
        assert self.hub.root is not None
        tmp = self.hub.root / "incoming" / upload_id
        digest, received = hashlib.sha256(), 0
        with open(tmp, "wb") as fh:
            for piece in self._iter_body():
                digest.update(piece)
                received += len(piece)
                fh.write(piece)
        if digest.hexdigest() != oid or received != size:
            tmp.unlink(missing_ok=True)
            raise HubError(400, f"Uploaded content does not match the announced oid/size "
                                f"(got sha256 {digest.hexdigest()} and {received} bytes)")
        os.replace(tmp, self.hub._blob_path(oid))
        self._send(200, b"", "text/plain", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str) -> None:
        caller = self._caller()
        body = self._json_body()
        with self.hub._lock:
            self._get_repo(repo_type, repo_id, caller)
        path = self.hub._blob_path(str(body.get("oid")))
        if not path.exists() or path.stat().st_size != int(body.get("size", -1)):
            raise HubError(404, "LFS object not found")
        self._send_json({"message": "ok"}, content_type="application/vnd.git-lfs+json")

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        caller = self._caller()
        raw = self._read_body()
        try:
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except ValueError as err:
            raise HubError(400, f"Invalid NDJSON commit payload: {err}") from None
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a 'header' line")
        header = lines[0]["value"]
        if not header.get("summary"):
            raise HubError(400, "Commit summary (message) is required")
        with self.hub._lock:
            repo, create_pr = self._write_target(repo_type, repo_id, revision, caller)
            if not create_pr and revision not in repo.branches and not (
                    revision.startswith("refs/heads/") and revision[11:] in repo.branches):
                if re.fullmatch(r"refs/pr/\d+", revision) and int(revision[8:]) in repo.prs:
                    pass
                else:
                    raise HubError(404, f"Invalid rev id: {revision} (not a branch)",
                                   "RevisionNotFound")
            parent = self.hub._resolve(repo, revision)
            if header.get("parentCommit") and not parent.startswith(header["parentCommit"]):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            new_oid = self.hub._new_commit_oid(repo_id)
            tree = dict(repo.commits[parent].tree)
            for line in lines[1:]:
                self._apply_operation(tree, line.get("key"), line.get("value") or {}, new_oid)
            commit = _Commit(oid=new_oid, parents=[parent], title=header["summary"],
                             message=header.get("description") or "", author=caller.user or "",
                             date=_now(), tree=tree)
            repo.commits[new_oid] = commit
            prefix = _URL_PREFIX[repo_type]
            pr_url = None
            if create_pr:
                number = max(repo.prs, default=0) + 1
                repo.prs[number] = new_oid
                pr_url = f"{self.hub.endpoint}/{prefix}{repo_id}/discussions/{number}"
            elif re.fullmatch(r"refs/pr/\d+", revision):
                repo.prs[int(revision[8:])] = new_oid
            else:
                repo.branches[revision.removeprefix("refs/heads/")] = new_oid
        self._send_json({"success": True, "commitOid": new_oid,
                         "commitUrl": f"{self.hub.endpoint}/{prefix}{repo_id}/commit/{new_oid}",
                         "pullRequestUrl": pr_url,
                         "hookOutput": None})

    def _apply_operation(self, tree: dict[str, _Entry], key: str | None, value: dict,
                         commit_oid: str) -> None:
        path = str(value.get("path", "")).strip("/")
        if not path and key != "deletedFolder":
            raise HubError(400, f"Operation {key!r} without a path")
        if key == "file":
            encoding = value.get("encoding", "base64")
            content = value.get("content", "")
            data = base64.b64decode(content) if encoding == "base64" else str(content).encode()
            sha, oid = self.hub._store_bytes(data)
            tree[path] = _Entry(sha256=sha, size=len(data), lfs=False, last_commit=commit_oid,
                                _content_oid=oid)
        elif key == "lfsFile":
            oid = str(value.get("oid"))
            blob = self.hub._blob_path(oid)
            if not blob.exists():
                raise HubError(422, f"LFS object {oid} for {path!r} was not uploaded "
                                    "(call the LFS batch endpoint and PUT the file first)")
            size = blob.stat().st_size
            if value.get("size") is not None and int(value["size"]) != size:
                raise HubError(422, f"LFS object {oid} has size {size}, not {value['size']}")
            tree[path] = _Entry(sha256=oid, size=size, lfs=True, last_commit=commit_oid)
        elif key == "deletedFile":
            if path not in tree:
                raise HubError(404, f"File to delete not found: {path}", "EntryNotFound")
            del tree[path]
        elif key == "deletedFolder":
            prefix = path + "/" if path else ""
            doomed = [p for p in tree if p.startswith(prefix)]
            if not doomed:
                raise HubError(404, f"Folder to delete not found: {path}", "EntryNotFound")
            for p in doomed:
                del tree[p]
        else:
            raise HubError(400, f"LocalHub does not implement commit operation {key!r}")

    # -- endpoints: refs / history ------------------------------------------------------------
    def _branch(self, method: str, repo_type: str, repo_id: str, branch: str) -> None:
        caller = self._caller()
        body = self._json_body()
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, caller)
            self._require_write(caller, repo.owner, f"manage branches of a {repo_type}")
            if method == "DELETE":
                if branch not in repo.branches or branch == "main":
                    raise HubError(404 if branch != "main" else 403,
                                   f"Cannot delete branch {branch}", "RevisionNotFound")
                del repo.branches[branch]
                return self._send_json({})
            if branch.startswith("refs/") or not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
                raise HubError(400, f"Invalid reference for a branch: {branch}")
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = self.hub._resolve(repo, body.get("startingPoint") or "main")
        self._send_json({})

    def _tag(self, method: str, repo_type: str, repo_id: str, arg: str) -> None:
        caller = self._caller()
        body = self._json_body()
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, caller)
            self._require_write(caller, repo.owner, f"manage tags of a {repo_type}")
            if method == "DELETE":
                if arg not in repo.tags:
                    raise HubError(404, f"Tag not found: {arg}", "RevisionNotFound")
                del repo.tags[arg]
                return self._send_json({})
            tag = str(body.get("tag") or "")
            if not tag:
                raise HubError(400, "Missing tag name")
            if tag in repo.tags:
                raise HubError(409, f"Tag already exists: {tag}")
            repo.tags[tag] = self.hub._resolve(repo, arg)
        self._send_json({})

    def _refs(self, repo_type: str, repo_id: str) -> None:
        caller = self._caller()
        self._read_body()
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, caller)
            data: dict[str, Any] = {
                "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                             for n, c in repo.branches.items()],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c}
                         for n, c in repo.tags.items()],
                "converts": [],
            }
            if _truthy(self.query.get("include_prs")):
                data["pullRequests"] = [{"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}",
                                         "targetCommit": c} for n, c in repo.prs.items()]
        self._send_json(data)

    def _commits(self, repo_type: str, repo_id: str, revision: str) -> None:
        caller = self._caller()
        self._read_body()
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, caller)
            oid: str | None = self.hub._resolve(repo, revision)
            out = []
            while oid is not None:
                commit = repo.commits[oid]
                out.append({"id": oid, "title": commit.title, "message": commit.message,
                            "authors": [{"user": commit.author}], "date": commit.date})
                oid = commit.parents[0] if commit.parents else None
        self._send_json(out)

    # -- endpoints: listing / downloads -------------------------------------------------------
    def _entry_json(self, path: str, entry: _Entry, repo: _Repo, expand: bool) -> dict:
        out: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size,
                               "path": path}
        if entry.lfs:
            out["lfs"] = {"oid": entry.sha256, "size": entry.size,
                          "pointerSize": len(_lfs_pointer(entry.sha256, entry.size))}
        if expand:
            commit = repo.commits[entry.last_commit]
            out["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
            out["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False},
                                         "pickleImportScan": None}
        return out

    @staticmethod
    def _folder_json(path: str, tree: dict[str, _Entry]) -> dict:
        members = "".join(sorted(p for p in tree if p.startswith(path + "/")))
        return {"type": "directory", "oid": hashlib.sha1(members.encode()).hexdigest(),
                "size": 0, "path": path}

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        caller = self._caller()
        self._read_body()
        recursive = _truthy(self.query.get("recursive"))
        expand = _truthy(self.query.get("expand"))
        path = path.strip("/")
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, caller)
            tree = repo.commits[self.hub._resolve(repo, revision)].tree
            prefix = path + "/" if path else ""
            if path and path in tree:
                raise HubError(400, f"{path} is a file, not a directory")
            below = sorted(p for p in tree if p.startswith(prefix))
            if path and not below:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
            out: list[dict] = []
            folders: set[str] = set()
            for p in below:
                rel_parts = p[len(prefix):].split("/")
                for depth in range(1, len(rel_parts)):
                    folder = prefix + "/".join(rel_parts[:depth])
                    if folder not in folders and (recursive or depth == 1):
                        folders.add(folder)
                        out.append(self._folder_json(folder, tree))
                if recursive or len(rel_parts) == 1:
                    out.append(self._entry_json(p, tree[p], repo, expand))
        self._send_json(out)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        caller = self._caller()
        raw = self._read_body()
        if "json" in self.headers.get("Content-Type", ""):
            body = json.loads(raw or b"{}")
            paths = body.get("paths") or []
            expand = bool(body.get("expand"))
        else:
            form = parse_qs(raw.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = _truthy(form.get("expand"))
        paths = [paths] if isinstance(paths, str) else paths
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, caller)
            tree = repo.commits[self.hub._resolve(repo, revision)].tree
            out = []
            for p in paths:
                p = p.strip("/")
                if p in tree:
                    out.append(self._entry_json(p, tree[p], repo, expand))
                elif any(q.startswith(p + "/") for q in tree):
                    out.append(self._folder_json(p, tree))
        self._send_json(out)

    def _resolve_file(self, method: str, repo_type: str, repo_id: str, revision: str,
                      path: str) -> None:
        caller = self._caller()
        self._read_body()
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, caller)
            sha = self.hub._resolve(repo, revision)
            entry = repo.commits[sha].tree.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": sha})
        blob = self.hub._blob_path(entry.sha256)
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes",
                   "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"'}
        if entry.lfs:
            headers["ETag"] = f'"{entry.git_oid}"'
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        else:
            headers["ETag"] = f'"{entry.git_oid}"'
        start, end, status = 0, entry.size - 1, 200
        range_header = self.headers.get("Range")
        if range_header and entry.size > 0:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if m is None or (not m.group(1) and not m.group(2)):
                raise HubError(416, f"Unsupported Range header: {range_header}",
                               headers={"Content-Range": f"bytes */{entry.size}"})
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), entry.size - 1) if m.group(2) else entry.size - 1
            else:  # suffix range: last N bytes
                start = max(entry.size - int(m.group(2)), 0)
            if start >= entry.size or start > end:
                raise HubError(416, "Requested range not satisfiable",
                               headers={"Content-Range": f"bytes */{entry.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        length = end - start + 1 if entry.size else 0
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method == "HEAD" or length == 0:
            return
        with open(blob, "rb") as fh:
            fh.seek(start)
            remaining = length
            while remaining > 0:
                piece = fh.read(min(remaining, 1 << 20))
                if not piece:
                    break
                self.wfile.write(piece)
                remaining -= len(piece)


def _truthy(values: list[str] | str | None) -> bool:
    if values is None:
        return False
    value = values[-1] if isinstance(values, list) else values
    return str(value).strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------
# README metadata (what the Hub's /api/validate-yaml checks, in small)
# --------------------------------------------------------------------------------------
def parse_front_matter(text: str) -> Any:
    """Return the YAML block between the leading ``---`` lines of a README (None if absent).

    Uses PyYAML when installed (it is a project dependency); without it, metadata is not
    parsed and None is returned. Raises ValueError on invalid YAML.
    """
    m = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    if m is None:
        return None
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency of the project
        return None
    try:
        return yaml.safe_load(m.group(1))
    except yaml.YAMLError as err:
        raise ValueError(f"Invalid YAML in README.md metadata: {err}") from None


def validate_card_metadata(content: str) -> list[str]:
    """Errors the Hub would report for a model card's metadata (empty list = valid).

    Checks that the front matter is a YAML mapping, that ``tags``/``datasets``/``language``
    are strings or lists of strings, that ``license`` is a string, and that ``model-index``
    follows the Hub schema (name, results[].task.type, results[].metrics[].type/value).
    """
    try:
        data = parse_front_matter(content)
    except ValueError as err:
        return [str(err)]
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["README.md metadata must be a YAML mapping"]
    errors: list[str] = []
    for key in ("tags", "datasets", "language", "base_model"):
        value = data.get(key)
        if value is not None and not isinstance(value, str) and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)):
            errors.append(f'"{key}" must be a string or a list of strings')
    for key in ("license", "library_name", "pipeline_tag"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
    index = data.get("model-index")
    if index is not None:
        if not isinstance(index, list):
            return errors + ['"model-index" must be a list']
        for i, model in enumerate(index):
            if not isinstance(model, dict) or not isinstance(model.get("name"), str):
                errors.append(f'"model-index[{i}].name" is required and must be a string')
                continue
            results = model.get("results")
            if not isinstance(results, list):
                errors.append(f'"model-index[{i}].results" must be a list')
                continue
            for j, result in enumerate(results):
                where = f"model-index[{i}].results[{j}]"
                task = result.get("task") if isinstance(result, dict) else None
                if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                    errors.append(f'"{where}.task.type" is required')
                metrics = result.get("metrics") if isinstance(result, dict) else None
                if not isinstance(metrics, list) or not metrics:
                    errors.append(f'"{where}.metrics" must be a non-empty list')
                    continue
                for k, metric in enumerate(metrics):
                    if not isinstance(metric, dict) or not isinstance(metric.get("type"), str) \
                            or "value" not in metric:
                        errors.append(f'"{where}.metrics[{k}]" needs "type" and "value"')
                dataset = result.get("dataset")
                if dataset is not None and (not isinstance(dataset, dict) or not isinstance(
                        dataset.get("type"), str) or not isinstance(dataset.get("name"), str)):
                    errors.append(f'"{where}.dataset" needs "type" and "name" strings')
    return errors


# --------------------------------------------------------------------------------------
# pytest integration
# --------------------------------------------------------------------------------------
def _reserve_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: HF_ENDPOINT before this module changed it (a real-Hub test runs its client in a
#: subprocess with this value).
ORIGINAL_HF_ENDPOINT: str | None = os.environ.get("HF_ENDPOINT")
#: Port the session's LocalHub will serve on; HF_ENDPOINT points at it.
SESSION_PORT: int = int(os.environ.get("NLP_TRANSFER_LOCALHUB_PORT") or 0) or _reserve_port()
SESSION_ENDPOINT = f"http://127.0.0.1:{SESSION_PORT}"


def configure_environment() -> None:
    """Point huggingface_hub at the session's LocalHub (call before importing it).

    Sets ``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET=1``. If huggingface_hub was already imported,
    patches its module-level endpoint constants too (best effort) and warns.
    """
    os.environ["HF_ENDPOINT"] = SESSION_ENDPOINT
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and getattr(constants, "ENDPOINT", None) != SESSION_ENDPOINT:
        warnings.warn("huggingface_hub was imported before tests/hub_server.py: patching its "
                      "endpoint constants; import hub_server first (tests/conftest.py).",
                      stacklevel=2)
        constants.ENDPOINT = SESSION_ENDPOINT
        constants.HUGGINGFACE_CO_URL_TEMPLATE = SESSION_ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"
        constants.HF_HUB_DISABLE_XET = True
        hf_api = sys.modules.get("huggingface_hub.hf_api")
        if hf_api is not None and hasattr(hf_api, "api"):
            hf_api.api.endpoint = SESSION_ENDPOINT  # the module-level HfApi() behind upload_folder & co


configure_environment()

try:
    import pytest
except ImportError:  # pragma: no cover - the module also works as a plain library
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def local_hub() -> Iterator[LocalHub]:
        """The session's LocalHub, serving at ``HF_ENDPOINT`` (started on first use)."""
        hub = LocalHub(port=SESSION_PORT)
        try:
            hub.start()
        except OSError as err:  # the reserved port was taken in the meantime
            pytest.fail(f"LocalHub could not bind {SESSION_ENDPOINT} ({err}); rerun, or set "
                        "NLP_TRANSFER_LOCALHUB_PORT to a free port")
        yield hub
        hub.stop()

    @pytest.fixture()
    def hub(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
        """LocalHub for one test: HF_TOKEN = alice's write token, Hub offline mode off.

        Also fails the test if the server crashed on a request or got a request it does
        not implement during the test.
        """
        import huggingface_hub.constants as hf_constants

        monkeypatch.setenv("HF_TOKEN", ALICE_WRITE_TOKEN)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        n_errors, n_unhandled = len(local_hub.errors), len(local_hub.unhandled)
        yield local_hub
        new_errors = local_hub.errors[n_errors:]
        new_unhandled = local_hub.unhandled[n_unhandled:]
        assert not new_errors, "LocalHub crashed:\n" + "\n".join(new_errors)
        assert not new_unhandled, f"LocalHub got requests it does not implement: {new_unhandled}"
