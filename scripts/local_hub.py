#!/usr/bin/env python3
"""A local Hub: a server speaking the part of the Hugging Face Hub API that huggingface_hub and
kernels use for kernel repositories, to try the publish / get_kernel journey without the real
Hub. The tests point HF_ENDPOINT at it too.

    python scripts/local_hub.py [--port 8765] [--root .local-hub] [--trust ORG]

prints the `export HF_ENDPOINT=...` line to use, and keeps its repositories in `--root`
(reloaded at the next start).

Implemented: repo creation, branches, refs, repo info by revision, recursive tree listing,
preupload (everything "regular": inline in the commit), NDJSON commits with inline and deleted
files (optionally as a pull request), file resolution with the headers the client checks, and
the organization overview kernels reads for its trust check, and README front-matter
validation. Commits are real: content-addressed
trees and a parent chain, with stable ids. Any other request answers 501 with the path, so that
client drift fails loudly. `fail_next_commits` makes the next commits fail, to test recovery.
"""

import argparse
import base64
import hashlib
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

EMPTY_COMMIT = "0" * 40


@dataclass
class Repo:
    commits: dict = field(default_factory=dict)  # oid -> {"parent", "files": {path: bytes}, "message"}
    branches: dict = field(default_factory=dict)  # name -> oid
    pulls: dict = field(default_factory=dict)  # number -> oid


