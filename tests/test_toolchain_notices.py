"""The toolchain's notices are hidden only while the toolchain runs (hsvlt.toolchain.quiet_toolchain_calls):
importing the project changes no warning filter and no logger level, the known notices are hidden inside a
toolchain call and nothing else is, and an export shows none of them. Each check runs in a fresh interpreter,
where the libraries' import-time notices come again."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hsvlt", "export", "quant", "reports", "edge_demo")


def run_python(code: str, *flags: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=600, check=False)


IMPORT_EVERYTHING = f"""
import ast, importlib, json, logging, pkgutil, sys, warnings
from pathlib import Path

root, packages = Path({str(ROOT)!r}), {PACKAGES!r}
# The libraries the project imports add warning filters of their own on import (torch does): import them
# first, so that what is compared is what the project's own modules do.
for path in [p for package in packages for p in (root / package).rglob("*.py")]:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        for name in names:
            if name.split(".")[0] not in packages:
                try:
                    importlib.import_module(name)
                except ImportError:
                    pass
filters = list(warnings.filters)
loggers = {{name: logger.level for name, logger in logging.root.manager.loggerDict.items()
           if isinstance(logger, logging.Logger)}}
imported = []
for package in packages:
    imported.append(package)
    importlib.import_module(package)
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
changed = [name for name, level in loggers.items() if logging.getLogger(name).level != level]
changed += [name for name, logger in logging.root.manager.loggerDict.items()
            if name not in loggers and isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
            and name.split(".")[0] in packages]
print(json.dumps({{"imported": imported, "filters_added": [repr(f) for f in warnings.filters if f not in filters],
                  "filters_removed": [repr(f) for f in filters if f not in warnings.filters],
                  "loggers_changed": changed}}))
"""


def test_importing_the_project_changes_no_warning_filter_or_logger_level():
    result = run_python(IMPORT_EVERYTHING)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"hsvlt.toolchain", "hsvlt.export.to_executorch", "hsvlt.quant.qat", "hsvlt.deploy.camera",
            "hsvlt.bench.export_bench"} <= set(found["imported"])
    assert found["filters_added"] == [] and found["filters_removed"] == []
    assert found["loggers_changed"] == []


# ExecuTorch's Python runtime calls itself experimental on import (a warning); coremltools logs, at WARNING,
# the macOS-only parts it lacks here and the versions it was not tested with.
TOOLCHAIN_IMPORTS = """
import logging, warnings
records = []
logging.basicConfig(level=logging.WARNING, handlers=[type("H", (logging.Handler,), {
    "emit": lambda self, record: records.append(record.name)})()])
warnings.simplefilter("default")
with warnings.catch_warnings(record=True) as shown:
    warnings.simplefilter("default")
    before = list(warnings.filters)
    with QUIET:
        from executorch.runtime import Runtime
        import coremltools
        warnings.warn("the caller's own warning", UserWarning)
    after = list(warnings.filters)
    warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated (the caller's, outside)", FutureWarning)
import json
print(json.dumps({"shown": [str(w.message) for w in shown], "logged": sorted(set(records)),
                  "filters_kept": before == after}))
"""


def toolchain_imports(quiet: bool) -> dict:
    quiet_block = ("__import__('hsvlt.toolchain').toolchain.quiet_toolchain_calls()" if quiet
                   else "__import__('contextlib').nullcontext()")
    result = run_python(TOOLCHAIN_IMPORTS.replace("QUIET", quiet_block))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_toolchain_call_hides_the_known_notices_and_nothing_else():
    quiet = toolchain_imports(quiet=True)
    assert quiet["shown"] == ["the caller's own warning",
                              "`isinstance(treespec, LeafSpec)` is deprecated (the caller's, outside)"]
    assert not any(name.startswith(("coremltools", "executorch", "torchao")) for name in quiet["logged"])
    assert quiet["filters_kept"]


def test_the_hidden_notices_are_real():
    """Without quiet_toolchain_calls the same imports show the notices it hides (a filter for a notice the
    toolchain no longer gives is dead: drop it from hsvlt.toolchain)."""
    loud = toolchain_imports(quiet=False)
    assert any("experimental" in message for message in loud["shown"])
    assert any(name.startswith("coremltools") for name in loud["logged"])


EXPORT_EVERY_KIND = f"""
import logging, sys, warnings
sys.path.insert(0, {str(ROOT / "tests")!r})
logging.basicConfig(level=logging.WARNING, format="LOGGED %(name)s: %(message)s")
warnings.simplefilter("default")
with warnings.catch_warnings(record=True) as shown:
    warnings.simplefilter("default")
    from conftest import make_checkpoint
    from hsvlt.export import to_coreml, to_executorch, to_onnx
    folder = sys.argv[1]
    checkpoint = str(make_checkpoint(folder + "/best.pt", img_size=32))
    to_executorch.main(["--ckpt", checkpoint, "--out", folder + "/model.pte", "--parity-images", "2"])
    to_onnx.main(["--ckpt", checkpoint, "--out", folder + "/model.onnx", "--parity-images", "2"])
    to_coreml.main(["--ckpt", checkpoint, "--out", folder + "/model.mlpackage", "--parity-images", "0"])
for warning in shown:
    print(f"SHOWN {{warning.category.__name__}} {{warning.filename}}:{{warning.lineno}} {{warning.message}}",
          file=sys.stderr)
"""
# What reaches standard error as a notice: a warning, a record logged through the root logger, or a line of
# torch's own log format (W1203 15:20:35.844000 ... file.py:107] ...). Progress bars are not notices.
NOTICE = re.compile(r"^(SHOWN |LOGGED |[WE]\d{4} \d\d:\d\d:\d\d)")


def test_exports_show_no_toolchain_notice(tmp_path):
    """An .pte, an .onnx and an .mlpackage exported from scratch in a fresh interpreter, every warning shown
    (-W default, as a developer runs) and every WARNING logged: none reaches standard error."""
    result = subprocess.run([sys.executable, "-W", "default", "-c", EXPORT_EVERY_KIND, str(tmp_path)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    notices = [line for line in result.stderr.splitlines() if NOTICE.match(line)]
    assert notices == []
    assert (tmp_path / "model.pte").is_file() and (tmp_path / "model.onnx").is_file()
    assert (tmp_path / "model.mlpackage").is_dir()
