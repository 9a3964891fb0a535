"""Every Python code block in the repository's Markdown runs as written.

Conventions (also in README, "Tests"):

- Every Markdown file under the repository root is found by walking it (``.git``,
  virtual environments, build folders and other dot-folders are skipped), so pages and
  blocks added later are covered without touching this file.
- A fenced block whose info string is ``python`` (or ``py``/``python3``) is run. All
  Python blocks of one file run in order, in ONE subprocess, in one shared namespace,
  like a notebook: a later block may use names an earlier one defined. Each file runs in
  a fresh temporary working directory, with a time limit (``_TIME_LIMIT``).
- ``<!-- illustrative: reason -->`` on the line before a block: not run (the reason is
  required). Use it sparingly.
- ``<!-- setup: what it provides`` + lines of code + ``-->`` before a block: that code
  runs just before the block, hidden on the rendered page; for the names a snippet
  presupposes (a model of the right kind, a batch, a knowledge base).
- A fenced block with the info string ``output`` after a Python block (prose between is
  fine, no other block) is that block's exact standard output.
- A commented-out assignment directly below an assignment to the same name
  (``path = demo_model_path()`` then ``# path = "chinese_L-12_H-768_A-12"``) is the
  documented alternative: the block runs a second time with it swapped in.
- Checkpoint substitution: when a file's code names ``chinese_L-12_H-768_A-12``, that
  folder is created in the working directory as Google's layout (``bert_config.json``,
  ``bert_model.ckpt.*``, ``vocab.txt``) holding the shipped demo model's weights, so
  snippets written for Google's BERT-base run unchanged.

``python tests/test_docs.py SPEC.json`` is the runner the subprocess executes.
"""
import contextlib
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import traceback

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL_CHECKPOINT_DIR = "chinese_L-12_H-768_A-12"
PYTHON_INFOS = {"python", "py", "python3"}
# Folders that are not the project's own pages: VCS data, environments, build output.
_SKIP_DIRS = {"node_modules", "build", "dist", "site-packages", "venv", "env", "__pycache__", "runs"}
_TIME_LIMIT_BASE = 90   # seconds per file: one TensorFlow import and model builds on a loaded CPU
_TIME_LIMIT_PER_BLOCK = 30

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
_COMMENT = re.compile(r"<!--\s*(illustrative|setup)\s*:(.*?)-->", re.S)


