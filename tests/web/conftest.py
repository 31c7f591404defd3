"""What the web demo's tests share: the demo server on a free port, in this process."""

import contextlib
import os
import shutil
import threading
from pathlib import Path

import pytest

from hsvlt.deploy.chromium import find_chromium
from hsvlt.deploy.web import ORT_FILES, WebConfig, make_server

REPO = Path(__file__).resolve().parents[2]
ORT_DIST = REPO / "node_modules" / "onnxruntime-web" / "dist"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> None:
    """Skip a test that needs something not installed here; in CI (CI=true) fail instead, so that a test that
    should have run cannot pass by not running."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: this test must run)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def web_model(models, tmp_path_factory) -> Path:
    """The session's tiny ONNX model (hsvlt_pico, 64 px, attention of stage 1), alone in a folder with its
    manifest."""
    folder = tmp_path_factory.mktemp("web_model")
    for name in ("model.onnx", "model.onnx.json"):
        shutil.copy(models["onnx"].parent / name, folder / name)
    return folder / "model.onnx"


@pytest.fixture(scope="session")
def ort_dist() -> Path:
    if not all((ORT_DIST / name).is_file() for name in ORT_FILES):
        missing(f"onnxruntime-web is not installed in {ORT_DIST.parent}: run `npm ci`")
    return ORT_DIST


@pytest.fixture(scope="session")
def chromium_installed() -> str:
    path = find_chromium()
    if path is None:
        missing("chromium is not installed (apt-get install chromium)")
    return path


class Log(list):
    """The server's log lines, as the tests read them."""

    def __call__(self, line: str) -> None:
        self.append(line)

    def text(self) -> str:
        return "\n".join(self)


@pytest.fixture(scope="session")
def serve():
    """serve(model, ort_dist=None): the demo server in a thread, a context manager yielding (server, log)."""
    return serving


@contextlib.contextmanager
def serving(model: Path, ort_dist: Path | None = None, host: str = "127.0.0.1"):
    """The demo server for `model` on a free port, in a thread; yields (server, log)."""
    log = Log()
    server = make_server(WebConfig(model=model, host=host, port=0, ort_dist=ort_dist), log)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, log
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
