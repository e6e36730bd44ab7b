"""The web UI (``/ui``) over the REST API's test facility, without Spark or a browser: sign-in with a token and
the server-side session (refused tokens, logout, a revoked token), CSRF on every form (a POST without or with a
wrong token is refused and changes nothing), one user seeing nothing of another's on any page, admin-only pages,
and the pages themselves (runs, a run with its provenance graph, submit, quota, tables with a cone search)."""

from __future__ import annotations

import json
import re
import warnings
from types import SimpleNamespace

import pyarrow as pa
import pytest
from helpers import sky_points
from sqlalchemy import func, select
from test_api import CONFIG, XMATCH, _finish, _snapshot
from userbatch.facility.api import create_app
from userbatch.facility.models import ChargeRow, WebSessionRow
from userbatch.facility.web.svg import provenance_graph, provenance_svg, usage_bars_svg
from userbatch.tables.catalog import Catalog, TableEntry
from userbatch.tables.provenance import Provenance
from userbatch.tables.write import write_table

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _client(app) -> TestClient:
    tc = TestClient(app, follow_redirects=False)
    tc.__enter__()
    return tc


def sign_in(app, token: str) -> SimpleNamespace:
    """A browser of its own (cookie jar) signed in with ``token``; ``csrf`` is its session's form token."""
    tc = _client(app)
    r = tc.get("/ui/login")
    assert r.status_code == 200
    r = tc.post("/ui/login", data={"csrf": CSRF.search(r.text).group(1), "token": token, "next": "/ui/runs"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/runs"
    page = tc.get("/ui/runs")
    assert page.status_code == 200, page.text
    return SimpleNamespace(tc=tc, csrf=CSRF.search(page.text).group(1), cookie=tc.cookies.get("ub_session"))


@pytest.fixture
def web(db_url, facility, tmp_path):
    """The app over a fresh facility (test_api's: admin, A in team, B; public dp1.obj and dp1.gaia, A's private
    u_a.secret; one queued crossmatch run of A's) and a signed-in browser for each user."""
    fx = facility(CONFIG)
    bootstrap = fx.fac("admin")
    tokens = {u: bootstrap.create_token(u, label="test")["token"] for u in ("admin", "a", "b")}
    app = create_app(db_url, fx.config)
    for name in ("dp1.obj", "dp1.gaia"):
        Catalog(db_url, user="admin").register(TableEntry(name=name, location=str(tmp_path / name), format="parquet"))
    Catalog(db_url, user="a").register(TableEntry(name="u_a.secret", location=str(tmp_path / "secret"),
                                                  format="parquet", visibility="private"))
    run = fx.fac("a").submit(template="crossmatch", params={**XMATCH, "output": "u_a.xm"})
    browsers = {u: sign_in(app, t) for u, t in tokens.items()}
    env = SimpleNamespace(app=app, db_url=db_url, engine=fx.engine, config=fx.config, tokens=tokens, run=run["id"],
                          fx=fx, tmp=tmp_path, **browsers)
    yield env
    for b in browsers.values():
        b.tc.__exit__(None, None, None)


def _sessions(env) -> int:
    with env.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(WebSessionRow)).scalar()


# ------------------------------------------------------------------------------------------------ sign-in

def test_a_bad_token_is_refused_and_opens_no_session(web):
    before = _sessions(web)
    tc = _client(web.app)
    form = CSRF.search(tc.get("/ui/login").text).group(1)
    for token in ("", "not-a-token", web.tokens["a"] + "x"):
        r = tc.post("/ui/login", data={"csrf": form, "token": token})
        assert r.status_code == 401 and "sign-in refused" in r.text
        assert "ub_session" not in r.cookies
    assert _sessions(web) == before
    assert tc.get("/ui/runs").status_code == 303  # still not signed in


def test_the_sign_in_form_itself_needs_its_csrf_token(web):
    before = _sessions(web)
    tc = _client(web.app)
    tc.get("/ui/login")
    for data in ({"token": web.tokens["a"]}, {"token": web.tokens["a"], "csrf": "forged"}):
        r = tc.post("/ui/login", data=data)
        assert r.status_code == 403 and "ub_session" not in r.cookies
    fresh = _client(web.app)  # no login cookie at all (a cross-site form post)
    assert fresh.post("/ui/login", data={"token": web.tokens["a"], "csrf": "x"}).status_code == 403
    assert _sessions(web) == before


def test_the_session_cookie_is_httponly_and_samesite_strict(web):
    tc = _client(web.app)
    form = CSRF.search(tc.get("/ui/login").text).group(1)
    r = tc.post("/ui/login", data={"csrf": form, "token": web.tokens["a"]})
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("ub_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain http here; https marks it Secure
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx`")
        secure = TestClient(web.app, base_url="https://testserver", follow_redirects=False)
    form = CSRF.search(secure.get("/ui/login").text).group(1)
    r = secure.post("/ui/login", data={"csrf": form, "token": web.tokens["a"]})
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("ub_session="))
    assert "Secure" in cookie


PAGES = ["/ui/runs", "/ui/runs/rows", "/ui/submit", "/ui/quota", "/ui/tables", "/ui/tables/dp1.obj", "/ui/admin",
         "/ui/runs/{run}", "/ui/runs/{run}/live", "/ui/runs/{run}/log", "/ui/runs/{run}/export"]
POSTS = ["/ui/runs/{run}/cancel", "/ui/runs/{run}/rerun", "/ui/submit", "/ui/admin/quota", "/ui/logout"]


def test_without_a_session_every_page_redirects_to_sign_in_and_every_post_is_refused(web):
    tc = _client(web.app)
    for path in PAGES:
        r = tc.get(path.format(run=web.run))
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next="), path
    assert tc.get("/").headers["location"] == "/ui/runs"
    before = _snapshot(web)
    for path in POSTS:
        r = tc.post(path.format(run=web.run), data={"csrf": web.a.csrf, "kind": "user", "subject": "b",
                                                    "core_hours": "999", "template": "crossmatch"})
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login"), path
    assert _snapshot(web) == before
    # a forged cookie is no session either
    tc.cookies.set("ub_session", "forged")
    assert tc.get("/ui/runs").status_code == 303


def test_logout_ends_the_session_for_its_cookie(web):
    old = web.a.cookie
    r = web.a.tc.post("/ui/logout", data={"csrf": web.a.csrf})
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    stale = _client(web.app)
    stale.cookies.set("ub_session", old)
    assert stale.get("/ui/runs").status_code == 303
    assert web.b.tc.get("/ui/runs").status_code == 200  # another session lives on


def test_revoking_the_token_or_disabling_the_user_ends_the_session(web):
    admin = web.fx.fac("admin")
    tid = next(t["id"] for t in admin.tokens("a"))
    admin.revoke_token(tid)
    assert web.a.tc.get("/ui/runs").status_code == 303
    admin.set_active("b", False)
    assert web.b.tc.get("/ui/runs").status_code == 303


# ------------------------------------------------------------------------------------------------ CSRF

def test_every_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(web):
    cases = [(web.a, f"/ui/runs/{web.run}/cancel", {}),
             (web.a, "/ui/submit", {"template": "crossmatch", "params": json.dumps({**XMATCH, "output": "u_a.y"})}),
             (web.admin, "/ui/admin/quota", {"kind": "user", "subject": "b", "core_hours": "999"}),
             (web.a, "/ui/logout", {})]
    _finish(web, web.fx.fac("a").submit(template="crossmatch", params={**XMATCH, "output": "u_a.z"})["id"])
    done = web.fx.fac("a").runs(state="succeeded")[0]["id"]
    cases.append((web.a, f"/ui/runs/{done}/rerun", {}))
    before = _snapshot(web)
    for who, path, data in cases:
        for csrf in (None, "wrong", web.b.csrf):  # missing, made up, another session's
            body = dict(data, **({"csrf": csrf} if csrf else {}))
            r = who.tc.post(path, data=body)
            assert r.status_code == 403 and "CSRF" in r.text, (path, csrf, r.status_code)
        r = who.tc.post(path, json=dict(data, csrf=who.csrf))  # not a form: no token read from JSON
        assert r.status_code == 403, path
    assert _snapshot(web) == before, "a refused POST changed the facility"
    assert web.a.tc.get("/ui/runs").status_code == 200  # logout without the token did not sign out


def test_posts_with_the_token_act(web):
    r = web.a.tc.post(f"/ui/runs/{web.run}/cancel", data={"csrf": web.a.csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/ui/runs/{web.run}"
    assert web.fx.fac("a").status(web.run)["state"] == "cancelled"
    r = web.a.tc.post(f"/ui/runs/{web.run}/rerun", data={"csrf": web.a.csrf})
    assert r.status_code == 400 and "did not succeed" in r.text  # the facility's refusal, as a page
    done = web.fx.fac("a").submit(template="crossmatch", params={**XMATCH, "output": "u_a.xm2"})["id"]
    _finish(web, done)
    r = web.a.tc.post(f"/ui/runs/{done}/rerun", data={"csrf": web.a.csrf})
    assert r.status_code == 303, r.text
    new = r.headers["location"].rsplit("/", 1)[1]
    assert web.fx.fac("a").status(new)["rerun_of"] == done


# ------------------------------------------------------------------------------------------------ isolation

def test_b_sees_nothing_of_a_on_any_page_and_direct_urls_are_refused(web):
    secret_pages = ["/ui/runs", "/ui/runs?state=queued", "/ui/runs?state=active", "/ui/runs/rows",
                    "/ui/runs?kind=template", "/ui/submit", "/ui/quota", "/ui/tables", "/ui/tables/dp1.obj"]
    for path in secret_pages:
        r = web.b.tc.get(path)
        assert r.status_code == 200, path
        assert web.run not in r.text and "u_a.secret" not in r.text and "u_a.xm" not in r.text, path
    # the counterpart: A sees them
    assert web.run in web.a.tc.get("/ui/runs").text and web.run in web.a.tc.get("/ui/runs/rows").text
    assert "u_a.secret" in web.a.tc.get("/ui/tables").text
    for path in ("/ui/runs/{run}", "/ui/runs/{run}/live", "/ui/runs/{run}/log", "/ui/runs/{run}/export"):
        r = web.b.tc.get(path.format(run=web.run))
        assert r.status_code == 403 and "u_a" not in r.text, path
        assert web.a.tc.get(path.format(run=web.run)).status_code == 200, path
    r = web.b.tc.get("/ui/tables/u_a.secret")
    assert r.status_code == 404 and "belongs to" not in r.text
    assert web.a.tc.get("/ui/tables/u_a.secret").status_code == 200
    before = _snapshot(web)
    for path in (f"/ui/runs/{web.run}/cancel", f"/ui/runs/{web.run}/rerun"):
        assert web.b.tc.post(path, data={"csrf": web.b.csrf}).status_code == 403
    assert _snapshot(web) == before


def test_admin_page_is_for_admins_only(web):
    for who in (web.a, web.b):
        r = who.tc.get("/ui/admin")
        assert r.status_code == 403 and "only an admin" in r.text
        assert 'href="/ui/admin"' not in who.tc.get("/ui/runs").text
    before = _snapshot(web)
    r = web.a.tc.post("/ui/admin/quota", data={"csrf": web.a.csrf, "kind": "user", "subject": "a",
                                               "core_hours": "1000"})
    assert r.status_code == 403
    assert _snapshot(web) == before
    r = web.admin.tc.get("/ui/admin")
    assert r.status_code == 200
    for text in ('id="users"', 'id="quotas"', 'id="capacity"', "team", ">b<"):
        assert text in r.text


def test_a_quota_edit_as_admin_is_applied_and_audited(web):
    r = web.admin.tc.post("/ui/admin/quota", data={"csrf": web.admin.csrf, "kind": "user", "subject": "b",
                                                   "core_hours": "123.5", "max_cores": "", "storage_gb": "7"})
    assert r.status_code == 303, r.text
    q = web.fx.fac("b").quota_show()["user"]
    assert (q["core_hours"], q["storage_gb"], q["max_cores"]) == (123.5, 7.0, 4)
    audit = web.fx.fac("admin").audit_log(5)
    assert audit[0]["actor"] == "admin" and audit[0]["subject"] == "user:b"
    assert audit[0]["after"]["core_hours"] == 123.5 and audit[0]["before"]["core_hours"] == 10
    page = web.admin.tc.get(r.headers["location"]).text
    assert "quota of user b changed" in page and "123.5" in page
    r = web.admin.tc.post("/ui/admin/quota", data={"csrf": web.admin.csrf, "kind": "user", "subject": "b",
                                                   "core_hours": "lots"})
    assert r.status_code == 400 and "core_hours must be a number" in r.text


# ------------------------------------------------------------------------------------------------ pages

def test_runs_page_filters_and_refreshes_its_rows_with_htmx(web):
    page = web.a.tc.get("/ui/runs").text
    assert web.run in page and 'hx-get="/ui/runs/rows?state=&amp;kind="' in page and 'hx-trigger="every 3s"' in page
    assert '<script src="/ui/static/htmx.min.js"' in page and "https://" not in page and "http://" not in page
    assert web.run not in web.a.tc.get("/ui/runs?state=succeeded").text
    assert web.run in web.a.tc.get("/ui/runs?state=queued&kind=template").text
    assert web.run not in web.a.tc.get("/ui/runs?kind=workflow").text
    assert web.a.tc.get("/ui/runs?state=bogus").status_code == 400
    rows = web.a.tc.get("/ui/runs/rows?state=queued").text
    assert rows.startswith('<tbody id="runs-body"') and web.run in rows and "<html" not in rows
    js = web.a.tc.get("/ui/static/htmx.min.js")
    assert js.status_code == 200 and "Zero-Clause BSD" in js.text[:400] and "htmx" in js.text
    assert web.a.tc.get("/ui/static/../api.py").status_code == 404


def test_run_page_shows_parameters_progress_log_and_actions(web, tmp_path):
    page = web.a.tc.get(f"/ui/runs/{web.run}").text
    assert '&#34;radius_arcsec&#34;: 1.5' in page and 'id="progress"' in page and 'id="cancel"' in page
    assert 'hx-get="/ui/runs/' in page  # the live part refreshes while the run is active
    _finish(web, web.run)
    page = web.a.tc.get(f"/ui/runs/{web.run}").text
    assert 'id="rerun"' in page and 'id="cancel"' not in page and 'value="1"' in page
    assert "u_a.xm" in page and "dp1.obj" in page  # outputs and inputs from the result
    live = web.a.tc.get(f"/ui/runs/{web.run}/live").text
    assert "succeeded" in live and "hx-trigger" not in live  # a finished run stops polling
    assert 'id="history"' not in live  # no Spark application recorded: no History Server link
    from userbatch.facility.models import RunRow
    from userbatch.tables.db import transaction

    with transaction(web.engine) as s:
        s.get(RunRow, web.run).app_id = "local-4242"
    live = web.a.tc.get(f"/ui/runs/{web.run}/live").text
    assert re.search(r'id="history"', live) and "/history/local-4242/jobs/" in live


def test_run_page_draws_provenance_back_two_runs(web):
    """run 1 writes u_a.t1 from dp1.obj; run 2 reads u_a.t1 and writes u_a.t2: run 2's graph links to run 1."""
    fac = web.fx.fac("a")
    cat = Catalog(web.db_url, user="a", groups=("team",))
    rows = pa.Table.from_pandas(sky_points(300, seed=3), preserve_index=False)
    r1 = fac.submit(template="crossmatch", params={**XMATCH, "output": "u_a.t1"})["id"]
    r2 = fac.submit(template="crossmatch", params={**XMATCH, "output": "u_a.t2"})["id"]
    write_table(rows, "u_a.t1", catalog=cat, pixel_threshold=1000,
                provenance=Provenance(job="crossmatch", run_id=r1, user="a", inputs=[{"table": "dp1.obj",
                                                                                      "version": None}]))
    write_table(rows, "u_a.t2", catalog=cat, pixel_threshold=1000,
                provenance=Provenance(job="crossmatch", run_id=r2, user="a", inputs=[{"table": "u_a.t1",
                                                                                      "version": 0}]))
    from userbatch.facility import ledger
    from userbatch.facility.models import RunRow
    from userbatch.tables.db import transaction

    with transaction(web.engine, lock=True) as s:
        run = s.get(RunRow, r2)
        run.state, run.stage, run.ended_at = "succeeded", "succeeded", ledger.now()
        run.result = json.dumps({"inputs": [{"table": "u_a.t1", "version": 0}],
                                 "outputs": [{"table": "u_a.t2", "version": 0, "rows": 300}]})
        ledger.charge(s, run, 0.01, 0.01, "test")
    page = web.a.tc.get(f"/ui/runs/{r2}").text
    graph = page[page.index('<svg xmlns="http://www.w3.org/2000/svg" class="provenance"'):]
    graph = graph[: graph.index("</svg>")]
    for href in (f"/ui/runs/{r2}", f"/ui/runs/{r1}", "/ui/tables/u_a.t1", "/ui/tables/u_a.t2", "/ui/tables/dp1.obj"):
        assert f'href="{href}"' in graph, href
    # the table page: schema, history with the run that wrote it, and a cone search with a row limit
    t = web.a.tc.get("/ui/tables/u_a.t1").text
    assert "coord_ra" in t and f'href="/ui/runs/{r1}"' in t
    # the partition map: one polygon per partition (two if it straddles RA = 0), rows adding up to the table's,
    # each drawn where its pixel is (oracle: cdshealpix's own pixel of each point)
    import cdshealpix.nested as chn
    from astropy.coordinates import Latitude, Longitude

    polys = re.findall(r'<polygon class="partition" data-order="(\d+)" data-pixel="(\d+)" data-rows="(\d+)"', t)
    parts = {(int(o), int(p)): int(n) for o, p, n in polys}
    assert sum(parts.values()) == 300 and len(polys) >= len(parts) > 1
    pts = sky_points(300, seed=3)
    for (order, pixel), n in parts.items():
        pix = chn.lonlat_to_healpix(Longitude(pts.coord_ra.values, "deg"), Latitude(pts.coord_dec.values, "deg"),
                                    order)
        assert int((pix == pixel).sum()) == n
    hit = sky_points(300, seed=3).iloc[0]
    t = web.a.tc.get("/ui/tables/u_a.t1", params={"ra": hit.coord_ra, "dec": hit.coord_dec,
                                                 "radius_arcsec": 1}).text
    assert 'id="cone"' in t and str(int(hit.objectId)) in t
    t = web.a.tc.get("/ui/tables/u_a.t1", params={"ra": 0, "dec": 0, "radius_arcsec": 648000}).text
    assert "300 rows; the first 50 shown" in t and t.count("<tr>") <= 50 + 40
    t = web.a.tc.get("/ui/tables/u_a.t1", params={"ra": 0, "dec": 95, "radius_arcsec": 1}).text
    assert 'id="error"' in t
    # B cannot read them
    assert web.b.tc.get("/ui/tables/u_a.t1").status_code in (200, 404)


def test_provenance_graph_levels_and_escaping():
    tree = {"table": "u_a.t2", "version": 0, "run_id": "r2", "inputs": [
        {"table": "u_a.t1", "version": 0, "run_id": "r1", "inputs": [{"table": "dp1.obj", "version": 3}]},
        {"path": "/data/<x>.csv"}]}
    nodes, edges = provenance_graph([tree])
    assert {k: n["level"] for k, n in nodes.items()} == {
        "t:u_a.t2@0": 0, "r:r2": 1, "t:u_a.t1@0": 2, "r:r1": 3, "t:dp1.obj@3": 4, "i:path=/data/<x>.csv": 2}
    assert ("r:r1", "t:u_a.t1@0") in edges and ("t:u_a.t1@0", "r:r2") in edges and ("t:dp1.obj@3", "r:r1") in edges
    svg = provenance_svg([tree])
    assert "<x>" not in svg and "&lt;x&gt;" in svg and svg.count("<line") == len(edges)
    assert provenance_svg([]) == ""
    bars = usage_bars_svg([{"label": "user <a>", "used": 2, "reserved": 1, "limit": 10}], "core-hours")
    assert "&lt;a&gt;" in bars and 'class="allocation"' in bars


def test_submit_page_queues_a_templated_job_and_shows_refusals(web):
    page = web.a.tc.get("/ui/submit").text
    assert "crossmatch" in page and 'name="csrf"' in page and ">team<" in page
    n = len(web.fx.fac("a").runs())
    r = web.a.tc.post("/ui/submit", data={"csrf": web.a.csrf, "template": "crossmatch",
                                          "params": "left: dp1.obj\nright: dp1.gaia\nradius_arcsec: 2\n"
                                                    "output: u_a.web", "group": "team"})
    assert r.status_code == 303, r.text
    new = r.headers["location"].rsplit("/", 1)[1]
    run = web.fx.fac("a").status(new)
    assert run["state"] == "queued" and run["group"] == "team" and run["params"]["radius_arcsec"] == 2
    for params, status, text in (("[1, 2]", 400, "must be a mapping"), ("a: [", 400, "not YAML"),
                                 (json.dumps({**XMATCH, "output": "u_b.x"}), 403, "u_a")):
        r = web.a.tc.post("/ui/submit", data={"csrf": web.a.csrf, "template": "crossmatch", "params": params})
        assert r.status_code == status and text in r.text, (params, r.status_code, r.text[-300:])
    r = web.b.tc.post("/ui/submit", data={"csrf": web.b.csrf, "template": "crossmatch", "group": "team",
                                          "params": json.dumps({**XMATCH, "output": "u_b.x"})})
    assert r.status_code == 403
    assert len(web.fx.fac("a").runs()) == n + 1


def test_quota_page_plots_use_against_the_allocation(web):
    page = web.a.tc.get("/ui/quota").text
    assert 'class="usage"' in page and "user a" in page and "group team" in page and 'class="allocation"' in page
    assert 'id="storage"' in page
    assert "nothing charged yet" in page  # no run has finished: no line over time
    done = [web.fx.fac("a").submit(template="crossmatch", params={**XMATCH, "output": f"u_a.t{i}"})["id"]
            for i in range(2)]
    for run_id in done:
        _finish(web, run_id)  # each charges 0.01 core-hours
    q = web.fx.fac("a").quota_show()
    (mine,) = [u for u in q["usage"] if u["subject_kind"] == "user"]
    with web.engine.connect() as conn:  # oracle: the charges themselves
        charged = conn.execute(select(func.sum(ChargeRow.core_hours)).where(ChargeRow.user == "a")).scalar()
    assert len(mine["points"]) == 2 and mine["points"][-1][1] == pytest.approx(charged) == q["user"]["used"]
    assert [p[1] for p in mine["points"]] == sorted(p[1] for p in mine["points"])  # cumulative
    page = web.a.tc.get("/ui/quota").text
    line = re.search(r'<polyline class="used-over-time" data-subject="user a" points="([^"]+)"', page)
    assert line and len(line.group(1).split()) == 2 * 2 + 1  # a step per charge, then on to the end
    page = web.b.tc.get("/ui/quota").text
    assert "user b" in page and "team" not in page and "user a" not in page


def test_classifier_runs_link_to_mlflow_when_its_ui_is_configured(web):
    from userbatch.facility.config import parse_config
    from userbatch.facility.web.routes import mlflow_links

    train = {"mlflow": {"run_id": "abc123", "experiment_id": "7", "registered_model": "varclass",
                        "model_version": 3}}
    ui = parse_config({"mlflow": {"ui_url": "http://127.0.0.1:5000/"}}).mlflow_ui_url()
    assert ui == "http://127.0.0.1:5000"
    assert mlflow_links(train, ui) == [("MLflow run abc123", "http://127.0.0.1:5000/#/experiments/7/runs/abc123"),
                                      ("model varclass v3", "http://127.0.0.1:5000/#/models/varclass/versions/3")]
    classify = {"model": {"name": "var class", "version": 2}}
    assert mlflow_links(classify, ui) == [("model var class v2",
                                           "http://127.0.0.1:5000/#/models/var%20class/versions/2")]
    assert mlflow_links(train, None) == [] and mlflow_links({}, ui) == []
    from userbatch.facility.config import ConfigError

    with pytest.raises(ConfigError, match="ui_url must be an http"):
        parse_config({"mlflow": {"ui_url": "javascript:alert(1)"}})
    page = web.a.tc.get(f"/ui/runs/{web.run}").text  # this facility names no MLflow UI: no links
    assert 'id="mlflow"' not in page
