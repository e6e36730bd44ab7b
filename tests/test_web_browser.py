"""The web UI in a real browser: Debian's headless Chromium driven by Selenium against ``create_app`` under uvicorn
on 127.0.0.1, over a facility with a worker launching real Spark runs. It signs in, submits a templated cross-match
and watches its run page until ``succeeded`` with the progress bar moving, cancels another run, submits a second
cross-match that reads the first's output and follows the provenance graph back to the first run, edits a quota as
admin, and checks that user B sees none of user A's private runs or tables. Screenshots are saved under the test's
tmp dir and copied to ``$USERBATCH_SCREENSHOTS`` (default ``/tmp/userbatch-web-screenshots``), printed at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import module_facility, sky_points

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh --services installs them)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra has it)")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CONFIG = """
capacity: {cores: 100, user_fraction: 0.10}
defaults:
  user:  {core_hours: 20, max_cores: 4, storage_gb: 5}
  group: {core_hours: 50, max_cores: 8, storage_gb: 50}
admins: [admin]
runs: {max_concurrent: 1, default_cores: 1, default_max_hours: 0.5}
"""
SHOTS = Path(os.environ.get("USERBATCH_SCREENSHOTS", "/tmp/userbatch-web-screenshots"))  # noqa: SIM112


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(session_home, tmp_path_factory):
    """The UI at ``url`` over a facility with input tables dp1.left / dp1.right (public) and A's private
    u_a.secret, tokens for admin, a and b, and a worker thread."""
    import uvicorn

    from userbatch.facility.api import create_app
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.write import write_table

    with module_facility(tmp_path_factory, "web_browser", CONFIG) as fx:
        left = sky_points(4000, seed=21)
        right = left.sample(2500, random_state=5).assign(objectId=lambda d: d.objectId + 100_000)
        admin_cat = Catalog(fx.db_url, user="admin")
        for name, df in (("dp1.left", left), ("dp1.right", right)):
            write_table(pa.Table.from_pandas(df, preserve_index=False), name, catalog=admin_cat,
                        pixel_threshold=400, margin_radius_arcsec=5)
        admin = fx.fac("admin")
        tokens = {u: admin.create_token(u, label="browser")["token"] for u in ("admin", "a", "b")}
        write_table(pa.Table.from_pandas(left.head(50), preserve_index=False), "u_a.secret",
                    catalog=Catalog(fx.db_url, user="a"), visibility="private", pixel_threshold=400)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(fx.db_url, fx.config), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True, name="web-ui")
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.1)
        try:
            with fx.worker():
                yield {"url": f"http://127.0.0.1:{port}", "tokens": tokens, "fx": fx}
        finally:
            server.should_exit = True
            thread.join(timeout=15)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    out = tmp_path_factory.mktemp("screenshots")
    yield out
    SHOTS.mkdir(parents=True, exist_ok=True)
    for f in sorted(out.glob("*.png")):
        shutil.copy2(f, SHOTS / f.name)
    print(f"\nweb UI screenshots: {out} (copied to {SHOTS})")


def _browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="module")
def browsers(site):
    made = {}

    def get(user):
        if user not in made:
            d = made[user] = _browser()
            d.get(site["url"] + "/ui/runs")
            assert "/ui/login" in d.current_url  # not signed in: sent to the sign-in page
            d.find_element(By.ID, "token").send_keys(site["tokens"][user])
            d.find_element(By.ID, "sign-in").click()
            _until(lambda: d.current_url.endswith("/ui/runs"), 30, "sign-in")
            assert d.find_element(By.ID, "me").text == user
        return made[user]

    yield get
    for d in made.values():
        d.quit()


def _until(cond, timeout_s: float, what: str, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _text(d, element_id: str) -> str:
    """An element's text, or "" while htmx is swapping it for a fresh copy."""
    try:
        return d.find_element(By.ID, element_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _submit(d, url: str, params: str) -> str:
    d.get(url + "/ui/submit?template=crossmatch")  # the form comes with the template chosen
    d.find_element(By.ID, "params").send_keys(params)
    d.find_element(By.ID, "submit").click()
    try:
        _until(lambda: "/ui/runs/" in d.current_url, 30, "the run page after submit")
    except AssertionError:
        errors = d.find_elements(By.ID, "error")
        raise AssertionError(f"submit refused: {errors[0].text if errors else d.page_source[-2000:]}") from None
    return d.find_element(By.ID, "run-id").text


def test_the_facility_in_a_browser(site, browsers, shots):
    url, a = site["url"], browsers("a")
    a.save_screenshot(str(shots / "01-runs-empty.png"))

    # a templated cross-match, and a second run to cancel while the first holds the only run slot
    first = _submit(a, url, "left: dp1.left\nright: dp1.right\nradius_arcsec: 2\noutput: u_a.t1\n")
    a.save_screenshot(str(shots / "02-submitted.png"))
    doomed = _submit(a, url, "left: dp1.left\nright: dp1.right\nradius_arcsec: 3\noutput: u_a.doomed\n")
    a.find_element(By.ID, "cancel").click()
    _until(lambda: _text(a, "state") == "cancelled", 60, "the cancel")
    a.save_screenshot(str(shots / "03-cancelled.png"))

    # the first run's page, refreshed by htmx alone (no reload), until it succeeds; the progress bar is read often
    a.get(f"{url}/ui/runs/{first}")
    seen: list[tuple[str, int, int]] = []

    def progressed():
        try:
            state = a.find_element(By.ID, "state").text
            bar = a.find_element(By.ID, "progress")
            value = (state, int(bar.get_attribute("data-done")), int(bar.get_attribute("data-total")))
        except (NoSuchElementException, StaleElementReferenceException):  # htmx swapped it out: read again
            return False
        if not seen or seen[-1] != value:
            seen.append(value)
            if value[0] == "running" and value[2] and not (shots / "04-running.png").exists():
                a.save_screenshot(str(shots / "04-running.png"))
        return value[0] in ("succeeded", "failed", "cancelled")

    _until(progressed, 540, f"run {first} to end (seen {seen})", poll_s=0.2)
    a.save_screenshot(str(shots / "05-succeeded.png"))
    print(f"\nprogress seen on the run page of {first}: {seen}")
    assert seen[-1][0] == "succeeded", seen
    assert seen[-1][1] == seen[-1][2] > 0, seen
    # read while the run was running, then full: the bar moved under htmx alone (a short job's tasks may all fall
    # between two refreshes, so a reading with tasks in flight is printed above, not required)
    assert any(s[0] == "running" for s in seen), f"the run page never showed the run running: {seen}"
    assert len({(d, t) for _, d, t in seen}) >= 2, f"the bar never moved: {seen}"

    # the runs page lists both, with their states
    a.get(url + "/ui/runs")
    assert a.find_element(By.CSS_SELECTOR, f"#run-{first} .state-succeeded")
    assert a.find_element(By.CSS_SELECTOR, f"#run-{doomed} .state-cancelled")
    a.save_screenshot(str(shots / "06-runs.png"))

    # a second run reads the first's output; on its page the graph links back to the first run
    second = _submit(a, url, "left: u_a.t1\nright: dp1.right\nradius_arcsec: 2\n"
                     "left_columns: [objectId, coord_ra, coord_dec]\noutput: u_a.t2\n")
    _until(lambda: _text(a, "state") in ("succeeded", "failed"), 540, f"run {second}")
    assert _text(a, "state") == "succeeded", _text(a, "live")
    a.get(f"{url}/ui/runs/{second}")
    graph = a.find_element(By.CSS_SELECTOR, "#provenance svg")
    links = {e.get_dom_attribute("href") for e in graph.find_elements(By.CSS_SELECTOR, "a")}  # SVG: not a property
    assert {f"/ui/runs/{second}", f"/ui/runs/{first}", "/ui/tables/u_a.t1", "/ui/tables/dp1.left"} <= links, links
    a.execute_script("arguments[0].scrollIntoView()", graph)  # the graph is below the fold
    a.save_screenshot(str(shots / "07-provenance.png"))
    a.find_element(By.CSS_SELECTOR, f'#provenance a[href="/ui/runs/{first}"]').click()
    _until(lambda: a.current_url.endswith(f"/ui/runs/{first}"), 30, "the first run's page")
    assert a.find_element(By.ID, "run-id").text == first

    # tables: the output's history names the run, and a cone search answers a small table
    a.get(url + "/ui/tables/dp1.left")
    hit = sky_points(4000, seed=21).iloc[7]
    a.find_element(By.ID, "ra").send_keys(str(hit.coord_ra))
    a.find_element(By.ID, "dec").send_keys(str(hit.coord_dec))
    a.find_element(By.ID, "radius").send_keys("1")
    a.find_element(By.ID, "search").click()  # a click does not wait for the page it submits to
    _until(lambda: a.find_elements(By.ID, "cone") or a.find_elements(By.ID, "error"), 60, "the cone search")
    assert not a.find_elements(By.ID, "error"), a.find_element(By.ID, "error").text
    assert str(int(hit.objectId)) in a.find_element(By.ID, "cone").text
    a.save_screenshot(str(shots / "08-cone-search.png"))
    a.get(url + "/ui/quota")
    assert a.find_element(By.CSS_SELECTOR, "#hours-chart svg")
    a.save_screenshot(str(shots / "09-quota.png"))

    # an admin edits B's quota; the audit trail shows it
    admin = browsers("admin")
    admin.get(url + "/ui/admin")
    row = admin.find_element(By.ID, "quota-user-b")
    row.find_element(By.NAME, "core_hours").send_keys("77")
    row.find_element(By.TAG_NAME, "button").click()
    _until(lambda: "done=" in admin.current_url, 30, "the quota edit")
    assert admin.find_element(By.CSS_SELECTOR, "#quota-user-b .core_hours").text == "77"
    assert "quota" in admin.find_element(By.ID, "audit").text and "user:b" in admin.find_element(By.ID, "audit").text
    admin.save_screenshot(str(shots / "10-admin.png"))
    assert site["fx"].fac("b").quota_show()["user"]["core_hours"] == 77

    # B sees none of A's runs or tables, and A's pages are refused
    b = browsers("b")
    for path in ("/ui/runs", "/ui/runs?state=succeeded", "/ui/tables", "/ui/quota", "/ui/submit"):
        b.get(url + path)
        text = b.page_source
        for secret in (first, second, doomed, "u_a.secret", "u_a.t1", "u_a.t2"):
            assert secret not in text, (path, secret)
    b.get(f"{url}/ui/runs/{first}")
    assert "belongs to a" in b.find_element(By.ID, "error").text
    b.get(url + "/ui/tables/u_a.secret")
    assert "u_a.secret" in b.find_element(By.ID, "error").text and "belongs" not in b.page_source
    b.get(url + "/ui/admin")
    assert "only an admin" in b.find_element(By.ID, "error").text
    b.save_screenshot(str(shots / "11-b-refused.png"))
    # sign out: the session is gone
    b.find_element(By.ID, "logout").click()
    _until(lambda: "/ui/login" in b.current_url, 30, "sign-out")
    b.get(url + "/ui/runs")
    assert "/ui/login" in b.current_url
