"""Headless Chromium driven over the DevTools protocol, through a pipe: what the web demo's browser tests and the
browser benchmark (reports/export_bench.py --browser) load the page with.

    with Chromium() as browser:                      # /usr/bin/chromium (Debian's), or $HSVLT_CHROMIUM
        page = browser.open("http://127.0.0.1:8000/")
        page.evaluate("document.title")
        page.requests                                # every URL the page and its workers asked for

The protocol runs over --remote-debugging-pipe (file descriptors 3 and 4, messages ended by NUL), so nothing here
needs a WebDriver or a WebSocket client, and the browser opens no debugging port. The flags keep it offline: no
first-run, sync, component updates, background networking or QUIC; a fresh profile in a temporary folder.
"""

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

OFFLINE_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
                 "--mute-audio", "--hide-scrollbars")
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


class BrowserError(RuntimeError, ValueError):
    """The browser is missing or failed, a page's script threw, or something did not happen in time: one line,
    reported as the project's other run-time failures are (a ValueError to hsvlt.cli)."""


def find_chromium() -> str | None:
    """$HSVLT_CHROMIUM, else Debian's chromium (or another Chromium on the usual paths), else None."""
    chosen = os.environ.get("HSVLT_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def fake_camera_flags(video: str | Path) -> list[str]:
    """A camera that shows a video file (.y4m or .mjpeg) and is granted without asking."""
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}"]


class Chromium:
    """One headless Chromium process; `open` gives a Page. Close it (or use `with`) to end the process and remove
    its profile."""

    def __init__(self, flags: list[str] | tuple[str, ...] = (), executable: str | None = None,
                 window: tuple[int, int] = (1280, 900), timeout_s: float = 60.0):
        executable = executable or find_chromium()
        if executable is None:
            raise BrowserError("chromium: not found (apt-get install chromium, or set HSVLT_CHROMIUM)")
        self.timeout_s = timeout_s
        self.profile = tempfile.mkdtemp(prefix="hsvlt_chromium_")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        command = [executable, *OFFLINE_FLAGS, *flags, f"--user-data-dir={self.profile}",
                   f"--window-size={window[0]},{window[1]}", "--remote-debugging-pipe", "about:blank"]

        # Chromium reads the protocol from descriptor 3 and writes to 4: bash puts the pipe's ends there (Python's
        # subprocess cannot place a descriptor at a chosen number without a preexec hook, unsafe beside threads).
        placed = (f'exec "$0" "$@" 3<&{to_browser_read} 4>&{from_browser_write} '
                  f'{to_browser_read}<&- {from_browser_write}>&-')
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(["bash", "-c", placed, *command], stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=self.log, pass_fds=(to_browser_read, from_browser_write))
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._ids = itertools.count(1)
        self._replies: dict[int, dict] = {}
        self._listeners: list = []
        self._condition = threading.Condition()
        self._send_lock = threading.Lock()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.version = self.send("Browser.getVersion")["product"]
        except BrowserError:
            self.close()
            raise

    # ---- the protocol --------------------------------------------------------------------------------------

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._condition:
                        self._replies[message["id"]] = message
                        self._condition.notify_all()
                else:
                    for listener in list(self._listeners):
                        listener(message)
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def post(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        """Send a command without waiting for its reply (what an event listener may do); returns its id."""
        number = next(self._ids)
        message = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        with self._send_lock:
            try:
                os.write(self._to_browser, data)
            except OSError as error:
                raise BrowserError(f"chromium: the browser went away ({error.strerror}){self._tail()}") from None
        return number

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout_s: float | None = None) -> dict:
        """Send a command and wait for its result; a protocol error raises BrowserError."""
        number = self.post(method, params, session)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        with self._condition:
            while number not in self._replies:
                if self._closed:
                    raise BrowserError(f"chromium: the browser went away during {method}{self._tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"chromium: {method} had no answer in {timeout_s or self.timeout_s:.0f} s")
                self._condition.wait(left)
            reply = self._replies.pop(number)
        if "error" in reply:
            raise BrowserError(f"chromium: {method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def _tail(self) -> str:
        try:
            self.log.seek(0)
            lines = self.log.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        return f" ({lines[-1][:300]})" if lines else ""

    # ---- pages ---------------------------------------------------------------------------------------------

    def open(self, url: str, width: int = 1280, height: int = 900) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.start(width, height)
        page.navigate(url)
        return page

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("Browser.close", timeout_s=5)
            except BrowserError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for descriptor in (self._to_browser, self._from_browser):
            try:
                os.close(descriptor)
            except OSError:
                pass
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    """A tab: evaluate scripts, set files on inputs, capture screenshots; `requests` lists every URL it (and
    any worker it started) requested, `console` every console message."""

    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session
        self.requests: list[str] = []
        self.console: list[str] = []
        self._sessions = {session}
        self._loaded = threading.Event()
        browser._listeners.append(self._event)

    def _event(self, message: dict) -> None:
        if message.get("sessionId") not in self._sessions:
            return
        method, params = message["method"], message.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Target.attachedToTarget":  # a worker: watch its requests too, then let it run
            child = params["sessionId"]
            self._sessions.add(child)
            self.browser.post("Network.enable", session=child)
            self.browser.post("Runtime.runIfWaitingForDebugger", session=child)

    def send(self, method: str, params: dict | None = None, timeout_s: float | None = None) -> dict:
        return self.browser.send(method, params, self.session, timeout_s)

    def start(self, width: int, height: int) -> None:
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable")
        self.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True})
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})

    def navigate(self, url: str) -> None:
        self._loaded.clear()
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        if not self._loaded.wait(self.browser.timeout_s):
            raise BrowserError(f"{url}: the page did not load in {self.browser.timeout_s:.0f} s")

    def evaluate(self, expression: str, timeout_s: float | None = None):
        """The value of a JavaScript expression (a promise is awaited); an exception in the page raises
        BrowserError with its message."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout_s)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"page script failed: {text}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60.0, interval_s: float = 0.1):
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"page: {expression} still false after {timeout_s:.0f} s")
            time.sleep(interval_s)

    def set_files(self, selector: str, paths: list[str | Path]) -> None:
        """Choose files in an <input type=file>, as the user does (its change event fires)."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise BrowserError(f"page: no element {selector}")
        self.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(Path(p).resolve()) for p in paths]})

    def screenshot(self) -> bytes:
        """PNG of the whole page."""
        metrics = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})
        return base64.b64decode(data["data"])
