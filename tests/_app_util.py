"""What the web-app tests share: a free port, the app started as a user starts it (`secondsight-app` in its own
process), and the ranking `secondsight-search` gives for the same probe and gallery."""

import json, os, socket, subprocess, sys, time, urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
LOCAL = "127.0.0.1,localhost"


def local_env(**extra):
    "The environment for the app and its clients: no proxy for localhost (Gradio's start-up check obeys proxies)."
    env = {**os.environ, "NO_PROXY": LOCAL, "no_proxy": LOCAL, "SECONDSIGHT_DEBUG": ""}
    env.update(extra)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningApp:
    "`secondsight-app` in a subprocess; `.url`, `.log()`, `.stop()`."

    def __init__(self, weights, gallery, cache_dir, log_path, extra=(), timeout=180):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = Path(log_path)
        cmd = [
            str(BIN / "secondsight-app"),
            "--weights",
            str(weights),
            "--gallery",
            str(gallery),
        ]
        cmd += [
            "--port",
            str(self.port),
            "--cache-dir",
            str(cache_dir),
            "--device",
            "cpu",
            *extra,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            env=local_env(),
        )
        t0 = time.time()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"secondsight-app exited {self.proc.returncode}:\n{self.log()}"
                )
            try:
                if opener.open(self.url, timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"secondsight-app did not answer in {timeout} s:\n{self.log()}"
        )

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def cli_ranking(weights, probe, gallery, cache_dir, out, top_k=10, rerank=False):
    "`[(gallery file relative to the gallery, distance)]` as `secondsight-search` ranks them."
    cmd = [
        str(BIN / "secondsight-search"),
        "--weights",
        str(weights),
        "--probe",
        str(probe),
    ]
    cmd += ["--gallery", str(gallery), "--top-k", str(top_k), "--output-dir", str(out)]
    cmd += ["--cache-dir", str(cache_dir), "--device", "cpu"] + (
        ["--rerank"] if rerank else []
    )
    r = subprocess.run(cmd, capture_output=True, text=True, env=local_env())
    assert r.returncode == 0, r.stderr
    matches = json.loads((Path(out) / "ranking.json").read_text())["matches"]
    root = Path(gallery).resolve()
    return [
        (Path(m["path"]).resolve().relative_to(root).as_posix(), m["distance"])
        for m in matches
    ]
