"""Imports run one way (docs/DESIGN.md section 6): every import of the tree, at any depth of a module, parsed and
held against the layer rules."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hsvlt", "quant", "export", "edge_demo", "reports")


def project_imports(path: Path) -> set[str]:
    """The project modules `path` imports, as dotted names (`from hsvlt.deploy import x` -> hsvlt.deploy)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def modules() -> dict[str, set[str]]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            dotted = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[dotted] = project_imports(path)
    return found


def within(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


# (what the rule says, the modules it applies to, the imports they may not make)
RULES = [
    ("the library imports no tool built on it",
     lambda module: within(module, "hsvlt") and module != "hsvlt.command",
     lambda imported: within(imported, "quant", "export", "edge_demo", "reports")),
    ("the models import nothing else of the project",
     lambda module: within(module, "hsvlt.models") and module != "hsvlt.models.pretrained",
     lambda imported: not within(imported, "hsvlt.models")),
    ("the foundations import nothing of the project",
     lambda module: module in ("hsvlt.images", "hsvlt.outputs", "hsvlt.cli", "hsvlt.toolchain",
                               "hsvlt.deploy.preprocess", "hsvlt.labels.names"),
     lambda imported: True),
    ("the label sets do not depend on the datasets",
     lambda module: within(module, "hsvlt.labels"),
     lambda imported: within(imported, "hsvlt.data")),
    ("the demo stands on the library alone",
     lambda module: within(module, "edge_demo"),
     lambda imported: within(imported, "quant", "export", "reports")),
    ("quantisation does not import the exporters",
     lambda module: within(module, "quant"),
     lambda imported: within(imported, "export", "edge_demo", "reports")),
    ("export scripts share code through export.common, not each other",
     lambda module: within(module, "export") and module != "export.common",
     lambda imported: within(imported, "export", "reports") and imported not in ("export", "export.common")),
    # The report generators that write docs/ run the tools end to end (train, quantise, export, measure): nothing
    # but the `hsvlt` command stands on them.
    ("nothing but the hsvlt command imports a report generator",
     lambda module: not within(module, "reports") and module != "hsvlt.command",
     lambda imported: within(imported, "reports")),
]


@pytest.mark.parametrize("rule, applies, forbidden", RULES, ids=[rule[0] for rule in RULES])
def test_imports_run_one_way(rule, applies, forbidden):
    broken = [f"{module} imports {imported}" for module, imports in modules().items() if applies(module)
              for imported in sorted(imports) if forbidden(imported)]
    assert not broken, f"{rule}: " + "; ".join(broken)


def test_the_rules_see_real_imports():
    found = modules()
    assert "hsvlt.deploy.runtimes" in found["hsvlt.api"]
    assert "hsvlt.checkpoint" in found["export.common"]
    assert "hsvlt.labels" in found["hsvlt.data.registry"]  # imported inside a function
    assert "reports.measure" in found["reports.export_bench"]
