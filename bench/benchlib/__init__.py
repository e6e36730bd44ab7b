"""Shared pieces of the side-by-side benchmarks: input generation, timers, logging, hats-import stage timing.

Not a library: the scripts in bench/ import it as a sibling module (``python bench/ingest.py`` puts bench/ first
on ``sys.path``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1]  # bench/ (this package is bench/benchlib/)
DATA_DIR = BENCH_DIR / "_data"
WORK_DIR = BENCH_DIR / "_work"

#: hats-import's defaults, used on both sides so the partitions are comparable.
HATS_DEFAULT_THRESHOLD = 1_000_000
HATS_DEFAULT_HIGHEST_ORDER = 10
DEFAULT_ROWS = 10_000_000
DEFAULT_SEED = 20240
#: Rows per generated input file (10 files at the default size: enough for 2 workers / 2 cores to share).
CHUNK_ROWS = 1_000_000

log = logging.getLogger("bench")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Chatty third-party loggers stay at WARNING unless -v.
    for name in ("py4j", "distributed", "asyncio", "fsspec", "urllib3", "numexpr"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


@contextmanager
def timed(timings: dict, name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - t0
        log.info("%s: %.2f s", name, timings[name])


def input_dir(rows: int, seed: int) -> Path:
    return DATA_DIR / f"objects-{rows}-seed{seed}"


def ensure_input(rows: int, seed: int = DEFAULT_SEED, chunk_rows: int = CHUNK_ROWS) -> list[Path]:
    """The simulated Object table as Parquet files under bench/_data, generated once and re-used.

    A ``manifest.json`` written last marks a complete set; a directory without one (an interrupted run) is
    regenerated.
    """
    import pyarrow.parquet as pq
    from userbatch.sim import iter_object_chunks

    out = input_dir(rows, seed)
    manifest = out / "manifest.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        files = [out / f for f in meta["files"]]
        if meta.get("rows") == rows and all(f.exists() for f in files):
            log.info("re-using %d input file(s), %d rows, in %s", len(files), rows, out)
            return files
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    files = []
    n = 0
    for i, chunk in enumerate(iter_object_chunks(_survey_config(rows, seed), chunk_rows=chunk_rows)):
        path = out / f"part-{i:05d}.parquet"
        pq.write_table(chunk, path)  # pyarrow defaults: snappy, row groups of up to 1Mi rows
        files.append(path)
        n += chunk.num_rows
    if n != rows:
        raise RuntimeError(f"simulator produced {n} rows, expected {rows}")
    manifest.write_text(json.dumps({"rows": rows, "seed": seed, "chunk_rows": chunk_rows,
                                    "files": [f.name for f in files]}, indent=1))
    log.info("generated %d rows in %d file(s) under %s in %.1f s", rows, len(files), out, time.perf_counter() - t0)
    return files


def _survey_config(rows: int, seed: int):
    from userbatch.sim import SurveyConfig

    return SurveyConfig(n_objects=rows, seed=seed)


def warm_page_cache(paths: list[Path]) -> int:
    """Read every input byte once so neither side pays for (or profits from) a cold page cache first."""
    total = 0
    for p in paths:
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 24):
                total += len(chunk)
    return total


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class HatsStageTimer:
    """Record when hats-import enters each of its stages (it opens a progress bar per stage, in order).

    hats-import does not report stage durations itself, so we patch ``print_progress`` on its resume plan to
    note the time each stage's progress bar opens; a stage lasts until the next one opens (or the run ends).
    Futures are submitted just before a stage's bar opens, so submission time lands in the previous stage (tiny).
    """

    def __init__(self):
        self.marks: list[tuple[str, float]] = []
        self._orig = None

    def __enter__(self):
        from hats_import.pipeline_resume_plan import PipelineResumePlan

        self._orig = PipelineResumePlan.print_progress
        orig, marks = self._orig, self.marks

        def patched(plan, iterable=None, total=None, stage_name=None):
            marks.append((f"{getattr(plan, 'pipeline_name', '') or ''}:{stage_name}", time.perf_counter()))
            return orig(plan, iterable=iterable, total=total, stage_name=stage_name)

        PipelineResumePlan.print_progress = patched
        return self

    def __exit__(self, *exc):
        from hats_import.pipeline_resume_plan import PipelineResumePlan

        PipelineResumePlan.print_progress = self._orig

    def stages(self, t_start: float, t_end: float, prefix: str = "") -> dict[str, float]:
        """Durations: 'planning' from t_start to the first mark, then each stage to the next mark."""
        out: dict[str, float] = {}
        marks = [(n, t) for n, t in self.marks if t_start <= t <= t_end]
        prev_name, prev_t = "planning", t_start
        for name, t in marks:
            key = prefix + prev_name.split(":")[-1].lower()
            out[key] = out.get(key, 0.0) + (t - prev_t)
            prev_name, prev_t = name, t
        key = prefix + prev_name.split(":")[-1].lower()
        out[key] = out.get(key, 0.0) + (t_end - prev_t)
        return out


def fmt_table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join([line, sep, *body])


def env_summary() -> str:
    import platform

    cores = os.cpu_count()
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = float("nan")
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return (f"{platform.node()}: {cores} cores, {mem_gib:.1f} GiB RAM, load avg {load}, "
            f"Python {platform.python_version()}")


def frozen_source_env(work: Path) -> tuple[dict, str]:
    """Copy python/userbatch into ``work/src`` and return an environment whose PYTHONPATH puts that copy first.

    Other people edit the package while a 10-minute benchmark runs; Spark's Python workers import the module
    again (fresh worker processes), so a mid-run edit can break a run or mix two versions. The copy pins the code
    one run measures. Spark workers inherit PYTHONPATH. Returns (env, description of the code measured).
    """
    import subprocess

    repo = BENCH_DIR.parent
    src = work / "src"
    shutil.copytree(repo / "python" / "userbatch", src / "userbatch",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    env["BENCH_FROZEN_SOURCE"] = str(src)
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "python/userbatch"],
                               capture_output=True, text=True, check=True).stdout.strip()
        desc = f"git {head}{' + uncommitted changes in python/userbatch' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        desc = "unknown revision"
    return env, desc


def code_env(work: Path, live_source: bool) -> tuple[dict, str]:
    """The environment a measuring child process runs in, and a description of the code it measures."""
    if live_source:
        return dict(os.environ), "live python/userbatch (not frozen)"
    return frozen_source_env(work)


def run_measuring_child(script: str, label: str, args, argv: list[str] | None) -> int:
    """The parent's whole job: pin the code (:func:`code_env`), re-run ``script`` with the same arguments plus
    ``--work DIR`` in a child process that measures, then remove the work dir unless ``--keep``."""
    import subprocess
    import sys
    import time

    work = WORK_DIR / f"{label}-{args.rows}-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    env, code = code_env(work, args.live_source)
    env["BENCH_CODE"] = code
    log.info("code measured: %s", code)
    try:
        return subprocess.run([sys.executable, script, *(argv if argv is not None else sys.argv[1:]),
                               "--work", str(work)], env=env, check=False).returncode
    finally:
        if args.keep:
            log.info("work dir kept: %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def check_frozen_source() -> None:
    """In a child: make sure ``userbatch`` really comes from the frozen copy."""
    frozen = os.environ.get("BENCH_FROZEN_SOURCE")
    if not frozen:
        return
    import userbatch

    if not Path(userbatch.__file__).resolve().is_relative_to(Path(frozen).resolve()):
        raise RuntimeError(f"userbatch imported from {userbatch.__file__}, not from the frozen copy {frozen}")
    log.info("measuring the frozen copy of userbatch in %s", frozen)


def process_tree_cpu_s(root_pid: int) -> float:
    """CPU seconds (user + system) of ``root_pid`` and all its live descendants, plus what they reaped.

    Used for the Spark JVM, which its Python parent never reaps (so ``getrusage(RUSAGE_CHILDREN)`` misses it);
    the JVM's Python workers are its children. Linux only (/proc); returns NaN elsewhere.
    """
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    try:
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                raw = (d / "stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
            ppid = int(fields[1])
            utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
            stats[int(d.name)] = (ppid, utime + stime + cutime + cstime)
    except OSError:
        return float("nan")
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(p for p, (pp, _) in stats.items() if pp == pid)
    return total / tick


def build_survey_tables(src: Path, meta: dict, ddir: Path, work: Path, threshold: int, names: tuple[str, str, str],
                        label: str) -> int:
    """Child process body shared by the light-curve benchmarks: Object (HEALPix, ``threshold`` rows per pixel),
    Visit (non-spatial) and ForcedSource as a director child of Object with visit times, under ``ddir``; their
    catalog entries, row counts and build times in ``ddir/tables.json``."""
    import dataclasses
    import json

    obj_name, visit_name, fs_name = names
    shutil.rmtree(ddir, ignore_errors=True)
    ddir.mkdir(parents=True)
    # a catalog of its own: the build's entries never reach a user's or the run's catalog
    os.environ["USERBATCH_HOME"] = str(work / "build_home")
    os.environ.pop("USERBATCH_WAREHOUSE", None)
    os.environ.pop("USERBATCH_DB_URL", None)
    import userbatch
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.director import VisitTimes, write_child_table
    from userbatch.tables.write import write_table

    spark = userbatch.session(master="local[2]")
    t: dict = {}
    res: dict = {}
    with timed(t, "object"):
        r = write_table(spark.read.parquet(str(src / meta["object"])), obj_name, pixel_threshold=threshold,
                        ra_column="coord_ra", dec_column="coord_dec", location=str(ddir / "object"),
                        description=f"{label} simulated Object")
        res["object"] = {"rows": r.rows, "partitions": r.partitions}
    with timed(t, "visit"):
        r = write_table(spark.read.parquet(str(src / meta["visit"])), visit_name, ra_column=None, dec_column=None,
                        location=str(ddir / "visit"), description=f"{label} simulated Visit")
        res["visit"] = {"rows": r.rows}
    with timed(t, "forced_source"):
        r = write_child_table(spark.read.parquet(*[str(src / f) for f in meta["forced_source"]]), fs_name,
                              parent=obj_name, times=VisitTimes(visit_name), location=str(ddir / "forced_source"),
                              description=f"{label} simulated ForcedSource (director child of Object)")
        res["forced_source"] = {"rows": r.rows, "partitions": r.partitions, "rejected": r.rejected}
    spark.stop()
    cat = Catalog()
    entries = {}
    for name in names:
        d = dataclasses.asdict(cat.get(name))
        for k in ("owner", "created_at"):
            d.pop(k, None)
        entries[name] = d
    (ddir / "tables.json").write_text(json.dumps({"entries": entries, "results": res, "build_s": t}, indent=1))
    return 0
