"""The web demo: an exported ONNX model in a web page, run on the visitor's own device by ONNX Runtime Web.

    hsvlt demo --web --model model.onnx                      # http://127.0.0.1:8000/
    hsvlt demo --web --model model.onnx --host 0.0.0.0 --port 8080

The server sends a static page (hsvlt/deploy/web_page/), the model, its manifest (model.onnx.json) and
onnxruntime-web's files, installed from the npm registry by `npm ci` in the HSVLT repository (package.json pins
the version; nothing comes from a CDN, so the page works offline). The page runs the model with WebAssembly (SIMD,
2 threads; WebGPU where the browser offers it) on a photo or the camera and shows every label's score against its
calibrated threshold.

It serves those files and nothing else: a fixed list of names, each checked to lie inside its folder when it is
sent (a link out of the folder is refused), no directory listing. Every response carries the cross-origin
isolation headers WebAssembly threads need (COOP / COEP) and a content security policy that lets the page reach
this server alone. Browsers grant the camera only to pages on localhost or https; a photo works from anywhere.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from hsvlt.cli import UsageError, int_between, program, run_command
from hsvlt.deploy.manifest import manifest_path, read_manifest

ORT_WEB_VERSION = "1.31.1"  # package.json pins the same version; tests/web checks that they agree
ORT_PACKAGE = Path("node_modules") / "onnxruntime-web"
# The two builds the page loads: WebAssembly alone, and WebGPU with WebAssembly for what WebGPU does not run.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
             "ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
PAGE = Path(__file__).resolve().parent / "web_page"
PAGE_FILES = ("index.html", "demo.mjs", "hsvlt-web.mjs", "style.css")
INSTALL = (f"run `npm ci` in the HSVLT repository, or `npm install onnxruntime-web@{ORT_WEB_VERSION}` in the "
           f"folder you start the demo from, or pass --ort-dist")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
                 ".json": "application/json"}
HEADERS = {
    # Cross-origin isolation: without it the browser gives WebAssembly no shared memory, so no threads.
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    # The page may talk to this server only (and compile WebAssembly, and show the camera and local photos).
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
                               "img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
                               "connect-src 'self' blob: data:; style-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
LOG_BODY_LIMIT = 4096  # bytes of one message from the page


@dataclass
class WebConfig:
    """One run of the web demo, as `hsvlt demo --web` takes it."""

    model: Path
    host: str = "127.0.0.1"
    port: int = 8000
    ort_dist: Path | None = None


def onnx_command(model: Path) -> str:
    return f"hsvlt export onnx --ckpt <checkpoint> --out {model.with_suffix('.onnx').name}"


def check_model(path: Path) -> dict:
    """The model and its manifest, before anything is served: an ONNX file that ONNX Runtime (when installed)
    loads and whose input and outputs agree with the manifest. Returns the manifest."""
    suffix = path.suffix.lower()
    if suffix in (".pte", ".mlpackage"):
        kind = "an ExecuTorch program" if suffix == ".pte" else "a Core ML package"
        raise UsageError(f"{path}: is {kind}; the web demo runs ONNX files: {onnx_command(path)}")
    if suffix != ".onnx":
        raise UsageError(f"{path}: the web demo runs ONNX files (.onnx): {onnx_command(path)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    manifest = read_manifest(path)
    try:
        import onnxruntime  # noqa: F401  (the export extra; without it the page checks the model itself)
    except ImportError:
        return manifest
    from hsvlt.deploy.runtimes import OnnxModel

    OnnxModel(path, threads=1)  # cannot_load, or a manifest of another export: one line naming the file
    return manifest


def ort_dist_places() -> list[Path]:
    """Where onnxruntime-web's dist folder is looked for: node_modules in the current folder, then in the HSVLT
    repository this package lies in (an editable install)."""
    repository = Path(__file__).resolve().parents[2]
    return [Path.cwd() / ORT_PACKAGE / "dist", repository / ORT_PACKAGE / "dist"]


def find_ort_dist(chosen: Path | None, places: list[Path] | None = None) -> Path:
    """onnxruntime-web's dist folder, with every file the page loads: --ort-dist, else the first of `places`
    (default ort_dist_places) that has them."""
    candidates = [chosen] if chosen is not None else (places if places is not None else ort_dist_places())
    for folder in candidates:
        if all((folder / name).is_file() for name in ORT_FILES):
            check_ort_version(folder)
            return folder.resolve()
    if chosen is not None:
        missing = [name for name in ORT_FILES if not (chosen / name).is_file()]
        raise FileNotFoundError(f"--ort-dist {chosen}: lacks {', '.join(missing)} (onnxruntime-web "
                                f"{ORT_WEB_VERSION}'s dist folder); {INSTALL}")
    looked = " and ".join(str(folder) for folder in dict.fromkeys(candidates))
    raise FileNotFoundError(f"onnxruntime-web: its files are not installed (looked in {looked}); {INSTALL}")


def check_ort_version(dist: Path) -> None:
    """The page is written and tested against one onnxruntime-web release: another is refused, by name."""
    package = dist.parent / "package.json"
    try:
        version = json.loads(package.read_text()).get("version")
    except (OSError, ValueError):
        return  # a dist folder copied on its own: the files are there, the version cannot be read
    if version != ORT_WEB_VERSION:
        raise ValueError(f"{package}: onnxruntime-web {version}, the demo needs {ORT_WEB_VERSION}; {INSTALL}")


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, every link followed, lies in `folder` (itself resolved)."""
    try:
        return path.resolve(strict=True).is_relative_to(folder)
    except (OSError, RuntimeError):  # missing, or a loop of links
        return False


