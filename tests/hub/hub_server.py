"""A small Hugging Face Hub-compatible HTTP server for tests (model repos, branch `main`, files stored on disk).

No installable server accepts commits (olah, the PyPI mirror, refuses uploads), so this implements exactly the
endpoints huggingface_hub 2.4 calls to create a repo, commit files and download them again (read from
huggingface_hub's hf_api.py, _commit_api.py, _snapshot_download.py and file_download.py):

    POST /api/repos/create                           create_repo (409 when it exists)
    POST /api/validate-yaml                          create_commit checks a README.md's metadata first
    POST /api/models/{repo}/preupload/{rev}          upload mode per file: always "regular" (base64 in the commit)
    POST /api/models/{repo}/commit/{rev}             NDJSON: header, then "file" lines (base64) or deletions
    GET  /api/models/{repo}[/revision/{rev}]         model_info / repo_info: sha and siblings
    GET  /api/models/{repo}/tree/{rev}[/{path}]      list_repo_tree (snapshot_download lists files with it)
    HEAD/GET /{repo}/resolve/{rev}/{path}            file metadata (X-Repo-Commit, ETag) and content
    GET  /api/whoami-v2                              the token's user

Writes need `Authorization: Bearer <token>`; private repos are invisible (404) without it. Every request is
recorded in `requests` as (method, path) so tests can check which calls were made. Blobs live under `root/blobs`
named by their git blob id, as on the Hub; repo state is kept in memory.
"""

import base64
import hashlib
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class Repo:
    def __init__(self, private: bool):
        self.private = private
        self.commits: list[tuple[str, dict[str, str]]] = []  # (commit sha, path -> blob id), oldest first

    def files(self, revision: str) -> tuple[str, dict[str, str]] | None:
        if not self.commits:
            return None
        if revision == "main":
            return self.commits[-1]
        return next((commit for commit in self.commits if commit[0] == revision), None)


class HubServer:
    """`with HubServer(root, token="hf_test") as hub:` -> `hub.endpoint` for HF_ENDPOINT."""

    def __init__(self, root: str | Path, token: str, user: str = "tester"):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.token, self.user = token, user
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        _, files = self.repos[repo_id].files(revision)
        return (self.blobs / files[path]).read_bytes()

    def repo_files(self, repo_id: str, revision: str = "main") -> set[str]:
        found = self.repos[repo_id].files(revision)
        return set(found[1]) if found else set()


