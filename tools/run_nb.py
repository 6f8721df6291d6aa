"""Run notebooks top to bottom and save their outputs, so the docs pages show what the text promises.

    python tools/run_nb.py [--flags slow] nbs/17_viz.ipynb [more.ipynb ...]

Each notebook runs in its own folder with nbdev's execnb (as `nbdev-test` does: cells flagged `slow` or `cuda`
are skipped unless named in `--flags`). A cell whose source has a line `# output not saved` runs, but its outputs
are dropped (for pictures of Market-1501 crops, whose terms forbid redistributing them).
The outputs are written back only when every cell ran, and refused when they hold a machine path
(`/work/`, `/tmp/`, `/home/`, `/root/`) or a raw progress-bar line: fix the cell (print a relative name, pass
`progress=False`) and run again."""
import os, re, subprocess, sys, time
from pathlib import Path
from fastcore.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

FLAGS = ('slow', 'cuda')
NOSAVE = re.compile(r'^\s*# output not saved', re.M)
BAD = re.compile(r'/(work|tmp|home|root)/|\r|\d+%\|[#█▏▎▍▌▋▊▉ ]*\|')

def _text(o):
    if 'text' in o: return ''.join(o['text'])
    d = o.get('data', {})
    return ''.join(''.join(d[k]) for k in ('text/plain', 'text/markdown', 'text/html') if k in d)

def run(path:Path, flags=()):
    os.environ['TQDM_DISABLE'] = '1'  # progress bars are for people watching, not for saved pages
    nb = read_nb(path)
    cwd = os.getcwd(); os.chdir(path.parent)
    try:
        sh = CaptureShell(path.parent, mpl_format="png")
        t = time.perf_counter()
        for i, c in enumerate(nb.cells):
            if c.cell_type != 'code': continue
            c.outputs = []
            skip = [f for f in FLAGS if f not in flags] + ['eval:\\s*false']
            if re.search(r'^\s*#\|\s*(' + '|'.join(skip) + r')\b', c.source, re.M): continue
            sh.cell(c)  # runs the cell and stores its outputs on it
            errs = [o for o in c.outputs if o.get('output_type') == 'error']
            if NOSAVE.search(c.source): c.outputs = []
            if errs: raise SystemExit(f"{path}: cell {i} failed: {errs[0].get('ename')}: {errs[0].get('evalue')}\n{c.source[:300]}")
            bad = [m.group(0) for o in c.outputs for m in [BAD.search(_text(o))] if m]
            if bad: raise SystemExit(f"{path}: cell {i} prints a machine path or a progress bar ({bad[0]!r}):\n{c.source[:300]}")
    finally: os.chdir(cwd)
    for c in nb.cells:
        if c.cell_type == 'code': c.execution_count = None
    write_nb(nb, path)
    subprocess.run(['nbdev-clean', '--fname', str(path)], check=True)
    print(f"{path}: outputs saved ({time.perf_counter() - t:.0f} s)")

if __name__ == '__main__':
    args, flags = sys.argv[1:], ()
    if args[:1] == ['--flags']: flags, args = tuple(args[1].split()), args[2:]
    for p in args: run(Path(p), flags)
