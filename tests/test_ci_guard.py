"""`.ci/check-clean` is what makes CI fail when a notebook's exported cell was edited without running
`nbdev-export`. We prove it on a throw-away copy of the repository: the copy passes as it is, and fails
once an exported cell of `nbs/01_config.ipynb` is changed behind nbdev's back."""

import json, shutil, subprocess
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def repo_copy(tmp_path):
    if shutil.which("nbdev-export") is None:
        pytest.skip("nbdev is not installed")
    files = _run(["git", "ls-files"], REPO).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    dst = tmp_path / "repo"
    for f in files:
        if not (REPO / f).exists():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst / f)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        assert _run(cmd, dst).returncode == 0
    return dst


def test_check_clean_passes_then_catches_unexported_edit(repo_copy):
    ok = _run(["bash", ".ci/check-clean"], repo_copy)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    nb_path = repo_copy / "nbs/04_datasets.ipynb"
    nb = json.loads(nb_path.read_text())
    cell = next(
        c
        for c in nb["cells"]
        if c["cell_type"] == "code"
        and "".join(c["source"]).startswith("#| export\nDATA_ROOT_HELP")
    )
    cell["source"] = [
        s.replace("The data root: `data_root`", "The data root: the flag `data_root`")
        for s in cell["source"]
    ]
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    _run(["git", "add", "-A"], repo_copy)
    _run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "edit the notebook only",
        ],
        repo_copy,
    )
    bad = _run(["bash", ".ci/check-clean"], repo_copy)
    assert bad.returncode != 0
    assert "secondsight/datasets.py" in bad.stderr