def markdown_files(root=REPO_ROOT):
    """The project's Markdown pages, relative to ``root``, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                         and not d.endswith(".egg-info"))
        found += [pathlib.Path(folder, f).relative_to(root) for f in files if f.lower().endswith(".md")]
    return sorted(found)


def parse_blocks(text, name="<md>"):
    """Fenced blocks of a Markdown text: dicts with ``info``, ``line`` (1-based line of
    the first code line), ``code``, ``mark`` ('illustrative', 'setup' or None),
    ``mark_text`` (the reason, or the setup's description), ``setup`` (code) and for
    Python blocks ``expected_output`` (or None)."""
    lines = text.split("\n")
    blocks, i, last_end = [], 0, 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).lower()
        if fence[0] == "`" and "`" in lines[i].strip()[len(fence):]:
            i += 1  # CommonMark: a backtick fence's info string has no backticks (inline code)
            continue
        start = i + 1
        j = start
        while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                      and lines[j].strip().strip(fence[0]) == ""):
            j += 1
        if j == len(lines):
            raise ValueError(f"{name}:{i + 1}: code fence {fence!r} is never closed")
        # An HTML comment ending on the last non-blank line before the fence marks the block.
        before = "\n".join(lines[last_end:i]).rstrip()
        mark = mark_text = None
        setup = ""
        if before.endswith("-->"):
            comment_start = before.rfind("<!--")
            cm = _COMMENT.fullmatch(before[comment_start:].strip()) if comment_start >= 0 else None
            if cm:
                mark = cm.group(1)
                mark_text, _, setup = cm.group(2).partition("\n")
                mark_text = mark_text.strip()
        blocks.append(dict(info=info, line=start + 1, code="\n".join(lines[start:j]) + "\n",
                           mark=mark, mark_text=mark_text, expected_output=None,
                           setup=setup.strip("\n") + "\n" if mark == "setup" else None))
        i = last_end = j + 1
    for prev, block in zip(blocks, blocks[1:]):
        if block["info"] == "output":
            if prev["info"] not in PYTHON_INFOS:
                raise ValueError(f"{name}:{block['line'] - 1}: an 'output' block must follow a Python block")
            prev["expected_output"] = block["code"]
    return blocks


_ASSIGN = re.compile(r"^(\s*)([A-Za-z_]\w*)\s*=(?!=)")


def alternatives(code):
    """Variants of ``code`` with each documented alternative assignment swapped in:
    a line ``# name = ...`` directly below ``name = ...`` at the same indentation."""
    lines = code.split("\n")
    variants = []
    for k in range(len(lines) - 1):
        m = _ASSIGN.match(lines[k])
        alt = re.match(r"^(\s*)#\s?(([A-Za-z_]\w*)\s*=(?!=).*)$", lines[k + 1])
        if m and alt and alt.group(1) == m.group(1) and alt.group(3) == m.group(2):
            swapped = lines[:k] + [m.group(1) + alt.group(2), m.group(1) + "pass"] + lines[k + 2:]
            variants.append((k, "\n".join(swapped)))
    return variants


def runnable_spec(path, root=REPO_ROOT):
    """What the runner executes for one Markdown file (empty if nothing to run)."""
    text = (root / path).read_text(encoding="utf-8")
    steps = []
    for b in parse_blocks(text, str(path)):
        if b["info"] not in PYTHON_INFOS or b["mark"] == "illustrative":
            continue
        steps.append(dict(file=str(path), line=b["line"], code=b["code"],
                          setup=b["setup"],
                          expected_output=b["expected_output"],
                          alternatives=[[k, v] for k, v in alternatives(b["code"])]))
    return steps


# ------------------------------------------------------------------ the runner
def _make_real_checkpoint_folder(folder):
    """Google's BERT-base folder layout holding the demo model's weights."""
    import shutil

    from kerasnlp_plus.checkpoints import save_google_checkpoint
    from kerasnlp_plus.models import build_transformer_model
    from kerasnlp_plus.pretraining import demo_model_path

    demo = demo_model_path()
    os.makedirs(folder, exist_ok=True)
    save_google_checkpoint(build_transformer_model(demo, demo, with_mlm=True),
                           os.path.join(folder, "bert_model.ckpt"))
    shutil.copy(os.path.join(demo, "vocab.txt"), os.path.join(folder, "vocab.txt"))


class _Tee(io.TextIOBase):
    def __init__(self, stream):
        self.stream, self.captured = stream, io.StringIO()

    def write(self, s):
        self.stream.write(s)
        return self.captured.write(s)

    def flush(self):
        self.stream.flush()


def _exec_block(code, first_line, filename, namespace):
    """Runs ``code`` so that tracebacks show the Markdown file and its line numbers;
    returns what it printed."""
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        exec(compile("\n" * (first_line - 1) + code, filename, "exec"), namespace)
    return tee.captured.getvalue()


def run_spec(steps):
    """Runs the steps of one file in order in one namespace; returns 0 or exits 1 with
    ``DOCS-FAIL file:line: why`` on the last line of stderr."""
    if any(REAL_CHECKPOINT_DIR in (s["code"] + (s["setup"] or "") + "".join(v for _, v in s["alternatives"]))
           for s in steps):
        _make_real_checkpoint_folder(REAL_CHECKPOINT_DIR)
    namespace = {"__name__": "__main__"}
    for s in steps:
        where = f"{s['file']}:{s['line']}"
        runs = [(s["code"], s["file"], "")] + [
            (v, f"{s['file']} (line {s['line'] + k + 1} swapped in)", f" with line {s['line'] + k + 1} swapped in")
            for k, v in s["alternatives"]]
        for code, filename, variant in runs:
            started = time.perf_counter()
            try:
                if s["setup"]:
                    _exec_block(s["setup"], 1, f"{s['file']} (setup before line {s['line']})", namespace)
                printed = _exec_block(code, s["line"], filename, namespace)
            except BaseException:
                traceback.print_exc()
                print(f"DOCS-FAIL {where}{variant}: the block raised", file=sys.stderr)
                sys.exit(1)
            expected = s["expected_output"]
            if expected is not None and printed.rstrip() != expected.rstrip():
                print(f"DOCS-FAIL {where}{variant}: printed {printed.rstrip()!r}, "
                      f"the page says {expected.rstrip()!r}", file=sys.stderr)
                sys.exit(1)
            print(f"DOCS-OK {where}{variant} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


def run_file_in_subprocess(steps, cwd, time_limit=None):
    """(returncode, stdout, stderr) of the runner over ``steps``, from ``cwd``."""
    spec = pathlib.Path(cwd) / "docs_spec.json"
    spec.write_text(json.dumps(steps, ensure_ascii=False), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        TF_CPP_MIN_LOG_LEVEL="2", PYTHONIOENCODING="utf-8")
    time_limit = time_limit or _TIME_LIMIT_BASE + _TIME_LIMIT_PER_BLOCK * len(steps)
    proc = subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()), str(spec)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=time_limit)
    return proc.returncode, proc.stdout, proc.stderr


if __name__ == "__main__":
    sys.exit(run_spec(json.loads(pathlib.Path(sys.argv[1]).read_text(encoding="utf-8"))))


# ------------------------------------------------------------------- the tests
import pytest  # noqa: E402  (the runner above must not need pytest)

MARKDOWN = markdown_files()
RUNNABLE = [p for p in MARKDOWN if runnable_spec(p)]