def _handler_for(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        # ------------------------------------------------------------------ plumbing
        def _reply(self, status: int, body=b"", headers: dict | None = None, error_code: str | None = None):
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            content_type = "application/json" if not isinstance(body, bytes) else "application/octet-stream"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if error_code:
                self.send_header("X-Error-Code", error_code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, message: str, error_code: str | None = None):
            self._reply(status, {"error": message}, error_code=error_code)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    chunk = self.rfile.read(size)
                    self.rfile.readline()
                    if size == 0:
                        return b"".join(chunks)
                    chunks.append(chunk)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {hub.token}"

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorized()):
                self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
                return None
            return repo

        def _route(self) -> tuple[list[str], dict]:
            url = urlparse(self.path)
            hub.requests.append((self.command, url.path))
            query = dict(part.split("=", 1) for part in url.query.split("&") if "=" in part)
            return [unquote(part) for part in url.path.strip("/").split("/")], query

        # ------------------------------------------------------------------ verbs
        def do_POST(self):
            parts, query = self._route()
            body = self._body()
            if parts[:2] == ["api", "validate-yaml"]:
                content = json.loads(body)["content"]
                if content.startswith("---"):
                    try:
                        yaml.safe_load(content.split("---")[1])
                    except yaml.YAMLError as error:
                        return self._error(400, f"Invalid YAML metadata: {error}")
                return self._reply(200, {"errors": [], "warnings": []})
            if not self._authorized():
                return self._error(401, "Invalid credentials in Authorization header")
            if parts[:3] == ["api", "repos", "create"]:
                return self._create_repo(json.loads(body))
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("preupload", "commit"):
                repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
                repo = self._repo(repo_id)
                if repo is None:
                    return None
                if revision != "main":
                    return self._error(404, f"Revision {revision} not found", "RevisionNotFound")
                if query.get("create_pr"):
                    return self._error(400, "This test server does not open pull requests")
                return self._preupload(repo, body) if action == "preupload" else self._commit(repo_id, repo, body)
            return self._error(404, f"Unknown endpoint POST {self.path}")

        def do_GET(self):
            parts, _ = self._route()
            if parts[:2] == ["api", "whoami-v2"]:
                if not self._authorized():
                    return self._error(401, "Invalid credentials in Authorization header")
                return self._reply(200, {"type": "user", "name": hub.user, "orgs": [], "auth": {}})
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self._api_model(f"{parts[2]}/{parts[3]}", parts[4:])
            return self._resolve(parts)

        def do_HEAD(self):
            self._resolve(self._route()[0])

        # ------------------------------------------------------------------ endpoints
        def _create_repo(self, payload: dict):
            if payload.get("type", "model") != "model":
                return self._error(400, "This test server only hosts model repos")
            repo_id = f"{payload.get('organization') or hub.user}/{payload['name']}"
            with hub.lock:
                if repo_id in hub.repos:  # like the Hub, the conflict names the existing repo's url
                    body = {"error": "You already created this model repo", "url": f"{hub.endpoint}/{repo_id}"}
                    return self._reply(409, body)
                private = payload.get("visibility") == "private" or bool(payload.get("private"))
                hub.repos[repo_id] = Repo(private=private)
            return self._reply(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})

        def _preupload(self, repo: Repo, body: bytes):
            current = repo.files("main")
            existing = current[1] if current else {}
            files = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": existing.get(f["path"])}
                for f in json.loads(body)["files"]
            ]
            return self._reply(200, {"files": files, "commitOid": current[0] if current else None})

        def _commit(self, repo_id: str, repo: Repo, body: bytes):
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            if not lines or lines[0]["key"] != "header" or not lines[0]["value"].get("summary"):
                return self._error(400, "A commit starts with a header line that has a summary")
            with hub.lock:
                current = repo.files("main")
                files = dict(current[1]) if current else {}
                for line in lines[1:]:
                    key, value = line["key"], line["value"]
                    if key == "file":
                        content = base64.b64decode(value["content"])
                        blob = git_blob_id(content)
                        (hub.blobs / blob).write_bytes(content)
                        files[value["path"]] = blob
                    elif key == "deletedFile":
                        files.pop(value["path"], None)
                    elif key == "deletedFolder":
                        files = {p: b for p, b in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
                    else:
                        return self._error(400, f"This test server does not accept {key!r} commit operations")
                sha = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
                repo.commits.append((sha, files))
            return self._reply(
                200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}
            )

        def _api_model(self, repo_id: str, rest: list[str]):
            repo = self._repo(repo_id)
            if repo is None:
                return None
            revision = "main"
            if rest[:1] in (["revision"], ["tree"]):
                revision = rest[1] if len(rest) > 1 else "main"
            found = repo.files(revision)
            if found is None:
                return self._error(404, f"Revision {revision} not found", "RevisionNotFound")
            sha, files = found
            if rest[:1] == ["tree"]:
                prefix = "/".join(rest[2:])
                entries = [
                    {"type": "file", "oid": blob, "size": (hub.blobs / blob).stat().st_size, "path": path}
                    for path, blob in sorted(files.items())
                    if not prefix or path.startswith(prefix.rstrip("/") + "/")
                ]
                return self._reply(200, entries)
            siblings = [{"rfilename": path} for path in sorted(files)]
            return self._reply(200, {"id": repo_id, "sha": sha, "private": repo.private, "siblings": siblings})

        def _resolve(self, parts: list[str]):
            # /{namespace}/{name}/resolve/{revision}/{path...}
            if len(parts) < 5 or parts[2] != "resolve":
                return self._error(404, f"Unknown endpoint {self.command} {self.path}")
            repo_id, revision, path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            repo = self._repo(repo_id)
            if repo is None:
                return None
            found = repo.files(revision)
            if found is None:
                return self._error(404, f"Revision {revision} not found", "RevisionNotFound")
            sha, files = found
            if path not in files:
                return self._error(404, f"{path} not found", "EntryNotFound")
            content = (hub.blobs / files[path]).read_bytes()
            self._reply(200, content, headers={"X-Repo-Commit": sha, "ETag": f'"{files[path]}"'})

    return Handler
