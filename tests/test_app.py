"""The web app (`secondsight-app`) as its users and its attackers meet it, on a synthetic gallery and an untrained
model: the `/search` API through `gradio_client` gives `secondsight-search`'s ranking; concurrent clients get their
own results; paths outside the app's own files, non-raster uploads and URL-typed file paths (SSRF) are refused;
Gradio's monitoring, run history, MCP and share features are absent; and starting the app connects nowhere."""

import concurrent.futures, http.client, json, os, subprocess, sys, textwrap, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import pytest

pytest.importorskip(
    "gradio", reason="the web app needs the app extra: pip install -e '.[app]'"
)
from _app_util import RunningApp, cli_ranking, free_port, local_env  # noqa: E402

# gradio_client's Client(analytics_enabled=False) alone is not enough (6.31 / client 2.7: the flag is or-ed with
# GRADIO_ANALYTICS_ENABLED, which defaults to on), so the tests' clients get the variable too.
os.environ.update(local_env(GRADIO_ANALYTICS_ENABLED="False"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    import torch
    from secondsight.config import Config
    from secondsight.datasets import make_fake_market
    from secondsight.model import ReIDModel, save_inference

    tmp = tmp_path_factory.mktemp("app")
    market = make_fake_market(tmp / "market", test_ids=4)
    cfg = Config()
    cfg.data.height, cfg.data.width = 64, 32
    torch.manual_seed(0)
    weights = save_inference(
        ReIDModel(backbone="resnet18").eval(), cfg, tmp / "model_inference.pth"
    )
    gallery = market / "bounding_box_test"
    (gallery / ".hidden.jpg").write_bytes(
        (market / "query").glob("*.jpg").__next__().read_bytes()
    )
    app = RunningApp(weights, gallery, tmp / "cache_app", tmp / "app.log")
    yield dict(
        tmp=tmp,
        weights=weights,
        gallery=gallery,
        probes=sorted((market / "query").glob("*.jpg")),
        app=app,
    )
    app.stop()


def client(url):
    from gradio_client import Client

    return Client(url, analytics_enabled=False, verbose=False, download_files=False)


def api_ranking(c, probe, **kw):
    from gradio_client import handle_file

    out = c.predict(probe=handle_file(str(probe)), api_name="/search", **kw)
    return [(m["file"], m["distance"]) for m in out[0]["matches"]]


def same_ranking(a, b):
    assert [f for f, _ in a] == [f for f, _ in b]
    assert all(abs(x - y) <= 1e-5 * max(1.0, abs(y)) for (_, x), (_, y) in zip(a, b)), (
        a,
        b,
    )


@pytest.mark.parametrize("rerank", [False, True])
def test_api_search_is_the_cli_ranking(synth, rerank):
    c = client(synth["app"].url)
    probe = synth["probes"][0]
    got = api_ranking(c, probe, top_k=8, rerank=rerank)
    want = cli_ranking(
        synth["weights"],
        probe,
        synth["gallery"],
        synth["tmp"] / "cache_cli",
        synth["tmp"] / f"cli{rerank}",
        8,
        rerank,
    )
    assert len(got) == 8
    same_ranking(got, want)


def test_api_documents_the_named_endpoints(synth):
    info = client(synth["app"].url).view_api(print_info=False, return_format="dict")
    assert {"/search", "/explain", "/use_as_probe"} <= set(info["named_endpoints"]), (
        info["named_endpoints"].keys()
    )
    assert not [e for e in info["named_endpoints"] if "flag" in e]


def test_explain_and_use_as_probe(synth):
    c = client(synth["app"].url)
    from gradio_client import handle_file

    first = api_ranking(c, synth["probes"][0], top_k=3)[0][0]
    pic = c.predict(
        probe=handle_file(str(synth["probes"][0])), name=first, api_name="/explain"
    )
    assert str(pic).endswith(".png") or "path" in str(pic)
    new_probe, _ = c.predict(name=first, api_name="/use_as_probe")
    assert (
        Path(
            str(
                new_probe.get("path", new_probe)
                if isinstance(new_probe, dict)
                else new_probe
            )
        ).name
        == Path(first).name
    )
    with pytest.raises(Exception, match="not an image of this gallery"):
        c.predict(
            probe=handle_file(str(synth["probes"][0])),
            name="../../model_inference.pth",
            api_name="/explain",
        )


def test_concurrent_clients_get_their_own_results(synth):
    probes = synth["probes"][:4]
    alone = {p: api_ranking(client(synth["app"].url), p, top_k=6) for p in probes}
    assert len({tuple(f for f, _ in r) for r in alone.values()}) > 1, (
        "the probes must rank differently for this test to mean anything"
    )

    def one(p):
        return p, api_ranking(client(synth["app"].url), p, top_k=6)

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        for p, r in ex.map(one, probes * 3):
            same_ranking(r, alone[p])


def raw(url, method="GET", path="/", body=None, headers=None):
    "`(status, body)` of a raw request: http.client sends the path exactly as written (no normalisation)."
    host, port = url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


def test_only_the_apps_own_files_are_served(synth):
    app, w, g = synth["app"], str(synth["weights"]), synth["gallery"]
    # a file the app itself serves (a result tile), fetched the way the page fetches it: the positive control
    c = client(app.url)
    from gradio_client import handle_file

    tiles = c.predict(
        probe=handle_file(str(synth["probes"][0])), top_k=2, api_name="/search"
    )[1]
    tile = tiles[0]["image"]["path"]
    status, body = raw(app.url, path="/gradio_api/file=" + tile)
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
    secret = Path(w).read_bytes()[:64]
    # inside the app's own cache, files Gradio alone would serve but the app never writes: a dotfile, a text file
    hidden, text = (
        Path(tile).with_name(".hidden.png"),
        Path(tile).with_name("notes.txt"),
    )
    hidden.write_bytes(secret)
    text.write_bytes(secret)
    bad = [
        "/gradio_api/file=" + str(hidden),
        "/gradio_api/file=" + str(text),
        "/gradio_api/file=" + w,  # the weights
        "/gradio_api/file="
        + str(
            g / "0101_c1s1_001000_00.jpg"
        ),  # the gallery itself: shown only as copies
        "/gradio_api/file=" + str(g / ".hidden.jpg"),  # a dotfile
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file=../../../../../../etc/passwd",
        "/gradio_api/file=" + tile.rsplit("/", 2)[0] + "/../../../../../etc/passwd",
        "/gradio_api/file=%2Fetc%2Fpasswd",
        "/gradio_api/file=%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/gradio_api/file=%252Fetc%252Fpasswd",
        "/gradio_api/file=" + w.replace("/", "%2F"),
        "/gradio_api/file=file:///etc/passwd",
        "/gradio_api/file=http://127.0.0.1:1/x.png",
        "/gradio_api/proxy=http://127.0.0.1:1/x.png",
        "/file=/etc/passwd",
        "/file=" + w,
    ]
    for path in bad:
        status, body = raw(app.url, path=path)
        assert status in (403, 404), (path, status)
        assert b"root:" not in body and secret not in body, path


def _upload(url, name, data):
    boundary = "xsecondsightboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return raw(
        url,
        "POST",
        "/gradio_api/upload",
        body,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


def test_uploads_raster_images_only(synth):
    url = synth["app"].url
    status, body = _upload(url, "p.jpg", synth["probes"][0].read_bytes())
    assert status == 200, body  # the positive control: a JPEG is stored
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.cookie)"></svg>'
    for name, data in [
        ("x.svg", svg),
        ("x.html", b"<html><script>alert(1)</script></html>"),
        ("x.png", b"<html><script>alert(1)</script></html>"),
    ]:
        status, body = _upload(url, name, data)
        assert status == 415 and b"raster images only" in body, (name, status, body)
        # and the file was not left in the app's cache
    big = b"x" * (11 * 1024 * 1024)
    assert _upload(url, "big.jpg", big)[0] in (413, 400), (
        "a file over max_file_size is refused"
    )


class _Counter(BaseHTTPRequestHandler):
    hits = []

    def do_GET(self):
        _Counter.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"not a probe")

    def log_message(self, *a):
        pass


