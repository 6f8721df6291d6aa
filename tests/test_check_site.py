"""`tools/check_site.py` passes a good site and fails on each thing it promises to catch: a link to a page that does
not exist, an anchor that is not in its page (the way nbdev links a backticked private name), a missing image."""

import importlib.util
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "check_site", REPO / "tools" / "check_site.py"
)
check_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_site)
URL = "https://example.github.io/proj/"


def page(body: str, ids=("top",), root="") -> str:
    heads = "".join(f'<h2 id="{i}">{i}</h2>' for i in ids)
    return f'<!DOCTYPE html><html><head><link rel="stylesheet" href="{root}styles.css"></head><body>{heads}{body}</body></html>'


@pytest.fixture
def site(tmp_path):
    "A tiny good site: two pages, a tutorial in a sub-folder, an image, symbol links in nbdev's absolute form."
    (tmp_path / "styles.css").write_text("body {}")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "fig.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "index.html").write_text(
        page(
            '<a href="viz.html">viz</a> <a href="./viz.html#plot_gallery">plot_gallery</a> <a href="#top">up</a>'
            f' <a href="{URL}viz.html#plot_gallery">symbol</a> <a href="https://pytorch.org/docs/x.html#nothing">ext</a>'
            ' <a href="tutorials/">tutorials</a> <a href="mailto:a@b.c">mail</a> <img src="img/fig.png">'
            ' <img src="data:image/png;base64,AAAA">'
        )
    )
    (tmp_path / "viz.html").write_text(
        page('<a href="index.html">home</a>', ids=("top", "plot_gallery"))
    )
    (tmp_path / "tutorials").mkdir()
    (tmp_path / "tutorials" / "index.html").write_text(
        page(
            '<a href="../viz.html#plot_gallery">x</a> <img src="../img/fig.png">',
            root="../",
        )
    )
    (tmp_path / "sitemap.xml").write_text(
        f"<urlset><url><loc>{URL}tutorials/index.html</loc></url>"
        f"<url><loc>{URL}index.html</loc></url></urlset>"
    )
    return tmp_path


def add_to(path: Path, html: str):
    path.write_text(path.read_text().replace("</body>", html + "</body>"))


def test_good_site_passes(site, capsys):
    assert check_site.site_url_of(site) == URL
    assert check_site.check_site(site) == []
    assert check_site.main([str(site)]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "html,expect",
    [
        ('<a href="missing.html">x</a>', "missing.html does not exist"),
        (
            '<a href="../viz.html#_merge">x</a>',
            'no id "_merge" in viz.html',
        ),  # relative link, bad anchor
        (
            f'<a href="{URL}viz.html#_candidates_columns">x</a>',
            'no id "_candidates_columns" in viz.html',
        ),  # nbdev symbol link
        (
            '<a href="#nowhere">x</a>',
            'no id "nowhere" in tutorials/index.html',
        ),  # same-page anchor
        ('<img src="../img/gone.png">', "img/gone.png does not exist"),
        ('<a href="../../outside.html">x</a>', "points outside the site"),
    ],
)
def test_each_break_fails(site, capsys, html, expect):
    add_to(site / "tutorials" / "index.html", html)
    problems = check_site.check_site(site)
    assert (
        len(problems) == 1
        and problems[0].startswith("tutorials/index.html: ")
        and expect in problems[0]
    ), problems
    assert check_site.main([str(site)]) == 1
    out = capsys.readouterr().out
    assert expect in out and "1 problem(s)" in out


def test_every_problem_is_listed(site):
    add_to(site / "index.html", '<a href="viz.html#a">a</a><a href="viz.html#b">b</a>')
    add_to(site / "viz.html", '<img src="nope.png">')
    assert sorted(check_site.check_site(site)) == [
        'index.html: <a href="viz.html#a">: no id "a" in viz.html',
        'index.html: <a href="viz.html#b">: no id "b" in viz.html',
        'viz.html: <img src="nope.png">: nope.png does not exist',
    ]


def test_empty_folder_fails(tmp_path):
    assert check_site.check_site(tmp_path) == [
        f"{tmp_path}: no HTML pages (was the site built?)"
    ]


def test_site_url_option(site):
    "Without a sitemap, links under the site's URL are checked only when the URL is given."
    (site / "sitemap.xml").unlink()
    add_to(site / "viz.html", f'<a href="{URL}viz.html#_merge">x</a>')
    assert check_site.check_site(site) == []
    assert check_site.check_site(site, URL.rstrip("/")) == [
        f'viz.html: <a href="{URL}viz.html#_merge">: no id "_merge" in viz.html'
    ]
