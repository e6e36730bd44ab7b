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

BENCH_DIR = Path(__file__).resolve().parent
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
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "?"
    return f"{platform.node()}: {cores} cores, {mem_gib:.1f} GiB RAM, load avg {load}, Python {platform.python_version()}"