class HubState:
    def __init__(self, root: Path | None = None):
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self.fail_next_commits = 0
        self.corrupt_on_commit: str | None = None  # a path suffix whose content a commit alters (tests)
        self.trusted_publishers: set[str] = set()  # orgs the overview reports as trustedKernelPublisher
        self.requests: list[str] = []
        self.root = root  # where the repos persist (None: memory only)
        if root is not None:
            self._load()

    # --- persistence: <root>/blobs/<sha1> holds file contents, <root>/repos/<org>/<name>.json the rest ---
    def save(self) -> None:
        if self.root is None:
            return
        blobs = self.root / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        for repo_id, repo in self.repos.items():
            commits = {}
            for oid, commit in repo.commits.items():
                names = {}
                for path, data in commit["files"].items():
                    sha = hashlib.sha1(data).hexdigest()
                    if not (blobs / sha).exists():
                        (blobs / sha).write_bytes(data)
                    names[path] = sha
                commits[oid] = {"parent": commit["parent"], "message": commit["message"], "files": names}
            target = self.root / "repos" / f"{repo_id}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            body = {"commits": commits, "branches": repo.branches, "pulls": {str(k): v for k, v in repo.pulls.items()}}
            target.write_text(json.dumps(body, indent=1), encoding="utf-8")
        (self.root / "trusted_publishers.json").write_text(json.dumps(sorted(self.trusted_publishers)))

    def _load(self) -> None:
        for path in sorted((self.root / "repos").glob("*/*.json")):
            body = json.loads(path.read_text(encoding="utf-8"))
            repo = Repo(branches=body["branches"], pulls={int(k): v for k, v in body["pulls"].items()})
            for oid, commit in body["commits"].items():
                files = {p: (self.root / "blobs" / sha).read_bytes() for p, sha in commit["files"].items()}
                repo.commits[oid] = {"parent": commit["parent"], "message": commit["message"], "files": files}
            self.repos[f"{path.parent.name}/{path.stem}"] = repo
        trusted = self.root / "trusted_publishers.json"
        if trusted.exists():
            self.trusted_publishers |= set(json.loads(trusted.read_text()))

    def resolve(self, repo: Repo, rev: str) -> str | None:
        rev = unquote(rev).removeprefix("refs/heads/")
        if rev in repo.branches:
            return repo.branches[rev]
        if rev.startswith("refs/pr/") and int(rev.rsplit("/", 1)[1]) in repo.pulls:
            return repo.pulls[int(rev.rsplit("/", 1)[1])]
        if rev in repo.commits:
            return rev
        return None

    def commit(self, repo: Repo, parent: str | None, files: dict, message: str) -> str:
        digest = hashlib.sha1()
        digest.update((parent or "").encode())
        digest.update(message.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha1(files[path]).digest())
        oid = digest.hexdigest()
        repo.commits[oid] = {"parent": parent, "files": files, "message": message}
        return oid


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # --- plumbing ---
    def _send(self, status, body=b"", headers=None, head_only=False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _error(self, status, message, code=None):
        # huggingface_hub maps X-Error-Code to its typed errors (RepositoryNotFoundError, ...).
        headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
        self._send(status, {"error": message}, headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _repo(self, repo_id) -> Repo | None:
        return self.state.repos.get(repo_id)

    def _route(self, method):
        url = urlparse(self.path)
        # Match on the raw path: a revision may carry an encoded "/" (refs%2Fheads%2Fv1).
        path, query = url.path, parse_qs(url.query)
        self.state.requests.append(f"{method} {unquote(path)}")
        repo, rev = r"(?P<repo>[^/]+/[^/]+)", r"(?P<rev>[^/]+)"
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("GET", r"/api/organizations/(?P<org>[^/]+)/overview", self.org_overview),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("GET", rf"/api/kernels/{repo}/refs", self.refs),
            ("POST", rf"/api/kernels/{repo}/branch/(?P<branch>.+)", self.create_branch),
            ("GET", rf"/api/kernels/{repo}/revision/(?P<rev>.+)", self.repo_info),
            ("GET", rf"/api/kernels/{repo}", self.repo_info),
            ("GET", rf"/api/kernels/{repo}/tree/{rev}(?P<sub>/.*)?", self.tree),
            ("POST", rf"/api/kernels/{repo}/preupload/(?P<rev>.+)", self.preupload),
            ("POST", rf"/api/kernels/{repo}/commit/(?P<rev>.+)", self.create_commit),
            ("GET HEAD", rf"/kernels/{repo}/resolve/{rev}/(?P<file>.+)", self.resolve_file),
        ]
        for verbs, pattern, fn in routes:
            m = re.fullmatch(pattern, path)
            if method in verbs.split() and m:
                groups = {k: unquote(v) if v else v for k, v in m.groupdict().items()}
                with self.state.lock:
                    fn(query=query, head_only=method == "HEAD", **groups)
                    if method == "POST":
                        self.state.save()
                    return
        self._error(501, f"local hub server does not implement {method} {path}")

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def do_DELETE(self):
        self._route("DELETE")

    # --- endpoints ---
    def create_repo(self, query, head_only):
        body = json.loads(self._body() or b"{}")
        if body.get("type") != "kernel":
            return self._error(400, f"this server holds kernel repos only, got type {body.get('type')!r}")
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if repo_id in self.state.repos:
            return self._error(409, "You already created this kernel repo")
        repo = Repo()
        repo.branches["main"] = self.state.commit(repo, None, {".gitattributes": b""}, "initial commit")
        self.state.repos[repo_id] = repo
        host = self.headers.get("Host")
        self._send(200, {"url": f"http://{host}/kernels/{repo_id}", "name": repo_id, "id": repo_id})

    def org_overview(self, org, query, head_only):
        self._send(200, {"_id": org, "name": org, "fullname": org, "avatarUrl": "", "isFollowing": False,
                         "numUsers": 1, "numModels": 0, "numDatasets": 0, "numSpaces": 0, "numFollowers": 0,
                         "trustedKernelPublisher": org in self.state.trusted_publishers})

    def validate_yaml(self, query, head_only):
        """The card's front matter must name the kernels library and a license, as the Hub's
        kernel pages need."""
        content = json.loads(self._body() or b"{}").get("content", "")
        front = content.split("---")[1] if content.startswith("---") else ""
        errors = [{"message": f"missing `{key}:`"} for key in ("library_name", "license") if f"{key}:" not in front]
        self._send(400 if errors else 200, {"errors": errors, "warnings": []})

    def refs(self, repo, query, head_only):
        r = self._repo(repo)
        if r is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        body = {
            "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in r.branches.items()],
            "converts": [],
            "tags": [],
        }
        if query.get("include_prs"):
            body["pullRequests"] = [{"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": oid}
                                    for n, oid in r.pulls.items()]
        self._send(200, body)

    def create_branch(self, repo, branch, query, head_only):
        r = self._repo(repo)
        if r is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        body = json.loads(self._body() or b"{}")
        if branch in r.branches:
            return self._error(409, f"Branch {branch} already exists")
        start = self.state.resolve(r, body.get("startingPoint") or "main")
        if start is None:
            return self._error(404, "starting point not found")
        r.branches[branch] = start
        self._send(200, {})

    def _revision(self, repo, rev):
        """(repo, commit id) for a revision, or None after answering 404."""
        r = self._repo(repo)
        if r is None:
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        oid = self.state.resolve(r, rev)
        if oid is None:
            self._error(404, f"Revision Not Found: {rev}", "RevisionNotFound")
            return None
        return r, oid

    def repo_info(self, repo, query, head_only, rev="main"):
        found = self._revision(repo, rev)
        if found is None:
            return
        r, oid = found
        files = r.commits[oid]["files"]
        self._send(200, {"id": repo, "author": repo.split("/")[0], "sha": oid, "private": False,
                         "siblings": [{"rfilename": p} for p in sorted(files)], "lastModified": "2026-01-01T00:00:00.000Z"})

    def tree(self, repo, rev, query, head_only, sub=None):
        found = self._revision(repo, rev)
        if found is None:
            return
        r, oid = found
        prefix = (sub or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries, dirs = [], set()
        for path, data in sorted(r.commits[oid]["files"].items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = "/".join(([prefix] if prefix else []) + parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    entries.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "oid": _git_blob_oid(data), "size": len(data), "path": path})
        if prefix and not entries:
            return self._error(404, f"Entry not found: {prefix}", "EntryNotFound")
        self._send(200, entries)

    def preupload(self, repo, rev, query, head_only):
        if self._repo(repo) is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        body = json.loads(self._body() or b"{}")
        self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in body.get("files", [])]})

    def create_commit(self, repo, rev, query, head_only):
        r = self._repo(repo)
        if r is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
        if self.state.fail_next_commits > 0:
            self.state.fail_next_commits -= 1
            return self._error(500, "Internal Error - commit rejected by the test server")
        header = next((l["value"] for l in lines if l["key"] == "header"), {})
        parent_oid = self.state.resolve(r, rev)
        if parent_oid is None:
            return self._error(404, f"Revision Not Found: {rev}", "RevisionNotFound")
        expected_parent = header.get("parentCommit")
        if expected_parent and expected_parent != parent_oid:
            return self._error(412, "A commit has happened since. Please refresh and try again.")
        files = dict(r.commits[parent_oid]["files"])
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return self._error(400, f"unsupported file encoding {value.get('encoding')}")
                files[value["path"]] = base64.b64decode(value["content"])
                if self.state.corrupt_on_commit and value["path"].endswith(self.state.corrupt_on_commit):
                    files[value["path"]] += b"\n# altered in transit\n"
            elif key == "deletedFile":
                if value["path"] not in files:
                    return self._error(404, f"cannot delete missing file {value['path']}")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            elif key in ("lfsFile", "copyFile"):
                return self._error(501, f"local hub server does not implement commit operation {key}")
            elif key != "header":
                return self._error(400, f"unknown commit operation {key}")
        message = header.get("summary", "") + ("\n\n" + header["description"] if header.get("description") else "")
        oid = self.state.commit(r, parent_oid, files, message)
        host = self.headers.get("Host")
        body = {"commitUrl": f"http://{host}/kernels/{repo}/commit/{oid}", "commitOid": oid, "success": True}
        if query.get("create_pr", ["0"])[0] in ("1", "true", "True"):
            number = len(r.pulls) + 1
            r.pulls[number] = oid
            body["pullRequestUrl"] = f"http://{host}/kernels/{repo}/discussions/{number}"
        else:
            r.branches[unquote(rev).removeprefix("refs/heads/")] = oid
        self._send(200, body)

    def resolve_file(self, repo, rev, file, query, head_only):
        r = self._repo(repo)
        if r is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        oid = self.state.resolve(r, rev)
        if oid is None:
            return self._send(404, b"", {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
        data = r.commits[oid]["files"].get(file)
        if data is None:
            return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
        etag = f'"{_git_blob_oid(data)}"'
        self._send(200, data, {"X-Repo-Commit": oid, "ETag": etag, "Content-Type": "application/octet-stream"},
                   head_only=head_only)


class LocalHub:
    """A running server: `url` for HF_ENDPOINT, `state` to inspect or inject failures.
    root: a folder to keep the repos in (None: in memory); port 0 picks a free one."""

    def __init__(self, root: Path | None = None, port: int = 0, host: str = "127.0.0.1"):
        self.state = HubState(root)
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, rev: str) -> dict[str, bytes]:
        repo = self.state.repos[repo_id]
        return dict(repo.commits[self.state.resolve(repo, rev)]["files"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--root", type=Path, default=Path(".local-hub"), help="folder that keeps the repositories")
    parser.add_argument("--trust", action="append", default=[], metavar="ORG",
                        help="report ORG as a trusted kernel publisher (as `kernels lock` needs)")
    args = parser.parse_args(argv)
    try:
        hub = LocalHub(root=args.root.resolve(), port=args.port)
    except OSError as e:
        print(f"local_hub: cannot listen on 127.0.0.1:{args.port}: {e.strerror}", file=sys.stderr)
        return 1
    hub.state.trusted_publishers |= set(args.trust)
    repos = ", ".join(sorted(hub.state.repos)) or "none yet"
    print(f"local Hub serving {args.root.resolve()} (repos: {repos}); in another shell:\n"
          f"  export HF_ENDPOINT={hub.url} HF_TOKEN=hf_local_token\n"
          "Ctrl-C stops it.", flush=True)
    try:
        hub.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
