"""The web app in a real browser, as a person uses it: headless Chromium (Debian's `chromium` and `chromium-driver`,
driven with Selenium) opens `secondsight-app`, uploads a probe, presses Search, and the ranking read from the page
must be `secondsight-search`'s for the same probe and gallery; a click on the first result shows the probe and the
result side by side with their Grad-CAM maps, and "use as probe" then finds that very image first. The gallery is a
few real Market-1501 crops copied at run time with the model-zoo OSNet (`REID_DATA_ROOT` and
`../shared/peers/osnet_x0_25_market1501.pth`), else the synthetic gallery with an untrained model (said in the
output). The screenshot is a CI artifact: `${CI_ARTIFACTS:-outputs/ci}/app.png` (never committed: Market images).

`python tests/test_app_browser.py nbs/images/app.png` writes the docs' screenshot from the synthetic gallery."""

import os, shutil, sys, tempfile, time, urllib.request
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = (
    os.environ.get("CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
)
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)
PEER = REPO.parent / "shared" / "peers" / "osnet_x0_25_market1501.pth"
ARTIFACTS = Path(os.environ.get("CI_ARTIFACTS") or REPO / "outputs" / "ci")


def _skip_reason():
    for mod, what in [("gradio", "the app extra (gradio)"), ("selenium", "selenium")]:
        try:
            __import__(mod)
        except ImportError:
            return f"{what} not installed: pip install -e '.[dev]'"
    if CHROMIUM is None or DRIVER is None:
        return "chromium or chromedriver not found: apt-get install -y chromium chromium-driver"


needs_browser = pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "")


def test_the_browser_check_runs_in_ci():
    # .ci/run installs chromium and chromium-driver: there the browser test must not skip itself away
    if os.environ.get("CI") == "true" and _skip_reason():
        pytest.fail(f"CI without the browser test: {_skip_reason()}")


sys.path.insert(0, str(Path(__file__).parent))
from _app_util import RunningApp, cli_ranking, local_env  # noqa: E402

os.environ.update(local_env())


def market_gallery(root, out, n_same=6, n_other=24):
    "`(probe, gallery folder)`: a Market-1501 query crop, its identity's gallery crops and distractors, copied."
    from secondsight.data import market_ids

    test = sorted((Path(root) / "bounding_box_test").glob("*.jpg"))
    ids = {p: market_ids(p.name) for p in test}
    for query in sorted(
        (Path(root) / "query").glob("*.jpg")
    ):  # the first query seen by other cameras too
        pid, cam = market_ids(query.name)
        same = [p for p in test if ids[p][0] == pid]
        if sum(ids[p][1] != cam for p in same) >= 2:
            break
    same = sorted(
        same, key=lambda p: ids[p][1] == cam
    )  # other cameras first: the true matches
    other = [p for p in test if ids[p][0] not in (pid, -1, 0)]
    other = other[:: max(1, len(other) // n_other)][:n_other]
    (out / "gallery").mkdir(parents=True)
    (out / "probe").mkdir()
    for p in same[:n_same] + other:
        shutil.copy(p, out / "gallery" / p.name)
    return Path(shutil.copy(query, out / "probe" / query.name)), out / "gallery"


def synthetic_gallery(out):
    "`(probe, gallery folder, weights)`: the synthetic Market-1501 and an untrained model."
    import torch
    from secondsight.config import Config
    from secondsight.datasets import make_fake_market
    from secondsight.model import ReIDModel, save_inference

    market = make_fake_market(out / "market", test_ids=6, per_cam=2, size=(64, 128))
    cfg = Config()
    cfg.data.height, cfg.data.width = 128, 64
    torch.manual_seed(0)
    w = save_inference(
        ReIDModel(backbone="resnet18").eval(), cfg, out / "model_inference.pth"
    )
    return sorted((market / "query").glob("*.jpg"))[0], market / "bounding_box_test", w


def browser(width=1400, height=1500):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        f"--window-size={width},{height}",
    ):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(DRIVER), options=o)


def wait(driver, cond, timeout=120, what=""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.3).until(
        lambda d: cond(d), message=what
    )


def table(driver):
    "The ranking table on the page: `[{column: text}]` (read in one script, so a re-render cannot interleave)."
    return driver.execute_script("""
        const t = document.querySelector('#table table'); if (!t) return [];
        const heads = [...t.querySelectorAll('th')].map(th => th.textContent.trim());
        return [...t.querySelectorAll('tbody tr')].map(tr => Object.fromEntries(
            [...tr.querySelectorAll('td')].map((td, i) => [heads[i], td.textContent.trim()])));""")