def test_url_typed_file_paths_are_refused(synth):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{srv.server_address[1]}/probe.png"
    try:
        url = synth["app"].url
        for path in [
            target,
            "//127.0.0.1/probe.png",
            target.replace(":", "%3A").replace("/", "%2F"),
        ]:
            payload = {
                "data": [
                    {"path": path, "meta": {"_type": "gradio.FileData"}},
                    None,
                    5,
                    False,
                    "all",
                    False,
                ]
            }
            status, body = raw(
                url,
                "POST",
                "/gradio_api/call/search",
                json.dumps(payload).encode(),
                {"Content-Type": "application/json"},
            )
            assert status == 403 and b"not given as URLs" in body, (path, status, body)
        with pytest.raises(Exception):
            from gradio_client import handle_file

            client(url).predict(probe=handle_file(target), api_name="/search")
        assert raw(url, path="/gradio_api/file=" + target)[0] == 403
        assert _Counter.hits == [], _Counter.hits
    finally:
        srv.shutdown()


def test_outward_features_are_absent(synth):
    url = synth["app"].url
    for path in [
        "/gradio_api/monitoring",
        "/monitoring",
        "/gradio_api/runs",
        "/gradio_api/mcp/sse",
        "/gradio_api/mcp/schema",
    ]:
        status, _ = raw(url, path=path)
        assert status in (404, 403, 405), (path, status)
    status, body = raw(url, path="/config")
    cfg = json.loads(body)
    assert cfg.get("analytics_enabled") is False and cfg.get("run_history") is False, {
        k: cfg.get(k) for k in ("analytics_enabled", "run_history")
    }
    assert not [d for d in cfg["dependencies"] if "flag" in str(d.get("api_name"))]


