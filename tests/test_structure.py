"""The shape of the package: no import cycles at any depth, layers that point down, settings read in one place, a
public API at the top that is cheap to import. Read from the source (ast), so a function-level import that dodges
a cycle counts like any other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "python" / "userbatch"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


MODULES = _modules()


def _targets(module: str, node) -> set[str]:
    """The package modules an import statement loads (``from a import b`` may name module ``a.b``)."""
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.module == "__future__":
            return set()
        base = module.split(".")
        if node.level:
            base = base if MODULES[module].name == "__init__.py" else base[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        # every ancestor package of a module is loaded before it: an edge to one says nothing
        if name and name != module and not module.startswith(name + "."):
            out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for m, f in MODULES.items():
        edges = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _targets(m, node)
        if f.name == "__init__.py":  # a package importing its own submodules re-exports them
            edges = {e for e in edges if not e.startswith(m + ".")}
        graph[m] = edges
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_planted_cycle():
    """The oracle is honest: a cycle three modules long, and one through a function-level import, are found."""
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(planted) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from .tables import read\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert "userbatch.tables.read" in _targets("userbatch.spark", node)


def test_no_import_cycles_at_any_depth():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles (imports inside functions count too): " + "; ".join(
        " <-> ".join(c) for c in cycles)


#: Layers, lowest first. A module may import its own layer or any lower one, never a higher one.
LAYERS = [
    ("userbatch.errors", "userbatch.config", "userbatch.resources", "userbatch.extras", "userbatch.version"),
    ("userbatch.sky",),
    ("userbatch.engine", "userbatch.user_code"),
    ("userbatch.tables",),
    ("userbatch.ops", "userbatch.sim"),
    ("userbatch.spark", "userbatch.viz"),
    ("userbatch.ml",),
    ("userbatch.cluster",),
    ("userbatch.facility", "userbatch.migrations"),
    ("userbatch.images",),
    ("userbatch.notebook", "userbatch.demo", "userbatch.cli", "userbatch"),
]
#: Where a lower layer may read a higher one, and why. The cluster renderers read the facility's typed quota file
#: and a run's OS identity and launch wrapper — three leaf modules that import nothing else of the facility;
#: ``ml.tracking`` reads where the facility config puts MLflow's store.
ALLOWED_UP = {
    ("userbatch.cluster", "userbatch.facility.config"),
    ("userbatch.cluster", "userbatch.facility.accounts"),
    ("userbatch.cluster", "userbatch.facility.isolation"),
    ("userbatch.ml", "userbatch.facility.config"),
}


def _layer(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (i, p)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def test_layers_point_down():
    wrong = []
    for m, edges in GRAPH.items():
        for e in edges:
            if _layer(e) > _layer(m) and not any(m.startswith(a) and e == b for a, b in ALLOWED_UP):
                wrong.append(f"{m} -> {e}")
    assert not wrong, "imports that point up a layer:\n" + "\n".join(sorted(wrong))


def test_allowed_upward_imports_are_leaves():
    """The facility modules the cluster layer may read import nothing else of the facility (else the exception
    would hide a real dependency on the queue or the worker)."""
    for _, target in ALLOWED_UP:
        facility = {e for e in GRAPH[target] if e.startswith("userbatch.facility")}
        assert facility <= {b for _, b in ALLOWED_UP}, f"{target} imports {sorted(facility)}"


def test_sky_is_pure():
    for m, edges in GRAPH.items():
        if m.startswith("userbatch.sky"):
            assert edges <= {"userbatch.errors"} | {x for x in MODULES if x.startswith("userbatch.sky")}, (m, edges)


def test_the_environment_is_read_in_one_place():
    """Settings are read by ``userbatch.config`` alone; elsewhere ``os.environ`` is only written (a demo choosing
    its home) or passed on whole to a child process."""
    readers = []
    for m, f in MODULES.items():
        if m == "userbatch.config":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "get", "getenv") and ast.unparse(node.func.value) in ("os.environ", "os"):
                readers.append(f"{m}:{node.lineno} {ast.unparse(node)[:60]}")
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" and isinstance(
                    node.ctx, ast.Load):
                readers.append(f"{m}:{node.lineno} {ast.unparse(node)[:60]}")
    assert not readers, "environment read outside userbatch.config:\n" + "\n".join(readers)


def test_public_api_is_listed_resolves_and_is_cheap_to_import():
    import userbatch

    for name in userbatch.__all__:
        assert getattr(userbatch, name) is not None, name
    for name in ("read_table", "write_table", "ingest", "cone_search", "box_search", "polygon_search", "crossmatch",
                 "Motion", "features", "periodogram", "plot_sky", "session"):
        assert name in userbatch.__all__, name
    # the deep paths keep working and are the same objects
    from userbatch.ops.search import cone_search
    from userbatch.tables.read import read_table

    assert userbatch.read_table is read_table and userbatch.cone_search is cone_search
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        userbatch.nothing  # noqa: B018
    code = ("import sys, userbatch; heavy = [m for m in ('pyspark', 'pyarrow', 'pandas', 'mlflow', 'numpy') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"import userbatch loaded {out}"


def test_every_public_api_function_has_a_numpydoc_parameters_section():
    """The API reference is generated from these docstrings: a public function with parameters documents them."""
    import inspect

    import userbatch

    missing = []
    for name in userbatch.__all__:
        obj = getattr(userbatch, name)
        if not inspect.isfunction(obj):
            continue
        params = [p for p in inspect.signature(obj).parameters if p not in ("self", "kwargs", "args")]
        if params and "Parameters\n" not in (inspect.getdoc(obj) or ""):
            missing.append(name)
    assert not missing, f"public functions without a numpydoc Parameters section: {missing}"


CROSSMATCH = "userbatch.ops.crossmatch"
#: The flat modules the cross-match was split from (issue 18): one place per concept, no compatibility shims.
OLD_CROSSMATCH_MODULES = ("crossmatch_tasks", "crossmatch_sides", "crossmatch_spark", "xmatch_algorithms",
                          "xmatch_kernel")


def test_crossmatch_is_one_package_whose_modules_point_one_way():
    """The cross-match lives in ``ops/crossmatch/``, one concept per module: no cycle among its modules, the two
    engines never import each other (both run their tasks through ``ops/partition_tasks``), the front is imported
    by nothing inside the package, and the old flat modules are gone."""
    assert (PKG / "ops" / "crossmatch" / "__init__.py").is_file()
    assert not (PKG / "ops" / "crossmatch.py").exists()
    for old in OLD_CROSSMATCH_MODULES:
        assert f"userbatch.ops.{old}" not in MODULES, f"userbatch.ops.{old} should be gone"
        assert not (PKG / "ops" / f"{old}.py").exists(), old
    inside = {m: {e for e in GRAPH[m] if e.startswith(CROSSMATCH + ".")}
              for m in MODULES if m.startswith(CROSSMATCH + ".")}
    assert set(inside) >= {f"{CROSSMATCH}.{n}" for n in ("api", "plan", "tasks", "local", "spark", "algorithms",
                                                         "kernel")}, sorted(inside)
    assert not _cycles(inside), _cycles(inside)
    assert f"{CROSSMATCH}.spark" not in inside[f"{CROSSMATCH}.local"]
    assert f"{CROSSMATCH}.local" not in inside[f"{CROSSMATCH}.spark"]
    for engine in ("local", "spark"):
        assert "userbatch.ops.partition_tasks" in GRAPH[f"{CROSSMATCH}.{engine}"], engine
    assert not [m for m, edges in inside.items() if f"{CROSSMATCH}.api" in edges]
    # nothing outside the package reaches into its private names, and nothing imports the old paths
    stale = [f"{m}: {old}" for m, f in MODULES.items() for old in OLD_CROSSMATCH_MODULES
             if f"ops.{old}" in f.read_text() or f"from .{old} " in f.read_text()]
    assert not stale, stale


def test_the_web_ui_is_imported_by_the_api_alone():
    """The web UI's package sits on top of the facility: it reads the facility, and only the API mounts it."""
    web = "userbatch.facility.web"
    importers = {m for m, edges in GRAPH.items() if not m.startswith(web) and any(
        e == web or e.startswith(web + ".") for e in edges)}
    assert importers == {"userbatch.facility.api"}, sorted(importers)
