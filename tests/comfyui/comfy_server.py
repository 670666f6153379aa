"""A headless ComfyUI process for the tests and a small client for its HTTP and websocket API.

Started as ``python main.py --cpu --listen 127.0.0.1 --port P --base-directory DIR`` in ComfyUI's own environment
(:mod:`comfyui_env`) with this checkout's ``src/`` and the torchvision shim on its ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

START_TIMEOUT = 180  # seconds; ComfyUI starts in about 15 s on a 2-core machine
RUN_TIMEOUT = 120


class PromptError(Exception):
    """ComfyUI refused a prompt (HTTP 400): ``node_errors`` holds its per-node messages."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(json.dumps(body)[:2000])
        self.body = body

    def messages(self) -> list[str]:
        """Every node error as 'message: details'."""
        return [f"{e['message']}: {e['details']}" for node in self.body.get("node_errors", {}).values()
                for e in node["errors"]]


class ComfyServer:
    """One ComfyUI process and the client calls the tests make."""

    def __init__(self, source: Path, python: Path, base: Path, pythonpath: list[Path]) -> None:
        self.source, self.base = source, base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.log_path = base / "comfyui.log"
        env = {k: v for k, v in os.environ.items() if k not in ("KOLORS_MODEL", "PYTHONPATH", "VIRTUAL_ENV")}
        env.update(PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath), HF_HUB_OFFLINE="1",
                   OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(base), "--database-url", "sqlite:///:memory:"],
            cwd=source, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    # --- life cycle ---------------------------------------------------------------------------------------------
    def wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with status {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    # --- HTTP -----------------------------------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def post(self, path: str, data: dict | None = None) -> Any:
        request = urllib.request.Request(self.url + path, data=json.dumps(data or {}).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            if err.code == 400:
                raise PromptError(json.loads(err.read())) from None
            raise
        return json.loads(body) if body else None

    def submit(self, prompt: dict[str, Any]) -> str:
        """Queue an API-format prompt; its prompt id."""
        prompt = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        """The prompt's /history entry once it has finished (successfully or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if not self.alive:
                raise RuntimeError(f"ComfyUI died:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log_tail()}")

    def run(self, prompt: dict[str, Any]) -> dict[str, Any]:
        """Run a prompt to the end; its /history entry (raises with ComfyUI's message when it failed)."""
        entry = self.wait(self.submit(prompt))
        if entry["status"]["status_str"] != "success":
            raise AssertionError(f"prompt failed: {status_messages(entry)}")
        return entry

    def images(self, entry: dict[str, Any], node_id: str) -> list[Path]:
        """The files a Save/Preview Image node wrote."""
        folders = {"output": self.base / "output", "temp": self.base / "temp"}
        return [folders[im["type"]] / im["subfolder"] / im["filename"]
                for im in entry["outputs"][node_id]["images"]]

    def websocket(self) -> Any:
        import websocket

        return websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}", timeout=60)


def status_messages(entry: dict[str, Any]) -> list:
    return entry.get("status", {}).get("messages", [])


def execution_error(entry: dict[str, Any]) -> dict[str, Any]:
    """The execution_error message of a failed prompt."""
    for kind, data in status_messages(entry):
        if kind == "execution_error":
            return data
    raise AssertionError(f"no execution error in {status_messages(entry)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
