"""Every command speaks the same language and fails the same way: a user's mistake is one line on stderr naming
the file or value, with a non-zero exit and no traceback (`SECONDSIGHT_DEBUG=1` brings the traceback back).
Runs the installed console scripts, as a user would."""

import os, shutil, subprocess, sys
from pathlib import Path
import pytest

COMMANDS = [
    "download",
    "check-data",
    "train",
    "evaluate",
    "search",
    "visualize",
    "export",
    "demo",
    "app",
]


def script(name):
    "The console script `secondsight-<name>` installed beside this interpreter (or on PATH)."
    p = Path(sys.executable).parent / f"secondsight-{name}"
    return str(p) if p.exists() else shutil.which(f"secondsight-{name}")


def run(name, *args, cwd=None, **env):
    return subprocess.run(
        [script(name), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "SECONDSIGHT_DEBUG": "", **env},
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("cli")

    class Evil:
        def __reduce__(self):
            return (print, ("this ran while loading",))

    torch.save({"model": Evil()}, d / "evil.pth")
    (d / "noise.pth").write_bytes(os.urandom(500))
    (d / "probe.jpg").write_bytes(b"")
    (d / "gallery").mkdir()
    return d


@pytest.mark.parametrize("name", COMMANDS)
def test_help(name):
    r = run(name, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: secondsight-"), r.stderr
    for flag in (
        "--output-dir",
        "--device",
    ):  # the shared vocabulary, where a command has outputs or a model
        if name in ("evaluate", "search", "visualize", "export", "demo", "train"):
            assert flag in r.stdout, (name, flag)
    assert "--out " not in r.stdout and "--out=" not in r.stdout, (
        "outputs go to --output-dir"
    )


MISTAKES = [  # (command, arguments, what the one line must name)
    ("download", ["--handle", "not-a-handle"], "not-a-handle"),
    ("train", ["--config", "missing.yaml"], "missing.yaml"),
    ("train", ["--set", "solver.lr=1"], "solver.lr"),
    ("evaluate", ["--weights", "missing.pth"], "missing.pth"),
    ("evaluate", ["--weights", "{d}/evil.pth"], "refused"),
    ("evaluate", ["--weights", "{d}/noise.pth"], "noise.pth"),
    (
        "search",
        [
            "--weights",
            "missing.pth",
            "--probe",
            "{d}/probe.jpg",
            "--gallery",
            "{d}/gallery",
        ],
        "missing.pth",
    ),
    ("visualize", ["--weights", "missing.pth"], "missing.pth"),
    ("export", ["--weights", "{d}/evil.pth"], "refused"),
    ("demo", ["--weights", "missing.pth"], "missing.pth"),
    ("check-data", ["--dataset", "folders", "--data-root", "missing"], "missing"),
    ("app", ["--weights", "missing.pth", "--gallery", "{d}/gallery"], "missing.pth"),
]


@pytest.mark.parametrize(
    "name,args,names", MISTAKES, ids=[f"{m[0]}-{m[2]}" for m in MISTAKES]
)
def test_user_error_is_one_line(name, args, names, files, tmp_path):
    args = [a.format(d=files) for a in args]
    r = run(name, *args, cwd=tmp_path)
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert (
        len(lines) == 1
        and lines[0].startswith(f"secondsight-{name}: ")
        and names in lines[0]
    ), r.stderr


def test_debug_shows_the_traceback(tmp_path):
    r = run("evaluate", "--weights", "missing.pth", cwd=tmp_path, SECONDSIGHT_DEBUG="1")
    assert (
        r.returncode != 0 and "Traceback" in r.stderr and "missing.pth" in r.stderr
    ), r.stderr


@pytest.mark.parametrize(
    "name,flag",
    [("evaluate", "--weights"), ("search", "--probe"), ("export", "--weights")],
)
def test_required_flags(name, flag, tmp_path):
    r = run(name, cwd=tmp_path)
    assert r.returncode == 2 and "required" in r.stderr and flag in r.stderr, r.stderr


def test_bad_calibration_is_one_line(tmp_path):
    # secondsight-search --calibration: a missing or foreign file stops the search in one line, before any work
    from secondsight.model import ReIDModel, save_inference

    save_inference(
        ReIDModel(0, backbone="osnet_x0_25", pretrained="none"),
        None,
        tmp_path / "w.pth",
    )
    (tmp_path / "gallery").mkdir()
    (tmp_path / "probe.jpg").write_bytes(b"")
    (tmp_path / "bad.json").write_text("{}")
    for cal, names in (
        ("missing.json", "missing.json"),
        ("bad.json", "not a secondsight calibration"),
    ):
        r = run(
            "search",
            *("--weights", "w.pth", "--probe", "probe.jpg", "--gallery", "gallery"),
            *("--calibration", cal),
            cwd=tmp_path,
        )
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode != 0 and len(lines) == 1, r.stderr
        assert lines[0].startswith("secondsight-search: ") and names in lines[0], (
            r.stderr
        )
