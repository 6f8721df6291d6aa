"""`import secondsight` and its modules stay light: the heavy optional libraries load only inside the
functions that need them. Each check runs in a fresh interpreter, so nothing imported by the test
session itself can hide a leak."""

import importlib.util, json, pkgutil, subprocess, sys
import pytest
import secondsight

HEAVY = (
    "torchvision",
    "cv2",
    "matplotlib",
    "ipywidgets",
    "kagglehub",
    "faiss",
    "numba",
    "onnx",
    "onnxruntime",
    "gradio",
)
MODULES = sorted(
    m.name
    for m in pkgutil.iter_modules(secondsight.__path__)
    if not m.name.startswith("_")
)


def heavy_after_import(stmt):
    "The heavy modules present in `sys.modules` after running `stmt` in a fresh interpreter."
    code = f"import sys, json\n{stmt}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_modules_found():
    # the package exports at least the foundation's module; an empty list would make the checks below vacuous
    assert "config" in MODULES


def test_import_secondsight_is_light():
    assert heavy_after_import("import secondsight") == []


@pytest.mark.parametrize("name", MODULES)
def test_module_is_light(name):
    assert heavy_after_import(f"import secondsight.{name}") == []


def test_detector_sees_a_heavy_import():
    # the check can fail: importing torchvision directly is reported
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision not installed")
    assert "torchvision" in heavy_after_import("import torchvision")
