"""Layers depend one way (docs/CONTRACTS.md, "Layers"): every import in the project's modules,
including imports inside functions, is read with ``ast`` and checked against the layer order, and no
module imports or uses another module's private (``_underscore``) name. Pure source reading: no
TensorFlow, so it is fast."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tfmobile", "pipelines", "benchmarks", "android_bench")

# Lowest first; a module may import its own layer or lower ones, never a higher one.
LAYERS = (
    ("tfmobile", "tfmobile.errors", "tfmobile.io", "tfmobile.process"),
    ("tfmobile.models",),
    ("tfmobile.analysis",),
    ("tfmobile.data",),
    ("tfmobile.compress",),
    ("tfmobile.train",),       # Keras training only: below conversion and timing
    ("tfmobile.convert",),
    ("tfmobile.bench",),
    ("tfmobile.evaluation",),
    ("tfmobile.main_job",),
    ("tfmobile.netadapt",),
    ("pipelines", "benchmarks", "android_bench"),
)


def layer_of(module):
    """Index in LAYERS of the longest prefix naming ``module``; None for third-party modules."""
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best_len:
                best, best_len = i, len(name)
    if best == 0 and module not in LAYERS[0] and module.startswith("tfmobile."):
        return None   # a tfmobile module no layer names: test_every_module_has_a_layer says so
    return best


def is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module, path):
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def project_files():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def imports(path, tree):
    """(line, imported module, imported name or None, bound local name) for every import."""
    module = module_name(path)
    package = package_of(module, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, None, a.asname or a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                yield node.lineno, base, a.name, a.asname or a.name


def is_project(module):
    return module.split(".")[0] in PACKAGES


def violations(path, source=None):
    """Upward imports and private-name uses of one file (or of ``source`` placed there)."""
    source = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(source, filename=str(path))
    module = module_name(path)
    mine = layer_of(module)
    rel = path.relative_to(ROOT)
    found = []
    modules_bound = {}   # local name -> project module it names (for ``mod._private`` uses)
    for line, target, name, local in imports(path, tree):
        if not is_project(target):
            continue
        full = f"{target}.{name}" if name else target
        # ``from pkg import sub`` imports module pkg.sub when it exists; judge that, else pkg
        sub_is_module = name is not None and (
            any(full in names for names in LAYERS)
            or (ROOT / pathlib.Path(*full.split("."))).is_dir()
            or (ROOT / pathlib.Path(*full.split("."))).with_suffix(".py").is_file())
        imported = full if sub_is_module else target
        theirs = layer_of(imported)
        if mine is not None and theirs is not None and theirs > mine:
            found.append(f"{rel}:{line}: {module} (layer {mine}) imports {imported} (layer {theirs})")
        if name and is_private(name) and not sub_is_module:   # private to its module
            found.append(f"{rel}:{line}: {module} imports private name {target}.{name}")
        parts = imported.split(".")
        for i, part in enumerate(parts):   # a private module is private to its layer
            if is_private(part) and layer_of(".".join(parts[:i])) != mine:
                found.append(f"{rel}:{line}: {module} imports private module {imported}")
                break
        if name is None:
            modules_bound[local] = target.split(".")[0] if local == target.split(".")[0] else target
        elif sub_is_module:
            modules_bound[local] = full
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in modules_bound:
                owner = ".".join([modules_bound[value.id]] + chain[:-1])
                if owner != module:
                    found.append(f"{rel}:{node.lineno}: {module} uses private name {owner}.{node.attr}")
    return found


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for p in project_files() if layer_of(module_name(p)) is None]
    assert unplaced == [], f"add these modules to LAYERS (and docs/CONTRACTS.md): {unplaced}"


def test_imports_go_down_and_names_stay_private():
    found = [v for p in project_files() for v in violations(p)]
    assert found == [], "layering violations:\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("from tfmobile import evaluation\n", "imports tfmobile.evaluation (layer 8)"),
    ("def f():\n    from tfmobile.bench import graph\n", "imports tfmobile.bench.graph (layer 7)"),
    ("import tfmobile.main_job\n", "imports tfmobile.main_job (layer 9)"),
    ("from tfmobile.convert.verification import _x\n", "private name tfmobile.convert.verification._x"),
    ("from tfmobile import models\nmodels.registry._y(1)\n", "private name tfmobile.models.registry._y"),
    ("from tfmobile.bench import _worker\n", "private"),
])
def test_checker_catches(source, expected):
    """The checker itself: a convert module with each kind of violation is reported."""
    found = violations(ROOT / "tfmobile" / "convert" / "probe.py", source)
    assert any(expected in v for v in found), found


def test_checker_allows_downward_and_layer_private():
    source = ("from tfmobile.errors import UserError\nfrom tfmobile.convert import flatbuffer\n"
              "from tfmobile.data import preprocess\nimport numpy as np\nnp._private = 1\n")
    assert violations(ROOT / "tfmobile" / "convert" / "probe.py", source) == []
    assert violations(ROOT / "tfmobile" / "bench" / "litert.py", "from tfmobile.bench import _worker\n") == []
    assert violations(ROOT / "benchmarks" / "probe.py", "from pipelines import _cli\n") == []