def search_page(driver, url, probe, truth=False):
    "Upload `probe`, press Search, wait for the table: the rows."
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#probe input[type=file]"),
        what="the probe upload",
    )
    driver.find_element(By.CSS_SELECTOR, "#probe input[type=file]").send_keys(
        str(probe)
    )
    wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#probe img"),
        what="the uploaded probe shown",
    )
    if truth:
        driver.find_element(By.CSS_SELECTOR, "#truth input").click()
    driver.find_element(By.ID, "search").click()
    return wait(driver, table, what="the ranking table")


def click_first(driver):
    "Click the first result: `(selected name, Grad-CAM picture URL)`."
    from selenium.webdriver.common.by import By

    driver.find_elements(By.CSS_SELECTOR, "#results button.thumbnail-item")[0].click()
    name = wait(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, "#selected textarea").get_attribute(
            "value"
        ),
        what="the selection",
    )
    img = wait(
        driver,
        lambda d: [
            i
            for i in d.find_elements(By.CSS_SELECTOR, "#detail img")
            if d.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", i
            )
        ],
        what="the Grad-CAM picture",
    )
    return name, img[0].get_attribute("src")


@pytest.fixture(scope="module")
def setup():
    tmp = Path(tempfile.mkdtemp(prefix="secondsight-browser-"))
    root = os.environ.get("REID_DATA_ROOT")
    if root and Path(root, "query").is_dir() and PEER.exists():
        probe, gallery = market_gallery(root, tmp)
        weights, kind = PEER, "Market-1501 crops, model-zoo OSNet"
    else:
        probe, gallery, weights = synthetic_gallery(tmp)
        kind = "synthetic gallery, untrained model (REID_DATA_ROOT or the peer weights missing)"
    print(f"browser test on: {kind}")
    app = RunningApp(weights, gallery, tmp / "cache_app", tmp / "app.log")
    yield dict(tmp=tmp, probe=probe, gallery=gallery, weights=weights, app=app)
    app.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@needs_browser
def test_search_click_and_gradcam_in_the_browser(setup):
    from PIL import Image
    from selenium.webdriver.common.by import By

    s, t0 = setup, time.time()
    want = cli_ranking(
        s["weights"],
        s["probe"],
        s["gallery"],
        s["tmp"] / "cache_cli",
        s["tmp"] / "cli",
        top_k=10,
    )
    d = browser()
    try:
        rows = search_page(d, s["app"].url, s["probe"], truth=True)
        got = [(r["file"], float(r["distance"])) for r in rows]
        assert [f for f, _ in got] == [f for f, _ in want], (got, want)
        assert all(
            abs(a - b) < 1e-4 for (_, a), (_, b) in zip(got, want)
        )  # the page prints 4 decimals
        assert all(r["truth"] in ("match", "wrong", "junk") for r in rows)
        name, src = click_first(d)
        assert name == got[0][0]
        pic = s["tmp"] / "detail.png"
        pic.write_bytes(
            urllib.request.build_opener(urllib.request.ProxyHandler({}))
            .open(src)
            .read()
        )
        w, h = Image.open(pic).size
        assert w > 4 * 128 and h > 256, (
            w,
            h,
        )  # probe, result and two Grad-CAM overlays
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        d.execute_script("window.scrollTo(0, 0)")
        d.save_screenshot(str(ARTIFACTS / "app.png"))
        print(f"screenshot: {ARTIFACTS / 'app.png'}; {time.time() - t0:.0f} s")
        d.find_element(
            By.ID, "use"
        ).click()  # the clicked result becomes the probe: it must now come first
        wait(
            d,
            lambda d: (
                Path(
                    d.find_element(By.CSS_SELECTOR, "#probe img").get_attribute("src")
                ).name
                == Path(name).name
            ),
            what="the new probe",
        )
        d.find_element(By.ID, "search").click()
        again = wait(
            d,
            lambda d: [
                r for r in table(d) if r["rank"] == "1" and float(r["distance"]) < 1e-3
            ],
            what="the new ranking",
        )
        assert again[0]["file"] == name
    finally:
        d.quit()


if __name__ == "__main__":  # the docs' screenshot, from the synthetic gallery
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "nbs/images/app.png")
    tmp = Path(tempfile.mkdtemp(prefix="secondsight-shot-"))
    probe, gallery, weights = synthetic_gallery(tmp)
    app = RunningApp(weights, gallery, tmp / "cache", tmp / "app.log")
    d = browser(1400, 1100)
    try:
        search_page(d, app.url, probe, truth=True)
        click_first(d)
        d.execute_script("window.scrollTo(0, 0)")
        time.sleep(1)
        d.save_screenshot(str(out))
        print(f"wrote {out}")
    finally:
        d.quit()
        app.stop()
        shutil.rmtree(tmp, ignore_errors=True)
