"""Imports run one way (docs/DESIGN.md section 6): every import of the tree, at any depth of a module, parsed and
held against the layer rules."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hsvlt", "quant", "export", "edge_demo", "reports")


def project_imports(path: Path) -> set[str]:
    """The project modules `path` imports, as dotted names; `from hsvlt.deploy import camera` gives hsvlt.deploy and
    hsvlt.deploy.camera (the name may be a module or an attribute: both are held to the rules)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
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


SCRIPT_FOLDERS = ("quant", "export", "edge_demo", "reports")
FOUNDATIONS = ("hsvlt.images", "hsvlt.outputs", "hsvlt.cli", "hsvlt.toolchain", "hsvlt.preprocess",
               "hsvlt.recipes", "hsvlt.labels.names")
SHARED_BY_EXPORTERS = ("hsvlt.export.common", "hsvlt.export.parity")

# (what the rule says, the modules it applies to, the imports they may not make)
RULES = [
    ("the library imports no script",
     lambda module: within(module, "hsvlt"),
     lambda imported: within(imported, *SCRIPT_FOLDERS)),
    ("a script stands on the library alone, not on another script",
     lambda module: within(module, *SCRIPT_FOLDERS),
     lambda imported: within(imported, *SCRIPT_FOLDERS)),
    ("the models import nothing else of the project",
     lambda module: within(module, "hsvlt.models") and module != "hsvlt.models.pretrained",
     lambda imported: not within(imported, "hsvlt.models")),
    # Pretrained weights are read as checkpoints are (hsvlt.checkpoint.load_untrusted, imported where used).
    ("pretrained weights import nothing else of the project but the checkpoint reader",
     lambda module: module == "hsvlt.models.pretrained",
     lambda imported: not within(imported, "hsvlt.models", "hsvlt.checkpoint")),
    ("the foundations import nothing of the project",
     lambda module: module in FOUNDATIONS,
     lambda imported: True),
    ("the label sets do not depend on the datasets",
     lambda module: within(module, "hsvlt.labels"),
     lambda imported: within(imported, "hsvlt.data")),
    ("what a deployed model needs, and the demos, stand below the exporters and the quantiser",
     lambda module: within(module, "hsvlt.deploy"),
     lambda imported: within(imported, "hsvlt.quant", "hsvlt.export", "hsvlt.bench")),
    ("quantisation does not import the exporters",
     lambda module: within(module, "hsvlt.quant"),
     lambda imported: within(imported, "hsvlt.export", "hsvlt.bench")),
    ("exporters share code through hsvlt.export.common and hsvlt.export.parity, not each other",
     lambda module: within(module, "hsvlt.export") and module not in SHARED_BY_EXPORTERS,
     lambda imported: within(imported, "hsvlt.export", "hsvlt.bench")
     and imported != "hsvlt.export" and not within(imported, *SHARED_BY_EXPORTERS)),
    ("the training engine imports none of the commands built on it",
     lambda module: module == "hsvlt.engine",
     lambda imported: within(imported, "hsvlt.train", "hsvlt.quant", "hsvlt.predict", "hsvlt.api", "hsvlt.command")),
    # The measurements run the tools end to end (train, quantise, export, time): nothing of the library but the
    # `hsvlt` command (which names its jobs' modules as text) stands on them.
    ("nothing of the library but the measurements imports them",
     lambda module: within(module, "hsvlt") and not within(module, "hsvlt.bench"),
     lambda imported: within(imported, "hsvlt.bench")),
]


@pytest.mark.parametrize("rule, applies, forbidden", RULES, ids=[rule[0] for rule in RULES])
def test_imports_run_one_way(rule, applies, forbidden):
    broken = [f"{module} imports {imported}" for module, imports in modules().items() if applies(module)
              for imported in sorted(imports) if forbidden(imported)]
    assert not broken, f"{rule}: " + "; ".join(broken)


def test_the_rules_see_real_imports():
    found = modules()
    assert "hsvlt.deploy.runtimes" in found["hsvlt.api"]
    assert "hsvlt.checkpoint" in found["hsvlt.export.to_executorch"]
    assert "hsvlt.labels" in found["hsvlt.data.registry"]  # imported inside a function
    assert "hsvlt.checkpoint" in found["hsvlt.models.pretrained"]  # imported inside a function
    assert "hsvlt.bench.measure" in found["hsvlt.bench.export_bench"]
    assert "hsvlt.export.to_executorch" in found["export.to_executorch"]  # the script's call into the library
