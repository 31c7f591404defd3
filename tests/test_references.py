"""Every project name and path that the user-facing text cites resolves: docs/*.md, README.md and the iOS code
and its README (edge_demo/ios/). A renamed function or a moved file otherwise leaves the text pointing at
nothing, and nothing else would notice (the Swift sources cannot even be built here).

What is checked, and what counts as resolving:
- In Swift, only the comments are read: its string literals are identifiers (a dispatch queue's label), not
  citations.
- A dotted name that starts with one of the project's packages (`hsvlt.preprocess.prepare_image`,
  `python -m hsvlt.train`): its longest importable prefix is imported and the rest is looked up attribute by
  attribute.
- A path from the repository root that starts with one of the project's folders (`docs/DESIGN.md`,
  `hsvlt/models/ivla.py`, `reports/`; a `*` matches as in a shell glob): it exists. A path after `/` or `~`
  (`runs/hsvlt/best.pt`, `~/data/coco`) is a user's file, not the project's, and is not checked.
- A relative Markdown link or image (`[x](EXPORT.png)`): it exists beside the page that links it.
- A generated page (docs/X.md) that has not been generated yet in this checkout resolves only where the same
  paragraph names the script that writes it, a file under reports/ or scripts/ that exists and whose text names
  that page: the reader then knows it comes from running the script, and the test still fails when the script
  is renamed, removed or no longer writes the page.
"""

import glob
import importlib
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hsvlt", "export", "quant", "reports", "edge_demo")
FOLDERS = ("hsvlt", "docs", "export", "quant", "reports", "edge_demo", "scripts", "tests", ".ci")
GENERATORS = ("reports", "scripts")

DOTTED_NAME = re.compile(rf"(?<![\w./~-])(?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(rf"(?<![\w./~-])(?:{'|'.join(re.escape(f) for f in FOLDERS)})/[\w./*-]*")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
GENERATED_PAGE = re.compile(r"docs/[\w-]+\.md")


def cited_text() -> list[Path]:
    """The files whose citations are checked."""
    files = sorted(ROOT.glob("docs/*.md")) + [ROOT / "README.md"]
    files += sorted(p for p in (ROOT / "edge_demo" / "ios").rglob("*") if p.suffix in (".md", ".swift"))
    return files


def paragraphs(path: Path) -> list[tuple[int, str]]:
    """(first line number, text) of each paragraph (lines between blank lines)."""
    found, lines, start = [], [], 1
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
        elif lines:
            found.append((start, "\n".join(lines)))
            lines = []
    if lines:
        found.append((start, "\n".join(lines)))
    return found


def citations() -> list[tuple[str, str, str, str]]:
    """(kind, cited name, "file:line", its paragraph) of every citation."""
    found = []
    for path in cited_text():
        where = path.relative_to(ROOT)
        for start, text in paragraphs(path):
            for line_offset, line in enumerate(text.splitlines()):
                place = f"{where}:{start + line_offset}"
                if path.suffix == ".swift":  # its comments cite; its strings are identifiers ("hsvlt.camera")
                    line = line.partition("//")[2]
                found += [("name", m.group(0), place, text) for m in DOTTED_NAME.finditer(line)]
                found += [("path", m.group(0).rstrip(".,:;"), place, text) for m in PATH.finditer(line)]
                if path.suffix == ".md":
                    found += [("link", os.path.normpath(where.parent / m.group(1)), place, text)
                              for m in MARKDOWN_LINK.finditer(line)
                              if not re.match(r"[a-z]+:|#", m.group(1))]
    return found


def resolve_name(dotted: str) -> None:
    """Import the longest importable prefix of `dotted` and look the rest up; raises where it does not resolve."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            value = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is None or not module_name.startswith(error.name):
                raise  # the module exists but imports something missing: a real failure
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)
        return
    raise ModuleNotFoundError(parts[0])


def written_by_named_script(page: str, paragraph: str) -> bool:
    """Whether `paragraph` names a script under reports/ or scripts/ that exists and writes `page`."""
    for cited in PATH.findall(paragraph):
        script = ROOT / cited.rstrip(".,:;")
        if (cited.startswith(GENERATORS) and script.suffix in (".py", ".sh") and script.is_file()
                and page in script.read_text(encoding="utf-8")):
            return True
    return False


def path_exists(cited: str, paragraph: str) -> bool:
    if glob.glob(str(ROOT / cited)):
        return True
    return bool(GENERATED_PAGE.fullmatch(cited)) and written_by_named_script(cited, paragraph)


def test_the_scan_finds_what_the_text_cites():
    """The patterns still find the citations (a pattern that matched nothing would pass everything)."""
    found = {(kind, name) for kind, name, _, _ in citations()}
    assert ("name", "hsvlt.preprocess.prepare_image") in found  # edge_demo/ios
    assert ("path", "hsvlt/models/ivla.py") in found  # README.md
    assert ("path", "docs/DESIGN.md") in found
    assert ("link", "docs/EXPORT.png") in found  # docs/EXPORT.md links it beside itself
    assert not any(name.startswith("hsvlt/best") for _, name in found)  # runs/hsvlt/best.pt is the user's


def test_every_cited_name_resolves():
    broken = []
    for kind, name, place, _ in citations():
        if kind != "name":
            continue
        try:
            resolve_name(name)
        except (ImportError, AttributeError) as error:
            broken.append(f"{place}: {name} ({type(error).__name__}: {error})")
    assert not broken, "cited names that do not resolve:\n" + "\n".join(broken)


def test_every_cited_path_exists():
    broken = [f"{place}: {name}" for kind, name, place, paragraph in citations()
              if kind in ("path", "link") and not path_exists(name, paragraph)]
    assert not broken, "cited paths that do not exist (nor are written by a script named beside them):\n" + \
        "\n".join(broken)


def test_an_ungenerated_page_needs_its_script_named_beside_it():
    """The rule for pages not generated yet, on sentences made up for the purpose."""
    page = "docs/GPU.md"  # scripts/gpu_throughput.py writes it, reports/export_bench.py does not
    assert written_by_named_script(page, f"{page}, written by scripts/gpu_throughput.py on a GPU")
    assert not written_by_named_script(page, f"{page}, written on a GPU")  # no script named
    assert not written_by_named_script(page, f"{page}, written by reports/export_bench.py")
    assert not written_by_named_script(page, f"{page}, written by scripts/no_such_script.py")
    assert not path_exists("docs/NOWHERE.md", "docs/NOWHERE.md, written by scripts/gpu_throughput.py")


@pytest.mark.parametrize("module, old, new", [
    ("hsvlt.evaluate", "uses_bf16", "uses_reduced_precision"),
    ("hsvlt.deploy.wrapper", "DeployableHSVLT", "AsTrainedHSVLT"),
    ("hsvlt.models.hsvlt", "ExportHSVLT", "RewrittenHSVLT"),
])
def test_renamed_names_keep_their_earlier_name(module, old, new):
    """Code written against an earlier name keeps working."""
    imported = importlib.import_module(module)
    assert getattr(imported, old) is getattr(imported, new)
