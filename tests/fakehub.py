"""A loopback fake of the Hugging Face Hub's download routes, for tests without network.

Serves, on ``127.0.0.1`` in a background thread, the routes ``huggingface_hub`` 2.4 uses to download
(see ``PEERS.md`` §2.6 and Appendix C):

* ``HEAD``/``GET /{org}/{name}/resolve/{rev}/{file}`` -> 200 with ``X-Repo-Commit``, ``ETag`` (the
  file's sha256, as the Hub does for LFS files) and ``Content-Length``; errors carry the Hub's
  ``X-Error-Code`` header (``RepoNotFound`` with 401, ``RevisionNotFound``/``EntryNotFound`` with 404).
* ``GET /api/models/{org}/{name}/revision/{rev}`` -> ``{"id", "sha", "siblings"}``.
* ``GET /api/models/{org}/{name}/tree/{sha}`` -> ``[{"type": "file", "path", "size", "oid"}]``.

Usage::

    with FakeHub() as hub:
        sha = hub.add_commit("org/name", {"model.safetensors": data, "config.json": cfg})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        ...
    hub.requests  # [(method, path), ...]
"""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse

__all__ = ["FakeHub"]


class FakeHub:
    """An in-memory set of model repositories served over HTTP on a free loopback port."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # repo_id -> {"refs": {branch: sha}, "commits": {sha: {file: bytes}}}
        self.requests: list[tuple[str, str]] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------------- content

    def add_commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main", sha: str | None = None) -> str:
        """Add a commit holding ``files`` to ``repo_id`` and point ``branch`` at it; returns its 40-hex SHA."""
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        if sha is None:
            h = hashlib.sha1(repo_id.encode() + str(len(repo["commits"])).encode())
            for name in sorted(files):
                h.update(name.encode() + hashlib.sha256(files[name]).digest())
            sha = h.hexdigest()
        repo["commits"][sha] = dict(files)
        repo["refs"][branch] = sha
        return sha

    def _resolve(self, repo_id: str, rev: str) -> tuple[int, str, str | None]:
        """(status, error_code, sha) for a repo and revision."""
        repo = self.repos.get(repo_id)
        if repo is None:
            return 401, "RepoNotFound", None
        sha = repo["refs"].get(rev, rev if rev in repo["commits"] else None)
        if sha is None:
            return 404, "RevisionNotFound", None
        return 200, "", sha

    # -------------------------------------------------------------------------------------- server

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not running; use it as a context manager or call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
                hub._handle(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                hub._handle(self, head=False)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakehub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------------------------------- routes

    def _handle(self, req: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        parsed = urllib.parse.urlsplit(req.path)
        path = urllib.parse.unquote(parsed.path)
        with self._lock:
            self.requests.append((req.command, path))
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, filename = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            status, code, sha = self._resolve(repo_id, rev)
            if sha is None:
                return self._error(req, status, code)
            files = self.repos[repo_id]["commits"][sha]
            if filename not in files:
                return self._error(req, 404, "EntryNotFound")
            data = files[filename]
            headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Content-Type": "application/octet-stream"}
            return self._send(req, 200, data, headers, head)
        if len(parts) >= 5 and parts[:2] == ["api", "models"] and parts[4] in ("revision", "tree"):
            repo_id = f"{parts[2]}/{parts[3]}"
            rev = "/".join(parts[5:]) or "main"
            status, code, sha = self._resolve(repo_id, rev)
            if sha is None:
                return self._error(req, status, code)
            files = self.repos[repo_id]["commits"][sha]
            if parts[4] == "revision":
                body = {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                        "siblings": [{"rfilename": f} for f in sorted(files)]}
            else:
                body = [{"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                        for f, d in sorted(files.items())]
            return self._send(req, 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
        return self._error(req, 404, "")

    @staticmethod
    def _send(req: http.server.BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str],
              head: bool) -> None:
        req.send_response(status)
        for k, v in headers.items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if not head:
            req.wfile.write(data)

    @classmethod
    def _error(cls, req: http.server.BaseHTTPRequestHandler, status: int, code: str) -> None:
        body = json.dumps({"error": code or "Not Found"}).encode()
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
            headers["X-Error-Message"] = code
        cls._send(req, status, body, headers, head=req.command == "HEAD")
