"""The built docs site in a real browser: headless Chromium opens the index page and a module page served over HTTP,
and the rendered DOM must hold the sidebar with every module's link, the marks of Quarto's scripts having run, and
the page's figures, each fetched from the server and a real PNG. The index page's screenshot is kept as a CI
artifact in `${CI_ARTIFACTS:-_docs/_ci}/index.png`. Skips, saying why, when `_docs/` is not built (`nbdev-docs`)
or `chromium` is not installed."""

import os, re, shutil, socket, struct, subprocess, sys, tempfile, time
from html.parser import HTMLParser
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "_docs"
CHROMIUM = (
    os.environ.get("CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
    or shutil.which("google-chrome")
)
MODULE_PAGES = sorted(
    re.sub(r"^\d\d_", "", p.stem) + ".html"
    for p in (REPO / "nbs").glob("[0-9][0-9]_*.ipynb")
)


def _skip_reason():
    if not (DOCS / "index.html").exists():
        return (
            f"{DOCS.name}/index.html not found: build the site with `nbdev-docs` first"
        )
    if CHROMIUM is None:
        return "`chromium` not found: `apt-get install -y chromium` to run the browser check"


pytestmark = pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "")
if _skip_reason():
    print(f"test_site_browser: skipped: {_skip_reason()}", file=sys.stderr)


class _Dom(HTMLParser):
    "What the checks read from a rendered DOM: sidebar links, images, classes, the title."

    def __init__(self):
        super().__init__(convert_charrefs=True)
        (
            self.stack,
            self.sidebar_links,
            self.imgs,
            self.classes,
            self.ids,
            self.title,
            self._in_title,
        ) = [], [], [], set(), set(), "", False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        self.classes.update((a.get("class") or "").split())
        if tag == "a" and "quarto-sidebar" in self.ids and self._in_sidebar():
            self.sidebar_links.append(a.get("href", ""))
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "nav" and a.get("id") == "quarto-sidebar":
            self.stack.append("sidebar")
        elif tag == "nav":
            self.stack.append("nav")
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        if tag == "nav" and self.stack:
            self.stack.pop()
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def _in_sidebar(self):
        return "sidebar" in self.stack


def png_size(path: Path):
    "(width, height) of a PNG file, or None if it is not one."
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "`python -m http.server` over `_docs/` on a free port; yields (base URL, a function returning the request log)."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("server") / "requests.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
            cwd=DOCS,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the docs server did not start")
        yield f"http://127.0.0.1:{port}/", log.read_text
    finally:
        proc.terminate()
        proc.wait(10)


def chromium(*args, timeout=120):
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--window-size=1280,2400",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def rendered(base: str, page: str) -> _Dom:
    dom = _Dom()
    dom.feed(chromium("--virtual-time-budget=5000", "--dump-dom", base + page))
    dom.close()
    return dom


def check_page(base, requests, page, title_has, min_imgs):
    dom = rendered(base, page)
    assert title_has in dom.title, (
        f"{page}: title {dom.title!r} (the page did not render?)"
    )
    # the sidebar, with a link to every module page
    assert "quarto-sidebar" in dom.ids, f"{page}: no sidebar in the rendered page"
    linked = {
        h.split("#")[0].removeprefix("./").split("/")[-1] for h in dom.sidebar_links
    }
    assert set(MODULE_PAGES) <= linked, (
        f"{page}: sidebar lacks {sorted(set(MODULE_PAGES) - linked)}"
    )
    # Quarto's scripts ran in the browser (they add the heading anchors and the search box)
    assert "anchorjs-link" in dom.classes and "aa-Autocomplete" in dom.classes, (
        f"{page}: site scripts did not run"
    )
    # the figures: files in the site, real PNGs of some size, fetched by the browser with HTTP 200
    imgs = [s for s in dom.imgs if s and not re.match(r"^[a-z]+:", s)]
    assert len(imgs) >= min_imgs, (
        f"{page}: {len(imgs)} figures, expected at least {min_imgs}: {imgs}"
    )
    log = requests()
    for src in imgs:
        f = DOCS / src
        assert f.is_file(), f"{page}: figure {src} is not in the site"
        if f.suffix == ".png":
            wh = png_size(f)
            assert wh and min(wh) >= 50 and f.stat().st_size > 2000, (
                f"{page}: {src} is not a real picture ({wh}, {f.stat().st_size} bytes)"
            )
        assert re.search(rf'"GET /{re.escape(src)} HTTP/[\d.]+" 200', log), (
            f"{page}: the browser did not fetch {src}"
        )
    return dom


def test_module_page_renders(server):
    base, requests = server
    check_page(base, requests, "viz.html", "secondsight", min_imgs=3)


def test_index_page_renders_and_screenshot(server):
    base, requests = server
    check_page(base, requests, "index.html", "secondsight", min_imgs=1)
    out = Path(os.environ.get("CI_ARTIFACTS") or DOCS / "_ci")
    if not out.is_absolute():
        out = REPO / out
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "index.png"
    shot.unlink(missing_ok=True)
    chromium("--virtual-time-budget=5000", f"--screenshot={shot}", base + "index.html")
    wh = png_size(shot)
    assert wh == (1280, 2400) and shot.stat().st_size > 50_000, (
        wh,
        shot.stat().st_size,
    )
    print(f"screenshot of the index page: {shot}")
