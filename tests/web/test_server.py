"""The web demo's server (hsvlt/deploy/web.py): what it serves and with which headers, what it refuses (paths
outside its files, links out of its folders, other methods), its one-line errors, and the command line."""

import http.client
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hsvlt.deploy import web

REPO = Path(__file__).resolve().parents[2]
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


def request(server, path: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    """One raw HTTP request: the path is sent exactly as written (no client-side normalisation)."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {**(headers or {}), "Content-Length": str(len(body or b""))}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_serves_the_page_the_model_and_the_runtime_isolated(web_model, ort_dist, serve):
    with serve(web_model) as (server, log):
        for path, kind in (("/", "text/html"), ("/demo.mjs", "text/javascript"),
                           ("/hsvlt-web.mjs", "text/javascript"), ("/style.css", "text/css"),
                           ("/ort/ort.wasm.min.mjs", "text/javascript"),
                           ("/ort/ort-wasm-simd-threaded.wasm", "application/wasm"),
                           ("/model.onnx", "application/octet-stream"), ("/model.json", "application/json")):
            status, headers, body = request(server, path)
            assert status == 200, path
            assert headers["Content-Type"].startswith(kind), path
            assert int(headers["Content-Length"]) == len(body) > 0
            assert {name: headers[name] for name in ISOLATION} == ISOLATION, path
            assert "connect-src 'self'" in headers["Content-Security-Policy"]
        assert request(server, "/model.onnx")[2] == web_model.read_bytes()
        assert request(server, "/ort/ort-wasm-simd-threaded.wasm")[2][:4] == b"\0asm"
        info = json.loads(request(server, "/model.json")[2])
        assert info["manifest"] == json.loads(web_model.with_name("model.onnx.json").read_text())
        assert (info["name"], info["bytes"], info["manifest_name"]) == ("model.onnx", web_model.stat().st_size,
                                                                      "model.onnx.json")
        status, headers, body = request(server, "/", "HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert log == []


@pytest.mark.parametrize("path", [
    "/..", "/../pyproject.toml", "/%2e%2e/%2e%2e/etc/passwd", "/%2E%2E%2Fpyproject.toml", "/ort/../../../etc/passwd",
    "/ort/%2e%2e/package.json", "/ort/", "/ort", "/web_page/", "/hsvlt/deploy/web.py", "//etc/passwd",
    "/index.html/..", "/model.onnx.json", "/ort/ort.wasm.min.mjs.map", "/.git/config", "/demo.mjs%00.html",
    "/ort/..%2fort.wasm.min.mjs", "/.%2e/.%2e/etc/hostname",
])
def test_nothing_outside_the_demos_own_files(web_model, ort_dist, serve, path):
    with serve(web_model) as (server, log):
        status, headers, body = request(server, path)
        assert status == 404
        assert body == b"404 Not Found\n"  # no listing, no file content
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert log.text().startswith("refused GET")


def test_other_methods_are_refused(web_model, ort_dist, serve):
    with serve(web_model) as (server, _):
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
            assert request(server, "/model.onnx", method, b"x")[0] == 405
        assert request(server, "/model.onnx", "POST", b"{}")[0] == 405
        assert request(server, "/model.onnx")[2] == web_model.read_bytes()


def test_a_link_out_of_the_folder_is_refused(web_model, ort_dist, serve, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    model = folder / "model.onnx"
    shutil.copy(web_model, model)
    shutil.copy(web_model.with_name("model.onnx.json"), folder / "model.onnx.json")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")
    with serve(model) as (server, log):
        assert request(server, "/model.onnx")[0] == 200
        model.unlink()
        model.symlink_to(secret)  # swapped for a link out of the folder while serving
        status, _, body = request(server, "/model.onnx")
        assert status == 404 and b"not for the page" not in body
        assert "link out of" in log.text()
    # onnxruntime-web's folder made of links to files elsewhere: refused before anything is served
    linked = tmp_path / "dist"
    linked.mkdir()
    for name in web.ORT_FILES:
        (linked / name).symlink_to(ort_dist / name)
    with pytest.raises(ValueError, match=r"ort\.wasm\.min\.mjs: is a link out of .*dist; the demo serves only"):
        web.make_server(web.WebConfig(model=web_model, port=0, ort_dist=linked))


def test_page_messages_reach_the_server_log_as_one_line(web_model, ort_dist, serve):
    with serve(web_model) as (server, log):
        message = json.dumps({"level": "error", "message": "photo.heic: the browser cannot decode this image"})
        assert request(server, "/log", "POST", message.encode(), {"Content-Type": "application/json"})[0] == 200
        forged = json.dumps({"level": "info", "message": "camera on\nrefused GET '/': forged"})
        assert request(server, "/log", "POST", forged.encode())[0] == 200
        assert request(server, "/log", "POST", b"x" * 5000)[0] == 413
        assert request(server, "/log", "POST", b"not json")[0] == 400
    assert log[0] == "page: error: photo.heic: the browser cannot decode this image"
    assert log[1] == "page: camera on refused GET '/': forged"
    assert all("\n" not in line for line in log)


def hsvlt_command(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hsvlt.command", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("name", ["model.pte", "HSVLT.mlpackage"])
def test_a_pte_or_mlpackage_names_the_onnx_export(tmp_path, name):
    artifact = tmp_path / name
    if name.endswith(".mlpackage"):
        artifact.mkdir()
    else:
        artifact.write_bytes(b"PTE")
    result = hsvlt_command("demo", "--web", "--model", str(artifact))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {artifact}: is ")
    assert "the web demo runs ONNX files: hsvlt export onnx --ckpt <checkpoint> --out" in result.stderr


def web_demo(capsys, *args: str) -> tuple[int, str]:
    """`hsvlt demo --web ARGS` in this process: its exit status and what the user sees on stderr."""
    with pytest.raises(SystemExit) as stopped:
        web.main(list(args))
    code = stopped.value.code
    if isinstance(code, str):  # sys.exit(message): the interpreter prints it to stderr, exit status 1
        return 1, capsys.readouterr().err + code + "\n"
    return code, capsys.readouterr().err


def test_bad_model_files_are_one_line_errors(web_model, ort_dist, tmp_path, capsys):
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("these are notes, not a model")
    shutil.copy(web_model.with_name("model.onnx.json"), tmp_path / "notes.onnx.json")
    other = tmp_path / "other.onnx"
    shutil.copy(web_model, other)
    manifest = json.loads(web_model.with_name("model.onnx.json").read_text())
    manifest["labels"], manifest["thresholds"] = manifest["labels"][:9], manifest["thresholds"][:9]
    for output in manifest["outputs"]:  # a manifest true to itself: its outputs have 9 labels too
        output["shape"][1] = 9
    (tmp_path / "other.onnx.json").write_text(json.dumps(manifest))
    alone = tmp_path / "alone.onnx"
    shutil.copy(web_model, alone)
    for model, message in ((not_onnx, f"error: {not_onnx}: ONNX Runtime cannot load it"),
                           (other, "error: other.onnx.json: lists 9 labels, but other.onnx scores 10"),
                           (alone, f"error: {tmp_path / 'alone.onnx.json'}: manifest not found beside alone.onnx"),
                           (tmp_path / "absent.onnx", f"error: {tmp_path / 'absent.onnx'}: model file not found"),
                           (tmp_path / "model.tflite", f"error: {tmp_path / 'model.tflite'}: the web demo runs ONNX")):
        status, err = web_demo(capsys, "--model", str(model), "--port", "0")
        assert status == (2 if model.suffix == ".tflite" else 1), err
        assert err.startswith(message) and err.count("\n") == 1, err


def test_missing_runtime_files_name_the_install_command(web_model, tmp_path, capsys):
    status, err = web_demo(capsys, "--model", str(web_model), "--port", "0", "--ort-dist", str(tmp_path))
    assert status == 1 and err.count("\n") == 1
    assert err.startswith(f"error: --ort-dist {tmp_path}: lacks ort.wasm.min.mjs, ")
    assert "run `npm ci` in the HSVLT repository" in err
    nowhere = [tmp_path / "node_modules" / "onnxruntime-web" / "dist"]
    expected = (r"^onnxruntime-web: its files are not installed \(looked in .*\); run `npm ci` in the HSVLT "
                r"repository, or `npm install onnxruntime-web@1\.31\.1` in the folder you start the demo from, or "
                r"pass --ort-dist$")
    with pytest.raises(FileNotFoundError, match=expected):
        web.find_ort_dist(None, nowhere)


def test_the_command_serves_until_interrupted(web_model, ort_dist):
    process = subprocess.Popen([sys.executable, "edge_demo/web.py", "--model", str(web_model), "--port", "0"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving model.onnx (hsvlt_pico, 10 labels, 64 px) at http://127.0.0.1:")
        url = line.split(" at ")[1].split()[0]
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and out.strip() == "stopped" and err == ""


def test_the_pinned_runtime_version_agrees_everywhere():
    package = json.loads((REPO / "package.json").read_text())
    lock = json.loads((REPO / "package-lock.json").read_text())
    assert package["dependencies"]["onnxruntime-web"] == web.ORT_WEB_VERSION  # exact, no range
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == web.ORT_WEB_VERSION
    assert "integrity" in lock["packages"]["node_modules/onnxruntime-web"]


def test_the_page_ships_with_the_package():
    """Every file the server sends from the package is package data (a non-editable install has it)."""
    import fnmatch
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hsvlt"]
    for name in web.PAGE_FILES:
        relative = (web.PAGE / name).relative_to(REPO / "hsvlt").as_posix()
        assert (web.PAGE / name).is_file() and any(fnmatch.fnmatch(relative, glob) for glob in globs), relative