def test_markdown_discovery_finds_the_pages_and_skips_environments(tmp_path):
    assert pathlib.Path("README.md") in MARKDOWN
    assert pathlib.Path("pretraining/README.md") in MARKDOWN
    for folder in (".git", ".venv-ci", "venv", "pkg.egg-info", "node_modules"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.md").write_text("```python\n1/0\n```\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("text\n")
    assert markdown_files(tmp_path) == [pathlib.Path("docs/page.md")]


def test_parser_marks_outputs_and_alternatives():
    text = ("# t\n\n<!-- illustrative: needs a TPU -->\n```python\ntpu()\n```\n\n"
            "<!-- setup: an x\nx = 2\n-->\n```python\ny = x  # uses setup\nprint(y)\n```\nIt prints:\n"
            "```output\n2\n```\n```bash\nls\n```\n")
    blocks = parse_blocks(text)
    assert [(b["info"], b["mark"], b["line"]) for b in blocks] == [
        ("python", "illustrative", 5), ("python", "setup", 12), ("output", None, 17), ("bash", None, 20)]
    assert blocks[0]["mark_text"] == "needs a TPU" and blocks[1]["mark_text"] == "an x"
    assert blocks[1]["setup"] == "x = 2\n" and blocks[0]["setup"] is None
    assert blocks[1]["expected_output"] == "2\n"
    assert alternatives('p = "a"\n# p = "b"  # other\nq = 1\n') == [(0, 'p = "b"  # other\npass\nq = 1\n')]
    assert alternatives('p = "a"\n# q = "b"\n') == []
    assert parse_blocks("```` ```output ```` is inline code\n") == []
    with pytest.raises(ValueError, match=r"page\.md:1: code fence"):
        parse_blocks("```python\nx = 1\n", "page.md")


def test_runner_fails_on_error_wrong_output_and_bad_alternative(tmp_path):
    """The check can fail: an exception, a print that differs from the page and a
    broken alternative each fail, naming the Markdown file and line."""
    (tmp_path / "page.md").write_text(
        "```python\nx = 1\n```\n\n```python\nprint(x + 1)\n```\n```output\n2\n```\n"
        "```python\nv = 3\n# v = undefined_name\n```\n```python\n1 / 0\n```\n", encoding="utf-8")
    steps = runnable_spec(pathlib.Path("page.md"), tmp_path)
    rc, out, err = run_file_in_subprocess(steps[:2], tmp_path, time_limit=60)
    assert rc == 0 and out == "2\n" and "DOCS-OK page.md:6" in err
    rc, _, err = run_file_in_subprocess(steps[:3], tmp_path, time_limit=60)
    assert rc == 1 and "DOCS-FAIL page.md:12 with line 13 swapped in" in err and "NameError" in err
    rc, _, err = run_file_in_subprocess(steps[:2] + steps[3:], tmp_path, time_limit=60)
    assert rc == 1 and 'File "page.md", line 16' in err and "DOCS-FAIL page.md:16" in err
    steps[1]["expected_output"] = "3\n"
    rc, _, err = run_file_in_subprocess(steps[:2], tmp_path, time_limit=60)
    assert rc == 1 and "DOCS-FAIL page.md:6: printed '2', the page says '3'" in err


def test_every_mark_has_a_reason_and_every_page_parses():
    for path in MARKDOWN:
        for b in parse_blocks((REPO_ROOT / path).read_text(encoding="utf-8"), str(path)):
            if b["mark"]:
                assert b["mark_text"], f"{path}:{b['line'] - 1}: <!-- {b['mark']}: --> needs a reason"
            if b["mark"] == "setup":
                assert b["setup"].strip(), f"{path}:{b['line'] - 1}: <!-- setup: --> holds no code"


def test_readme_has_runnable_python():
    assert pathlib.Path("README.md") in RUNNABLE


@pytest.mark.parametrize("path", RUNNABLE, ids=str)
def test_python_blocks_run(path, tmp_path):
    steps = runnable_spec(path)
    try:
        rc, out, err = run_file_in_subprocess(steps, tmp_path)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{path}: its code blocks ran past {e.timeout} s\n--- stderr\n{(e.stderr or b'')[-3000:]!r}")
    assert rc == 0, f"{path}: a code block failed\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-6000:]}"
    for s in steps:  # every block (and each alternative) reported that it ran
        assert f"DOCS-OK {s['file']}:{s['line']}" in err


_SCRIPT = re.compile(r"\bpython\s+(?:-\S+\s+)*((?:[\w.-]+/)*[\w.-]+\.py)\b")


def test_shell_blocks_name_scripts_that_exist():
    """Shell commands are not run here (they train for minutes), but a renamed or
    removed script is caught."""
    missing = []
    for path in MARKDOWN:
        for b in parse_blocks((REPO_ROOT / path).read_text(encoding="utf-8"), str(path)):
            if b["info"] in ("bash", "sh", "shell", "console"):
                for script in _SCRIPT.findall(b["code"]):
                    if not (REPO_ROOT / script).is_file():
                        missing.append(f"{path}:{b['line']}: {script}")
    assert not missing, missing
