"""The golden tensors the page's JavaScript is tested against (tests/web/golden/, read by
tests/web/hsvlt-web.test.mjs under `node --test`) are what Python's preprocessing makes today: a change to
hsvlt.images or hsvlt.preprocess that the page does not follow fails here, until make_golden.py is rerun
and the node tests say whether the page still agrees."""

import base64
import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def unpacked(value):
    """The JSON with every packed array (gzip, base64) replaced by its raw bytes: compression may differ between
    zlib builds, the arrays may not."""
    if isinstance(value, dict):
        return {key: unpacked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unpacked(item) for item in value]
    if isinstance(value, str) and value.startswith("H4sI"):  # gzip's magic number in base64
        return gzip.decompress(base64.b64decode(value))
    return value


def test_the_golden_tensors_are_what_python_makes_today(tmp_path):
    import make_golden

    make_golden.write(tmp_path)
    committed = sorted(path.name for path in (HERE / "golden").iterdir())
    assert committed == sorted(path.name for path in tmp_path.iterdir())
    for name in committed:
        fresh, kept = (json.loads(path.read_text()) for path in (tmp_path / name, HERE / "golden" / name))
        assert unpacked(fresh) == unpacked(kept), f"{name}: rerun python tests/web/make_golden.py"


def test_the_page_module_passes_its_node_tests():
    """The node tests themselves, where node is installed (CI runs them with `node --test` as well)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run([node, "--test", str(HERE / "hsvlt-web.test.mjs")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "# fail 0" in result.stdout