HARNESS = """
import json, socket, sys, os
seen = []
LOCAL = ('127.0.0.1', '::1', 'localhost', '0.0.0.0', '')
real_connect, real_gai = socket.socket.connect, socket.getaddrinfo
def connect(self, addr):
    host = addr[0] if isinstance(addr, tuple) else str(addr)
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in LOCAL: seen.append(('connect', host))
    return real_connect(self, addr)
def gai(host, *a, **k):
    if host not in LOCAL and host is not None: seen.append(('resolve', host))
    return real_gai(host, *a, **k)
socket.socket.connect, socket.getaddrinfo = connect, gai
os.environ.update(NO_PROXY='127.0.0.1,localhost', no_proxy='127.0.0.1,localhost')
{body}
import time, urllib.request; time.sleep(3)  # threads started at launch (a version check) get their chance
urllib.request.build_opener(urllib.request.ProxyHandler({{}})).open(url).read()
print('SEEN ' + json.dumps(seen))
page.close()
"""


def _connections(body, timeout=240):
    code = HARNESS.format(body=textwrap.dedent(body))
    env = {
        k: v for k, v in local_env().items() if k != "GRADIO_ANALYTICS_ENABLED"
    }  # the app must switch it off itself
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("SEEN ")]
    assert line, r.stdout + r.stderr
    return json.loads(line[-1][5:])


def test_starting_the_app_connects_nowhere(synth):
    seen = _connections(f"""
        from secondsight.app import prepare_app
        from secondsight.serve import launch_app
        app, info = prepare_app({str(synth["weights"])!r}, {str(synth["gallery"])!r}, device='cpu', cache_dir={str(synth["tmp"] / "cache_h")!r})
        page = launch_app(app, info, port={free_port()}, block=False, quiet=True)
        url = page.local_url
    """)
    assert seen == [], seen


def test_the_connection_check_can_fail():
    # the same harness around a plain Gradio page with its defaults sees the analytics / version check go out
    seen = _connections("""
        import gradio as gr
        with gr.Blocks() as page: gr.Markdown('hi')
        page.launch(prevent_thread_lock=True, quiet=True, ssr_mode=False)
        url = page.local_url
    """)
    assert seen, "a default Gradio start should try to reach the internet"


def test_the_apps_folder_is_deleted_on_exit(synth):
    # runs last: it stops the module's app (SIGTERM, as a service manager stops it) and looks for its folder
    from gradio_client import handle_file

    tiles = client(synth["app"].url).predict(
        probe=handle_file(str(synth["probes"][0])), top_k=1, api_name="/search"
    )[1]
    work = Path(tiles[0]["image"]["path"]).parents[2]
    assert work.name.startswith("secondsight-app-") and work.is_dir(), work
    synth["app"].stop()
    assert synth["app"].proc.returncode == 0, synth["app"].log()
    assert not work.exists(), f"{work} left behind"
