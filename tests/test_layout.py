"""The package's layout shows the data flow: each module is one notebook, numbered in reading order, and a
module imports only modules that come before it, at its top (heavy optional libraries aside, which load inside
the functions that need them: see `test_light_import.py`)."""

import ast, json, re
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "secondsight"


def reading_order() -> dict:
    "module name -> the number of the notebook it is exported from."
    order = {}
    for nb in sorted((REPO / "nbs").glob("[0-9][0-9]_*.ipynb")):
        src = "\n".join(
            "".join(c["source"])
            for c in json.loads(nb.read_text())["cells"]
            if c["cell_type"] == "code"
        )
        m = re.search(r"^#\|\s*default_exp\s+(\S+)", src, re.M)
        if m:
            order[m.group(1)] = int(nb.name[:2])
    return order


ORDER = reading_order()
MODULES = sorted(p.stem for p in PKG.glob("*.py") if not p.stem.startswith("_"))


def internal_imports(path: Path):
    "`(module imported, line, at top level?)` for every import of a secondsight module in `path`."
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                mods = [node.module.split(".")[0]]
            elif node.level == 1:
                mods = [a.name for a in node.names]
            elif (node.module or "").startswith("secondsight."):
                mods = [node.module.split(".")[1]]
            else:
                continue
        elif isinstance(node, ast.Import):
            mods = [
                a.name.split(".")[1]
                for a in node.names
                if a.name.startswith("secondsight.")
            ]
        else:
            continue
        for m in mods:
            yield m, node.lineno, id(node) in top


def test_every_module_has_a_notebook():
    assert set(MODULES) <= set(ORDER), set(MODULES) - set(ORDER)
    assert len(set(ORDER.values())) == len(ORDER), "one notebook number per module"


@pytest.mark.parametrize("name", MODULES)
def test_imports_come_earlier_and_at_the_top(name):
    for mod, line, at_top in internal_imports(PKG / f"{name}.py"):
        assert mod in ORDER, f"{name}.py:{line} imports unknown module {mod}"
        assert ORDER[mod] < ORDER[name], (
            f"{name}.py:{line} imports {mod}, which comes later in the reading order"
        )
        assert at_top, (
            f"{name}.py:{line}: package-internal import of {mod} inside a function; put it at the top"
        )


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text(
        "from .viz import x\ndef f():\n    from secondsight.search import y\n"
    )
    assert list(internal_imports(bad)) == [("viz", 1, True), ("search", 3, False)]


@pytest.mark.parametrize("name", MODULES)
def test_module_size(name):
    n = len((PKG / f"{name}.py").read_text().splitlines())
    assert n <= 360, (
        f"{name}.py has {n} lines: a module a reader can hold in one sitting stays under about 350"
    )
