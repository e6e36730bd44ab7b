"""The package as a user gets it: an sdist and a wheel built from the source, the wheel installed (not editable) in
a fresh venv, and a small demo run by that venv's Python from a directory outside the repository.

What the demo proves: ``userbatch`` is imported from the fresh venv, not from the checkout; its facility defaults,
job templates, BPS defaults and pipelines are the copies shipped in the package (``userbatch.resources``); the
``userbatch.run_kinds`` entry point and the ``userbatch`` command are installed; a table is written, read back and
cone-searched with local Spark through the public API — with only the base dependencies present, and using a part
whose extra is absent raises ``MissingExtra`` naming the extra.

How it stays fast (about 40 s; installing the base dependencies from PyPI would take minutes: pyspark alone is
300 MB): the wheel is installed with ``pip install --no-deps`` and the fresh venv gets its dependencies from this
project's venv, but only the base ones. The test reads ``Requires-Dist`` from the *wheel's* metadata (no extras),
follows it through the installed distributions' metadata (their own dependencies, with the extras asked for), and
builds a directory of symbolic links to exactly those distributions' files (their ``RECORD``: whole directories
where no other distribution shares them, file by file inside shared namespace packages such as ``lsst``). The
fresh venv's ``.pth`` adds that directory as a site directory. So FastAPI, MLflow, the Rubin middleware and
Jupyter are absent there unless a base dependency needs them, as in a real base install — and the project's
editable ``userbatch`` (its ``.pth`` in the project venv) is not reachable at all, which the demo checks.

The build runs in a copy of the source (``git ls-files``: tracked and untracked, not ignored), so it never writes
``build/`` or egg-info into the working tree; wheel and sdist are built offline (``--no-build-isolation``,
setuptools from the ``test`` extra).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

#: slow (the fast tier leaves it out): builds a wheel and a fresh venv, runs a demo in a child process
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                                 reason="builds from a git checkout")]


def _run(argv, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    cmd = " ".join(map(str, argv))
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def _source_copy(dest: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored) copied to ``dest``."""
    files = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    for rel in filter(None, files.split("\0")):
        src = ROOT / rel
        if src.is_file():  # deleted but still tracked: skip
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]


