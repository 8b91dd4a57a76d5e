"""Layers depend one way (docs/CONTRACTS.md, "Layers"): every import in the project's modules,
including imports inside functions, is read with ``ast`` and checked against the layer order, and no
module imports or uses another module's private (``_underscore``) name. The layer order is the table
in docs/CONTRACTS.md itself (one source). Modules are also not coupled through an object: no function
reads more than ``MAX_FIELDS_READ`` fields of one parameter whose class another module defines.
Pure source reading: no TensorFlow, so it is fast."""
import ast
import collections
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tfmobile", "pipelines", "benchmarks", "android_bench")
CONTRACTS = ROOT / "docs" / "CONTRACTS.md"


def layer_table(text):
    """[(layer number, module names, "may use" cell)] of the "Layers" table of CONTRACTS.md.

    A module cell is backticked names (``tfmobile.data``, ``pipelines/``); text in parentheses
    describes them and is not read."""
    section = text[text.index("## Layers"):]
    section = section[:section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        m = re.fullmatch(r"\|\s*(\d+)\s*\|(.*)\|(.*)\|\s*", line)
        if m:
            names = re.findall(r"`([^`]+)`", re.sub(r"\([^()]*\)", "", m.group(2)))
            rows.append((int(m.group(1)), tuple(n.rstrip("/").replace("/", ".") for n in names),
                         m.group(3).strip()))
    return rows


# Lowest first; a module may import its own layer or lower ones, never a higher one.
LAYERS = tuple(names for _, names, _ in layer_table(CONTRACTS.read_text(encoding="utf-8")))


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


def test_layer_table_is_well_formed():
    """Layers numbered 0.. in order, each "may use" cell says what the order means, and every name
    in the table is a project module (a renamed module fails here, not silently)."""
    rows = layer_table(CONTRACTS.read_text(encoding="utf-8"))
    assert [n for n, _, _ in rows] == list(range(len(rows))) and len(rows) >= 2
    last = len(rows) - 1
    for n, names, may_use in rows:
        expected = {0: "nothing of tfmobile", 1: "0", last: "all"}.get(n, f"0-{n - 1}")
        assert may_use == expected, f"layer {n}: 'may use' is {may_use!r}, the order means {expected!r}"
        for name in names:
            path = ROOT / pathlib.Path(*name.split("."))
            assert name.split(".")[0] in PACKAGES and (path.is_dir() or path.with_suffix(".py").is_file()), \
                f"layer {n} names {name!r}, which is no module of the project"


def test_layer_order_is_the_documented_one():
    """The order the checker enforces is the documented one, e.g. training below conversion."""
    order = [layer_of(m) for m in ("tfmobile.errors", "tfmobile.data", "tfmobile.train", "tfmobile.convert",
                                   "tfmobile.main_job", "tfmobile.netadapt.loop", "pipelines.run")]
    assert order == sorted(order) and len(set(order)) == len(order), order


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


# --------------------------------------------------------------------------- coupling through an object
# A function that reads many fields of an object whose class another module defines depends on that
# class's whole layout: a rename there breaks it, and an import check cannot see it. Read from the
# source: a parameter's class is its annotation, else the one class (defined elsewhere) that has every
# attribute the function reads of it. Flagged: more than MAX_FIELDS_READ distinct attributes read.
MAX_FIELDS_READ = 6
KNOWN_COUPLINGS = {
    # a block kind's int8 op derivation reads its own block's schema (the dataclass is in blocks.py, the
    # kind with its Keras build in the family module): one place per block type, by design
    "tfmobile/models/mobilenet.py:inverted_residual_int8(b)": "tfmobile/models/blocks.py:InvertedResidual",
    # the int8 graph builder's methods (conv, depthwise, shuffle, ...): the API analysis hands a block kind
    "tfmobile/models/shufflenet.py:v1_unit_int8(g)": "tfmobile/analysis/int8.py:Int8Graph",
}


def class_members(tree):
    """{class name: names it defines (fields, class attributes, methods, self.X assignments)}."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    members.update(t.id for t in item.targets if isinstance(t, ast.Name))
                elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
            members.update(n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
                           and isinstance(n.value, ast.Name) and n.value.id == "self"
                           and isinstance(n.ctx, ast.Store))
            found[node.name] = members
    return found


def project_classes():
    """{(relative path, class name): members} of every project module."""
    return {(str(p.relative_to(ROOT)), name): members for p in project_files()
            for name, members in class_members(ast.parse(p.read_text(encoding="utf-8"))).items()}


def couplings(path, classes, source=None):
    """["path:function(param)", "path:Class", count] for each function of ``path`` reading more than
    MAX_FIELDS_READ attributes of one parameter whose class another module defines."""
    source = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(source)
    rel = str(path.relative_to(ROOT))
    mine = {(rel, name): m for name, m in class_members(tree).items()}
    others = {k: m for k, m in classes.items() if k[0] != rel}
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        params = {a.arg: a.annotation for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
                  if a.arg not in ("self", "cls")}
        reads = collections.defaultdict(set)
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in params and isinstance(node.ctx, ast.Load):
                reads[node.value.id].add(node.attr)
        for param, attrs in reads.items():
            if len(attrs) <= MAX_FIELDS_READ:
                continue
            note = params[param]
            named = ast.unparse(note).split(".")[-1].strip("'\"") if note is not None else None
            if named is not None:
                owners = [k for k in {**others, **mine} if k[1] == named]
            else:
                owners = [k for k, m in {**others, **mine}.items() if attrs <= m]
            if owners and all(k[0] != rel for k in owners):
                found.append((f"{rel}:{fn.name}({param})", f"{owners[0][0]}:{owners[0][1]}", len(attrs)))
    return found


def test_no_function_reads_another_modules_object_wholesale():
    classes = project_classes()
    found = [c for p in project_files() for c in couplings(p, classes)]
    flagged = [f"{where} reads {n} fields of {owner}" for where, owner, n in found
               if KNOWN_COUPLINGS.get(where) != owner]
    assert flagged == [], ("functions coupled to another module's object (pass the few values they need, "
                           "or move the function next to the class):\n" + "\n".join(flagged))
    stale = set(KNOWN_COUPLINGS) - {where for where, _, _ in found}
    assert not stale, f"no longer flagged, remove from KNOWN_COUPLINGS: {sorted(stale)}"


def test_coupling_checker_catches():
    """The checker itself: 7 fields of data's Splits read in a convert module are flagged, by duck
    type and by annotation; 6 are not, nor are 7 fields of a class of the same module."""
    classes = project_classes()
    probe = ROOT / "tfmobile" / "convert" / "probe.py"
    fields = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "source")
    body = "    return " + ", ".join(f"s.{f}" for f in fields) + "\n"
    assert couplings(probe, classes, "def f(s):\n" + body) == [
        ("tfmobile/convert/probe.py:f(s)", "tfmobile/data/input_pipeline.py:Splits", 7)]
    assert couplings(probe, classes, "def f(s: 'data.Splits'):\n" + body)[0][1].endswith(":Splits")
    assert couplings(probe, classes, "def f(s):\n" + body.replace(", s.source", "")) == []
    local = "class Splits:\n" + "".join(f"    {f}: int\n" for f in fields) + "\n\ndef f(s: Splits):\n" + body
    assert couplings(probe, classes, local) == []
