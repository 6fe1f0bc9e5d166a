"""A small Chrome DevTools Protocol driver for the browser tests (test support, not library code).

Starts a headless chromium with its own profile and a free DevTools port, and drives one page over its
WebSocket (``websocket-client``): navigate, evaluate JavaScript, wait for a condition, take a screenshot.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Browser:
    """One headless chromium and its first page."""

    def __init__(self, exe: str, profile_dir: Path, width: int = 1280, height: int = 1000):
        import websocket  # websocket-client (dev extra)

        self.on_event: Any = None  # called with each DevTools event that arrives while a command waits
        self.profile_dir = Path(profile_dir)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile_dir}", f"--window-size={width},{height}", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port = self._devtools_port(120.0)  # a loaded 2-core machine: chromium has taken > 30 s to start
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise CDPError("chromium opened no page")
            time.sleep(0.2)
        # suppress_origin: chromium refuses DevTools WebSockets from an Origin it was not told to allow
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self._id = 0
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def _devtools_port(self, timeout: float) -> int:
        f = self.profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CDPError(f"chromium exited with code {self.proc.returncode}")
            if f.exists() and f.read_text().strip():
                return int(f.read_text().split()[0])
            time.sleep(0.1)
        self.close()
        raise CDPError("chromium did not open its DevTools port")

    def send(self, method: str, **params) -> dict:
        """One DevTools command; returns its result (events received meanwhile go to ``on_event``, if set)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg and self.on_event is not None:
                self.on_event(msg)

    def evaluate(self, expression: str) -> Any:
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise CDPError(f"JavaScript error: {r['exceptionDetails'].get('text')} in {expression[:80]!r}")
        return r.get("result", {}).get("value")

    def navigate(self, url: str, settle: float = 0.5) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout=60)
        time.sleep(settle)

    def wait_for(self, expression: str, timeout: float = 60.0, interval: float = 0.25) -> Any:
        """Evaluate ``expression`` until it is truthy; returns its value (raises CDPError on timeout)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except CDPError:
                value = None  # the page is navigating
            if value:
                return value
            time.sleep(interval)
        raise CDPError(f"timed out after {timeout:.0f} s waiting for {expression[:120]!r} (last: {value!r})")

    def wait_stable(self, expression: str, timeout: float = 120.0, hold: float = 1.5) -> Any:
        """Like :meth:`wait_for`, but the value must stay truthy for ``hold`` seconds (a single-page app may
        render a view, then mount it again); returns the last value."""
        deadline = time.monotonic() + timeout
        since = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"timed out after {timeout:.0f} s waiting for a stable {expression[:120]!r}")
            value = self.wait_for(expression, timeout=remaining)
            since = since or time.monotonic()
            if time.monotonic() - since >= hold:
                return value
            time.sleep(0.25)
            try:
                if not self.evaluate(expression):
                    since = None
            except CDPError:
                since = None

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def login(self, base_url: str, email: str, password: str) -> None:
        """Log in through Label Studio's login form, as a person does."""
        self.navigate(f"{base_url}/user/login/")
        self.evaluate(f"""(() => {{
            document.querySelector('input[name=email]').value = {json.dumps(email)};
            document.querySelector('input[name=password]').value = {json.dumps(password)};
            document.querySelector('input[name=password]').form.submit(); }})()""")
        self.wait_for("!location.pathname.startsWith('/user/login') && document.readyState === 'complete'",
                      timeout=60)

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
