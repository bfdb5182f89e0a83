"""A real Label Studio server for the tests, and an annotator that works it through the REST API.

The server runs from its own virtual environment (``.venv-labelstudio``, made by ``make test``; another
``label-studio`` executable can be named with ``LABEL_STUDIO_BIN``) on 127.0.0.1 at a free port, with a
throwaway data directory (sqlite) and a non-interactive admin whose legacy API token is set at first start.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 300.0


@dataclass
class Server:
    url: str
    token: str
    process: subprocess.Popen
    log: Path
    start_seconds: float

    def request(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def project(self, title: str) -> dict[str, Any]:
        (project,) = [p for p in self.request("GET", "/api/projects?page_size=1000")["results"] if p["title"] == title]
        return project

    def tasks(self, title: str) -> list[dict[str, Any]]:
        """The project's tasks with annotations and predictions, ordered by pool index."""
        project = self.project(title)
        tasks = self.request("GET", f"/api/projects/{project['id']}/export?exportType=JSON&download_all_tasks=true")
        return sorted(tasks, key=lambda t: t["data"]["pool_index"])

    def annotate(self, task_id: int, choice: str) -> dict[str, Any]:
        return self.request("POST", f"/api/tasks/{task_id}/annotations", {"result": [
            {"from_name": "label", "to_name": "sample", "type": "choices", "value": {"choices": [choice]}}]})

    def skip(self, task_id: int) -> dict[str, Any]:
        return self.request("POST", f"/api/tasks/{task_id}/annotations", {"result": [], "was_cancelled": True})

    def delete_annotation(self, annotation_id: int) -> None:
        self.request("DELETE", f"/api/annotations/{annotation_id}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable() -> Path:
    path = Path(os.environ.get("LABEL_STUDIO_BIN", ROOT / ".venv-labelstudio" / "bin" / "label-studio"))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: `make test` installs label-studio into .venv-labelstudio "
                                "(or set LABEL_STUDIO_BIN to a label-studio executable)")
    return path


def start(data_dir: Path) -> Server:
    """Start a fresh server and wait until its API answers the admin's token."""
    port, token = free_port(), secrets.token_hex(20)  # Label Studio takes user tokens of at most 40 characters
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "DJANGO_DB": "sqlite",
           "LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "LABEL_STUDIO_USERNAME": "annotator@example.com", "LABEL_STUDIO_PASSWORD": secrets.token_hex(12),
           "LABEL_STUDIO_USER_TOKEN": token, "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}
    env.pop("LABEL_STUDIO_API_KEY", None)
    log = data_dir / "server.log"
    began = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen([str(executable()), "start", "--no-browser", "--internal-host", "127.0.0.1",
                                    "--port", str(port), "--data-dir", str(data_dir)], env=env, cwd=data_dir,
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", token, process, log, 0.0)
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"label-studio exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            server.request("GET", "/api/current-user/whoami")
            break
        except (urllib.error.URLError, OSError):
            if time.monotonic() - began > START_TIMEOUT:
                stop(server)
                raise RuntimeError(f"label-studio did not answer within {START_TIMEOUT:g} s:\n"
                                   f"{log.read_text()[-3000:]}") from None
            time.sleep(0.5)
    server.start_seconds = time.monotonic() - began
    return server


def stop(server: Server) -> None:
    """Stop the server's process group (the server and anything it started)."""
    if server.process.poll() is not None:
        return
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
