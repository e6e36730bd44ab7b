"""Image side-car end to end: a simulated butler repository, the pipelines run by the real ``pipetask run``, and
the outputs checked against the simulated truth (stamp centring, background residuals near bright galaxies,
injection completeness).

One repository (2 visits x 4 detectors of 256x256 px) is built per module; each pipeline is one ``pipetask run``
subprocess with ``-j 1`` (spawned workers re-import the middleware, which costs more than these quanta do).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lsst.pipe.base")
pytest.importorskip("lsst.ctrl.mpexec")

ROOT = Path(__file__).resolve().parents[1]
PIPETASK = Path(sys.executable).parent / "pipetask"
OUT = "u/tester/test"


def _pipetask(repo, pipeline: str, inputs: str, output: str, *extra: str) -> None:
    if not PIPETASK.exists():
        pytest.skip(f"pipetask not found next to {sys.executable}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(PIPETASK.parent), env.get("PATH", "")])
    cmd = [str(PIPETASK), "run", "-b", str(repo), "-i", inputs, "-o", output, "-p",
           str(ROOT / "pipelines" / pipeline), "-d", "instrument='UBSim'", "-j", "1", "--register-dataset-types",
           *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from userbatch.images.sim_repo import build_repo

    root = tmp_path_factory.mktemp("ubsim") / "repo"
    return build_repo(root, n_visits=2, n_detectors=4, seed=7)


def _butler(info, collections):
    from lsst.daf.butler import Butler

    return Butler.from_config(info.root, collections=collections)


def test_repo_contents(sim):
    from userbatch.images.tasks.exposure import SimExposure

    b = _butler(sim, sim.input_collection)
    refs = list(b.registry.queryDatasets("calexp", collections=sim.input_collection))
    assert len(refs) == len(sim.visits) * len(sim.detectors) == 8
    exp = b.get("calexp", instrument="UBSim", visit=sim.visits[0], detector=0)
    assert isinstance(exp, SimExposure) and exp.image.shape == (256, 256)
    assert exp.psf["fwhm_pix"] == pytest.approx(sim.fwhm_pix[sim.visits[0]])
    truth = b.get("ub_truth", instrument="UBSim", visit=sim.visits[0], detector=0)
    # The WCS round-trips: the truth pixel positions come from the stored header.
    x, y = exp.sky_to_pixel(truth["coord_ra"], truth["coord_dec"])
    assert np.allclose(x, truth["x"], atol=1e-6) and np.allclose(y, truth["y"], atol=1e-6)
    # Spatial queries work on the registered regions: a big galaxy's position is in exactly its detector's region.
    big = truth[truth["is_big"]][0]
    hits = list(b.registry.queryDataIds(["visit", "detector"], instrument="UBSim", visit=sim.visits[0],
                                        where="visit_detector_region.region OVERLAPS POINT(ra, dec)",
                                        bind={"ra": float(big["coord_ra"]), "dec": float(big["coord_dec"])}))
    assert [h["detector"] for h in hits] == [0]


BRIGHT_NJY = 10 ** (-0.4 * (22.0 - 31.4))  # mag 22


def test_user_catalog_photometry_and_astrometry(tmp_path):
    """A user catalogue (SDM-style r_psfFlux column) is drawn where its WCS says, with the flux it says."""
    import pandas as pd
    from lsst.daf.butler import Butler

    from userbatch.images.sim_repo import SimImageConfig, build_repo

    cfg = SimImageConfig(ra_deg=150.0, dec_deg=-30.0, nx=128, ny=128, read_noise=0.0, sky_level=100.0)
    cat = pd.DataFrame({"objectId": [11, 12, 13], "ra": [150.0, 150.001, 150.2], "dec": [-30.0, -30.002, -30.0],
                        "r_psfFlux": [2e5, 5e4, 1e6], "r_eff_arcsec": [0.0, 1.0, 0.0]})
    info = build_repo(tmp_path / "repo", n_visits=1, n_detectors=1, seed=3, catalog=cat, config=cfg)
    b = Butler.from_config(info.root, collections=info.input_collection)
    exp = b.get("calexp", instrument="UBSim", visit=1000, detector=0)
    sky = b.get("ub_sky_truth", instrument="UBSim", visit=1000, detector=0)
    truth = b.get("ub_truth", instrument="UBSim", visit=1000, detector=0)
    assert sorted(truth["objectId"]) == [11, 12]  # 13 is 0.2 deg away: off the detector
    star = truth[truth["objectId"] == 11][0]
    assert star["type"] == "star" and truth[truth["objectId"] == 12][0]["type"] == "galaxy"
    yy, xx = np.mgrid[0:128, 0:128]
    ap = np.hypot(xx - star["x"], yy - star["y"]) < 4 * exp.psf["fwhm_pix"]
    counts = float((exp.image - sky)[ap].sum())
    expected = 2e5 / exp.calib_njy_per_count
    assert counts == pytest.approx(expected, rel=0.03)
    assert exp.zero_point == pytest.approx(cfg.zero_point)


@pytest.mark.slow
def test_stamps_centred(sim):
    from userbatch.images.tasks.targets import stamps_request, targets_data_query

    run = "u/tester/targets"
    targets = stamps_request(sim.catalog, where=f"type = 'star' AND flux > {BRIGHT_NJY}", repo=sim.root, run=run)
    assert len(targets) >= 5
    query = targets_data_query(sim.root, targets)
    assert "visit = 1000" in query
    _pipetask(sim.root, "stamps.yaml", f"{sim.input_collection},{run}", f"{OUT}/stamps", "-d", query)
    b = _butler(sim, f"{OUT}/stamps")
    n = 0
    for ref in b.registry.queryDatasets("stamp_catalog", collections=f"{OUT}/stamps"):
        table = b.get(ref)
        cube = b.get("stamps", dataId=ref.dataId)
        truth = b.get("ub_truth", dataId=ref.dataId, collections=sim.input_collection)
        assert cube.shape == (len(table), 31, 31)
        for row, stamp in zip(table, cube):
            t = truth[truth["objectId"] == row["objectId"]]
            if len(t) == 0 or not np.isfinite(stamp).all():
                continue
            # The stamp's stated centre is the truth pixel position ...
            assert row["x"] == pytest.approx(t["x"][0], abs=1e-3)
            # ... and the light is centred there: background-subtracted first moment within 9x9 px.
            s = stamp - np.median(stamp)
            c = 15
            w = s[c - 4:c + 5, c - 4:c + 5]
            yy, xx = np.mgrid[c - 4:c + 5, c - 4:c + 5]
            w = np.clip(w, 0, None)
            cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
            assert abs(cx - row["xc"]) < 0.5 and abs(cy - row["yc"]) < 0.5, (row, cx, cy)
            n += 1
    assert n >= 5
    print(f"stamps: {n} bright-star stamps centred within 0.5 px")


@pytest.mark.slow
def test_background_preserves_lsb(sim):
    _pipetask(sim.root, "background.yaml", sim.input_collection, f"{OUT}/background")
    b = _butler(sim, [f"{OUT}/background", sim.input_collection])
    yy, xx = np.mgrid[0:256, 0:256]
    res = {"masked_poly": [], "median": [], "mesh": []}
    names = {"masked_poly": "ub_background", "median": "ub_background_median", "mesh": "ub_background_mesh"}
    for v in sim.visits:
        for d in sim.detectors:
            truth = b.get("ub_truth", instrument="UBSim", visit=v, detector=d)
            sky = b.get("ub_sky_truth", instrument="UBSim", visit=v, detector=d)
            region = np.zeros(sky.shape, bool)
            for g in truth[truth["is_big"]]:
                r = np.hypot(xx - g["x"], yy - g["y"])
                region |= (r > g["r_eff_pix"]) & (r < 4 * g["r_eff_pix"])
            if not region.any():
                continue
            for method, name in names.items():
                bkg = b.get(name, instrument="UBSim", visit=v, detector=d)
                res[method].append(float(np.mean(np.abs(bkg - sky)[region])))
            sub = b.get("calexp_bkgsub", instrument="UBSim", visit=v, detector=d)
            assert sub.metadata["BKGMETH"] == "masked_poly"
    means = {k: float(np.mean(v)) for k, v in res.items()}
    print("background |model - true sky| around bright galaxies (counts):", means)
    assert len(res["masked_poly"]) >= 4
    assert means["masked_poly"] < means["median"]
    assert means["masked_poly"] < means["mesh"]
    assert means["masked_poly"] < 0.5 * means["median"]


@pytest.mark.slow
def test_injection_completeness(sim):
    from astropy.table import vstack

    from userbatch.images.tasks.injection import completeness_from_matches

    _pipetask(sim.root, "injection.yaml", sim.input_collection, f"{OUT}/injection")
    b = _butler(sim, f"{OUT}/injection")
    tables = [b.get(ref) for ref in b.registry.queryDatasets("injection_matches", collections=f"{OUT}/injection")]
    assert len(tables) == 8
    matches = vstack(tables)
    comp = completeness_from_matches(matches, 20.0, 27.0, 1.0)
    print(comp)
    bright = matches[matches["mag"] < 23.0]
    faint = matches[matches["mag"] > 26.0]
    c_bright = float(np.mean(bright["matched"]))
    c_faint = float(np.mean(faint["matched"]))
    print(f"completeness: mag<23 {c_bright:.3f} ({len(bright)}), mag>26 {c_faint:.3f} ({len(faint)})")
    assert c_bright > 0.9
    assert c_faint < 0.5 * c_bright
    good = matches[matches["matched"] & (matches["mag"] < 23.0)]
    assert np.median(np.asarray(good["match_distance"])) < 0.5
    # Recovered fluxes of bright injections are unbiased to a few per cent.
    ratio = np.asarray(good["det_flux_nJy"]) / np.asarray(good["flux_nJy"])
    assert abs(np.median(ratio) - 1.0) < 0.1


@pytest.mark.slow
def test_standard_pipeline_with_override(sim):
    out = f"{OUT}/standard"
    _pipetask(sim.root, "standard.yaml", sim.input_collection, out, "-c", "detection:thresholdSigma=10")
    b = _butler(sim, [out, sim.input_collection])
    n_det, n_match = 0, 0
    from userbatch.images.tasks.algorithms import match_positions

    for v in sim.visits:
        for d in sim.detectors:
            src = b.get("ub_sources", instrument="UBSim", visit=v, detector=d)
            truth = b.get("ub_truth", instrument="UBSim", visit=v, detector=d)
            stars = truth[(truth["type"] == "star") & (truth["mag"] < 22.0)]
            assert np.all(np.asarray(src["sn"]) > 10.0)
            idx, _ = match_positions(stars["x"], stars["y"], src["x"], src["y"], 1.5)
            n_det += len(stars)
            n_match += int((idx >= 0).sum())
    print(f"standard: {n_match}/{n_det} bright stars detected at 10 sigma")
    assert n_det > 0 and n_match >= 0.9 * n_det
    cfg = b.get("detection_config", collections=out)
    assert cfg.thresholdSigma == 10.0


def test_stamps_request_from_catalog_table(sim, spark, tmp_path_factory):
    """The object list from a real catalog table: region-pruned search (arrow and Spark engines) plus a filter."""
    import sys as _sys

    _sys.path.insert(0, str(ROOT / "tests"))
    from helpers import module_facility

    from userbatch.images.tasks.targets import stamps_request
    from userbatch.sky.regions import Cone
    from userbatch.tables.write import write_table

    cat = sim.catalog[["objectId", "coord_ra", "coord_dec", "flux", "type"]]
    with module_facility(tmp_path_factory, "images_targets"):
        write_table(spark.createDataFrame(cat), "ubsim.object")
        cone = Cone(sim.config.ra_deg, sim.config.dec_deg, 40.0)
        expect = cat[(cat["type"] == "star") & (cat["flux"] > BRIGHT_NJY)]
        expect = expect[cone.contains(expect["coord_ra"].to_numpy(), expect["coord_dec"].to_numpy())]
        where = f"type = 'star' AND flux > {BRIGHT_NJY}"
        got_arrow = stamps_request("ubsim.object", where=where, region=cone, engine="arrow")
        got_spark = stamps_request("ubsim.object", where=where, region=cone, engine="spark", extra_columns=["flux"])
        got_all = stamps_request("ubsim.object", where=where)
    assert len(expect) > 0
    assert set(got_arrow["objectId"]) == set(expect["objectId"]) == set(got_spark["objectId"])
    assert "flux" in got_spark.colnames
    assert set(got_all["objectId"]) >= set(expect["objectId"])


def test_cutout_from_config_in_process(sim):
    """Objects given in config (no targets dataset): the connection disappears; off-detector gives NoWorkFound."""
    from lsst.pipe.base import NoWorkFound

    from userbatch.images.tasks.cutout import CutoutConfig, CutoutConnections, CutoutTask

    b = _butler(sim, sim.input_collection)
    exp = b.get("calexp", instrument="UBSim", visit=sim.visits[0], detector=0)
    truth = b.get("ub_truth", instrument="UBSim", visit=sim.visits[0], detector=0)
    cfg = CutoutConfig()
    cfg.objectIds = [int(i) for i in truth["objectId"][:3]]
    cfg.ra = [float(v) for v in truth["coord_ra"][:3]]
    cfg.dec = [float(v) for v in truth["coord_dec"][:3]]
    cfg.stampSize = 21
    cfg.minOverlap = 0.01
    cfg.validate()
    assert "targets" not in CutoutConnections(config=cfg).inputs
    res = CutoutTask(config=cfg).run(exp)
    assert res.stamps.shape == (3, 21, 21)
    assert np.allclose(res.stampCatalog["x"], truth["x"][:3], atol=1e-6)
    cfg2 = CutoutConfig()
    cfg2.objectIds, cfg2.ra, cfg2.dec = [1], [sim.config.ra_deg + 1.0], [sim.config.dec_deg]
    with pytest.raises(NoWorkFound):
        CutoutTask(config=cfg2).run(exp)


def test_algorithms_on_synthetic_arrays():
    """The numpy algorithms alone: PSF models, polynomial sky recovery, detection centroids, one-to-one matching."""
    from userbatch.images.tasks.algorithms import detect_sources, estimate_background, match_positions
    from userbatch.images.tasks.exposure import add_point_source, psf_stamp

    for psf in ({"model": "gaussian", "fwhm_pix": 3.5}, {"model": "moffat", "fwhm_pix": 3.5, "beta": 3.0}):
        k = psf_stamp(psf, 41)
        assert k.sum() == pytest.approx(1.0)
        prof = psf_stamp(psf, 41, oversample=8)[20]  # row through the centre
        half = prof.max() / 2
        above = np.flatnonzero(prof >= half)
        assert 2.0 < above[-1] - above[0] + 1 < 5.5  # FWHM ~3.5 px at pixel resolution

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:200].astype(float)
    sky = 500 + 0.1 * xx - 0.05 * yy + 2e-4 * xx * yy
    psf = {"model": "gaussian", "fwhm_pix": 3.0}
    scene = np.zeros_like(sky)
    pos = [(50.3, 60.7), (120.6, 30.2), (150.1, 160.9), (52.0, 66.0)]  # the last two are a close pair
    for x, y in pos:
        add_point_source(scene, psf, x, y, 2e4)
    img = rng.normal(sky + scene, np.sqrt(sky))
    bkg, masked = estimate_background(img, sky, psf, method="masked_poly")
    assert np.abs(bkg - sky).mean() < 1.0 and masked.any()
    det = detect_sources(img - bkg, sky + scene, psf, threshold=5.0)
    idx, dist = match_positions([p[0] for p in pos], [p[1] for p in pos], det["x"], det["y"], 1.0)
    assert (idx >= 0).all() and np.nanmax(dist) < 0.3
    assert len(set(idx.tolist())) == len(pos)
    flux = det["flux"][idx]
    assert np.allclose(flux, 2e4, rtol=0.1)