def _base_closure(requirements: list[str]) -> dict[str, md.Distribution]:
    """The installed distributions a base install of the wheel needs: its requirements without extras, then theirs."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo = [Requirement(r) for r in requirements]
    todo = [r for r in todo if r.marker is None or r.marker.evaluate({"extra": ""})]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    dists: dict[str, md.Distribution] = {}
    while todo:
        req = todo.pop()
        name, extras = canonicalize_name(req.name), tuple(sorted(req.extras))
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = dists.get(name) or md.distribution(req.name)
        dists[name] = dist
        for r in map(Requirement, dist.requires or []):
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append(r)
    return dists


def _link_farm(dists: dict[str, md.Distribution], site: Path, dest: Path) -> int:
    """Symbolic links in ``dest`` to the files of ``dists`` under ``site``: a whole directory where only these
    distributions have files in it, else its entries one by one. Returns the number of links."""
    def parts(d):
        out = set()
        for f in d.files or []:
            p = Path(f)
            if p.parts and p.parts[0] != ".." and not p.is_absolute():
                out.add(p.parts)
        return out

    for d in dists.values():
        assert Path(d.locate_file("")).resolve() == site.resolve(), f"{d.metadata['Name']} is not in {site}"
    mine = {p for d in dists.values() for p in parts(d)}
    others = {p for d in md.distributions(path=[str(site)]) if _canon(d) not in dists for p in parts(d)}
    count = 0

    def by_head(paths, depth):
        groups: dict[str, set] = {}
        for p in paths:
            if len(p) > depth:
                groups.setdefault(p[depth], set()).add(p)
        return groups

    def place(prefix: tuple[str, ...], mine: set, theirs: set) -> None:
        nonlocal count
        their_groups = by_head(theirs, len(prefix))
        for head, my_below in sorted(by_head(mine, len(prefix)).items()):
            sub = (*prefix, head)
            their_below = their_groups.get(head, set())
            target, link = site.joinpath(*sub), dest.joinpath(*sub)
            if not their_below or sub in my_below:  # only ours, or a file several distributions install
                if target.exists() and not link.exists():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(target)
                    count += 1
            else:  # a directory shared with a distribution left out (a namespace package): one level down
                place(sub, my_below, their_below)

    place((), mine, others)
    return count


def _canon(dist: md.Distribution) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(dist.metadata["Name"])


DEMO = textwrap.dedent('''
    import importlib, importlib.metadata as md, json, sys
    from pathlib import Path

    import userbatch
    from userbatch import resources
    from userbatch.errors import MissingExtra

    out = {"file": userbatch.__file__, "version": userbatch.__version__, "repo_root": resources.repo_root()}
    out["shipped"] = {name: str(resources.path(*name.split("/")))
                      for name in ("conf/facility.yaml", "conf/bps/userbatch.yaml", "conf/templates", "pipelines")}
    from userbatch.facility.config import load_config
    from userbatch.facility.templates import list_templates, load_template
    out["total_cores"] = load_config().total_cores
    out["templates"] = list_templates()
    out["crossmatch_template"] = str(load_template("crossmatch").path)
    out["run_kinds"] = {ep.name: ep.value for ep in md.entry_points(group="userbatch.run_kinds")}
    out["dist_file"] = str(md.distribution("userbatch").locate_file("userbatch/__init__.py"))
    out["absent"] = {m: importlib.util.find_spec(m) is None for m in ("fastapi", "mlflow", "lsst.daf", "nbclient")}
    out["missing"] = {}
    for name, call in (("facility", lambda: importlib.import_module("userbatch.facility.api")),
                       ("images", lambda: importlib.import_module("userbatch.images.bridge")),
                       ("ml", lambda: importlib.import_module("userbatch.ml.tracking").configure())):
        try:
            call()
            out["missing"][name] = None
        except MissingExtra as exc:
            out["missing"][name] = str(exc)

    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(1)
    pdf = pd.DataFrame({"objectId": np.arange(200, dtype="int64"), "coord_ra": rng.uniform(10, 11, 200),
                        "coord_dec": rng.uniform(-1, 1, 200), "mag": rng.uniform(18, 24, 200)})
    spark = userbatch.session(master="local[1]", conf={"spark.sql.shuffle.partitions": "2"})
    res = userbatch.write_table(spark.createDataFrame(pdf), "u_demo.stars")
    back = userbatch.read_table("u_demo.stars").toPandas()
    cone = userbatch.cone_search("u_demo.stars", 10.5, 0.0, radius_arcsec=1800).to_pandas()
    # separation from (10.5, 0): cos d = cos(dec) cos(ra - 10.5)
    sep = np.degrees(np.arccos(np.cos(np.radians(pdf.coord_dec)) * np.cos(np.radians(pdf.coord_ra - 10.5))))
    out["table"] = {"version": res.version, "rows": res.rows, "read": len(back),
                    "ids": sorted(back.objectId.tolist()) == list(range(200)),
                    "cone": sorted(cone.objectId.tolist()), "cone_expected": pdf.objectId[sep <= 0.5].tolist()}
    spark.stop()
    json.dump(out, sys.stdout, default=str)
    ''')


def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    t0 = time.monotonic()
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    # sdist (proves MANIFEST.in carries conf/ and pipelines/), then the wheel from the sdist, as `python -m build`
    _run([PY, "-c", f"from setuptools.build_meta import build_sdist; print(build_sdist({str(dist)!r}))"], cwd=src)
    sdist = next(dist.glob("userbatch-*.tar.gz"))
    with tarfile.open(sdist) as t:
        names = t.getnames()
    assert any(n.endswith("/conf/facility.yaml") for n in names) and any(n.endswith("/setup.py") for n in names)
    _run([PY, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(dist),
          str(sdist)], cwd=tmp_path)
    wheel = next(dist.glob("userbatch-*.whl"))

    with zipfile.ZipFile(wheel) as z:
        files = set(z.namelist())
        eps = z.read(next(n for n in files if n.endswith(".dist-info/entry_points.txt"))).decode()
    for sub in ("conf", "pipelines"):
        shipped = {f"userbatch/{sub}/{p.relative_to(ROOT / sub).as_posix()}" for p in (ROOT / sub).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts}
        assert shipped and shipped <= files, f"the wheel lacks {sorted(shipped - files)}"
    migrations = {f"userbatch/{p.relative_to(ROOT / 'python' / 'userbatch').as_posix()}"
                  for p in (ROOT / "python" / "userbatch" / "migrations").rglob("*")
                  if p.suffix in (".py", ".mako") and "__pycache__" not in p.parts}
    assert any("/versions/" in m for m in migrations) and migrations <= files, sorted(migrations - files)
    web = {f"userbatch/{p.relative_to(ROOT / 'python' / 'userbatch').as_posix()}"
           for p in (ROOT / "python" / "userbatch" / "facility" / "web").rglob("*")
           if p.is_file() and p.parent.name in ("templates", "static")}
    assert {"userbatch/facility/web/static/htmx.min.js", "userbatch/facility/web/templates/base.html"} <= web
    assert web <= files, f"the wheel lacks the web UI's {sorted(web - files)}"
    assert "[userbatch.run_kinds]" in eps and "bps = userbatch.images.run_kind:BpsKind" in eps
    assert "userbatch = userbatch.cli:main" in eps
    assert not any(f.startswith(("tests/", "conf/", "bench/")) for f in files)

    # a fresh venv, the wheel installed (not editable), the base dependencies linked in
    venv = tmp_path / "venv"
    _run([PY, "-m", "venv", "--without-pip", str(venv)])
    vpy = venv / "bin" / "python"
    _run([PY, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    fresh_site = Path(_run([str(vpy), "-c", purelib]).stdout.strip())
    project_site = Path(sysconfig.get_paths()["purelib"])
    deps = tmp_path / "deps"
    deps.mkdir()
    closure = _base_closure(_requirements(wheel))
    assert "pyspark" in closure and "fastapi" not in _requirements(wheel)
    links = _link_farm(closure, project_site, deps)
    (fresh_site / "_userbatch_test_base_deps.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")

    # the demo, from a directory outside the repository, in a clean environment
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "demo.py").write_text(DEMO)
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "JAVA_HOME", "TMPDIR", "USER")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(USERBATCH_HOME=str(work / "home"), USERBATCH_USER="demo", PYTHONNOUSERSITE="1")
    r = _run([str(vpy), "demo.py"], cwd=work, env=env, timeout=600)
    out = json.loads(r.stdout.strip().splitlines()[-1])

    pkg = fresh_site / "userbatch"
    assert Path(out["file"]) == pkg / "__init__.py", out["file"]
    assert Path(out["dist_file"]) == pkg / "__init__.py"
    assert out["repo_root"] is None
    for name, path in out["shipped"].items():
        assert Path(path) == pkg.joinpath(*name.split("/")), (name, path)
    assert Path(out["crossmatch_template"]) == pkg / "conf" / "templates" / "crossmatch.yaml"
    assert out["templates"] == sorted(p.stem for p in (ROOT / "conf" / "templates").glob("*.yaml"))
    assert out["total_cores"] > 0
    assert out["run_kinds"] == {"bps": "userbatch.images.run_kind:BpsKind"}
    for extra, msg in out["missing"].items():
        assert out["absent"][{"facility": "fastapi", "images": "lsst.daf", "ml": "mlflow"}[extra]], out["absent"]
        assert msg and f"needs the {extra!r} extra: pip install 'userbatch[{extra}]'" in msg, (extra, msg)
    t = out["table"]
    assert (t["version"], t["rows"], t["read"], t["ids"]) == (0, 200, 200, True), t
    assert t["cone"] and t["cone"] == sorted(t["cone_expected"]), t
    print(f"wheel test: {links} links, {time.monotonic() - t0:.1f} s")