class DemoServer(ThreadingHTTPServer):
    """The demo's HTTP server: `routes` maps each URL path it answers to (file, folder the file must lie in)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, config: WebConfig, manifest: dict, ort_dist: Path, log=None):
        self.log = log if log is not None else (lambda line: print(line, file=sys.stderr, flush=True))
        model = config.model.resolve()
        self.routes: dict[str, tuple[Path, Path]] = {"/": (PAGE / "index.html", PAGE)}
        self.routes.update({f"/{name}": (PAGE / name, PAGE) for name in PAGE_FILES if name != "index.html"})
        self.routes.update({f"/ort/{name}": (ort_dist / name, ort_dist) for name in ORT_FILES})
        self.routes["/model.onnx"] = (model, model.parent)
        for url, (path, folder) in self.routes.items():
            if not inside(path, folder):
                raise ValueError(f"{path}: is a link out of {folder}; the demo serves only its own files")
        self.info = json.dumps({"name": config.model.name, "bytes": model.stat().st_size,
                                "manifest_name": manifest_path(config.model).name, "manifest": manifest,
                                "ort_web": ORT_WEB_VERSION}).encode()
        super().__init__((config.host, config.port), DemoHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer
    server_version = "hsvlt-web"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the base class's name)
        pass  # every request would drown the page's messages; refusals are logged where they happen

    def send_headers(self, status: int, content_type: str, length: int) -> None:
        self.send_response(status)
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def refuse(self, status: HTTPStatus, why: str) -> None:
        self.server.log(f"refused {self.command} {self.path[:200]!r}: {why}")
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_headers(status, "text/plain; charset=utf-8", len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def answer(self, body: bytes, content_type: str) -> None:
        self.send_headers(HTTPStatus.OK, content_type, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        # The path is compared as sent, never decoded or joined to a folder: "..", "%2e%2e" and any other
        # spelling of a path outside the list name nothing.
        path = urlsplit(self.path).path
        if path == "/model.json":
            return self.answer(self.server.info, CONTENT_TYPES[".json"])
        route = self.server.routes.get(path)
        if route is None:
            return self.refuse(HTTPStatus.NOT_FOUND, "not a file of the demo")
        file, folder = route
        if not inside(file, folder):
            return self.refuse(HTTPStatus.NOT_FOUND, f"{file} is missing or a link out of {folder}")
        try:
            body = file.read_bytes()
        except OSError as error:
            return self.refuse(HTTPStatus.NOT_FOUND, f"{file}: {error.strerror or error}")
        self.answer(body, CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream"))

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        """/log: a message the page shows its visitor (a photo it cannot decode, a refused camera), written to
        the server's log as one line."""
        if urlsplit(self.path).path != "/log":
            return self.refuse(HTTPStatus.METHOD_NOT_ALLOWED, "only /log takes POST")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= LOG_BODY_LIMIT:
            return self.refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a log message of {length} bytes")
        try:
            message = json.loads(self.rfile.read(length))
            level, text = str(message["level"]), str(message["message"])
        except (ValueError, KeyError, TypeError):
            return self.refuse(HTTPStatus.BAD_REQUEST, "not a log message")
        # One line, printable: a visitor's text must not forge lines of the log.
        text = "".join(character if character.isprintable() else " " for character in text)[:500]
        self.server.log(f"page: {'error: ' if level == 'error' else ''}{text}")
        self.answer(b"{}", CONTENT_TYPES[".json"])

    def do_OTHER(self) -> None:  # noqa: N802
        self.refuse(HTTPStatus.METHOD_NOT_ALLOWED, "the demo's files are read-only")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_OTHER  # noqa: N815


def make_server(config: WebConfig, log=None) -> DemoServer:
    """Check the model, its manifest and onnxruntime-web's files, then bind (port 0: a free port)."""
    manifest = check_model(config.model)
    ort_dist = find_ort_dist(config.ort_dist)
    try:
        return DemoServer(config, manifest, ort_dist, log)
    except OSError as error:
        raise OSError(error.errno, error.strerror, f"--host {config.host} --port {config.port}") from None


def run(config: WebConfig) -> None:
    """Serve until Ctrl-C."""
    server = make_server(config)
    manifest = json.loads(server.info)["manifest"]
    print(f"serving {config.model.name} ({manifest['preset']}, {len(manifest['labels'])} labels, "
          f"{manifest['input']['shape'][-1]} px) at {server.url}  (Ctrl-C stops)", flush=True)
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        print("browsers grant the camera only on localhost or https: from other machines, choose a photo",
              flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()


def parse_args(argv=None) -> WebConfig:
    defaults = WebConfig(model=Path())
    parser = argparse.ArgumentParser(prog=program("hsvlt demo --web"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path,
                        help="model.onnx (hsvlt export onnx), with its manifest model.onnx.json beside it")
    parser.add_argument("--host", default=defaults.host,
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    parser.add_argument("--port", type=int_between(0, 65535), default=defaults.port,
                        help="port (default 8000; 0: any free port)")
    parser.add_argument("--ort-dist", type=Path,
                        help=f"onnxruntime-web {ORT_WEB_VERSION}'s dist folder (default: node_modules here or in "
                             f"the HSVLT repository)")
    return WebConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> None:
    run_command(run, parse_args(argv))
