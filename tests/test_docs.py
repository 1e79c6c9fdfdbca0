"""The README and docs/ as a newcomer reads them: every code block runs or names real commands, every link
resolves, the CLI reference is the CLI's own help, and the product speaks of itself alone.

The rules for code blocks are documented in docs/README.md ("How the code blocks in these pages are tested").
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from conftest import ROOT

from iee_deploy.cli import LAZY_COMMANDS
from iee_deploy.cli import main as cli

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python", "bash", "text"}
GPU_TAG = "gpu"
README_MAX_LINES = 200
FORBIDDEN = re.compile("|".join(["issue" + r" [0-9]", "files" + "_at", r"run\(" + "command", "device" + " tool"]))
"""What the product never says: internal issue numbers and internal tooling (built in pieces so this file passes)."""
RUN_BY = re.compile(r"<!--[^>]*\b(tests/[\w/]+\.py) runs this block\s*-->")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language and tags, its code, and the line before its fence."""

    page: Path
    line: int
    language: str
    tags: tuple[str, ...]
    code: str
    before: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a markdown page, indented ones (inside lists) included, dedented."""
    found, lines = [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)```(.*)$", lines[i])
        if opening is None:
            i += 1
            continue
        indent, info = len(opening.group(1)), opening.group(2).split()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        code = "\n".join(line[indent:] for line in lines[i + 1:end]) + "\n"
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        found.append(Block(page, i + 1, info[0] if info else "", tuple(info[1:]), code, before))
        i = end + 1
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
PYTHON = [b for b in ALL_BLOCKS if b.language == "python"]
BASH = [b for b in ALL_BLOCKS if b.language == "bash"]


def test_every_block_says_its_language():
    unknown = [(b.name, b.language) for b in ALL_BLOCKS if b.language not in LANGUAGES]
    assert not unknown, f"tag each block with one of {sorted(LANGUAGES)} (docs/README.md): {unknown}"
    assert {b.name for b in ALL_BLOCKS if b.tags and b.tags != (GPU_TAG,)} == set()
    assert len(PYTHON) >= 5 and len(BASH) >= 8  # the pages hold examples, and this test found them


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.name)
def test_python_blocks_run(block, tmp_path, monkeypatch, one_thread):
    if GPU_TAG in block.tags:
        pytest.skip("needs an NVIDIA GPU (tagged `python gpu`)")
    runner = RUN_BY.search(block.before)
    if runner is not None:
        assert (ROOT / runner.group(1)).is_file(), f"{block.name} names {runner.group(1)}, which does not exist"
        pytest.skip(f"run by {runner.group(1)}")
    monkeypatch.chdir(tmp_path)
    exec(compile(block.code, block.name, "exec"), {"__name__": "__docs__"})


# --- bash blocks: the commands exist, with the flags they are given ------------------------------------------


def commands(code: str) -> list[list[str]]:
    """Each command line of a bash block as words: continuations joined, comments and env assignments dropped."""
    joined = re.sub(r"\\\n", " ", code)
    result = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            words = words[1:]
        if words:
            result.append(words)
    return result


def flags(words: list[str]) -> list[str]:
    return [w.split("=")[0] for w in words if w.startswith("--")]


def cli_options(name: str) -> set[str]:
    """Every option string of `iee-deploy NAME` (from click, as --help shows them)."""
    ctx = click.Context(cli, info_name="iee-deploy")
    command = cli.get_command(ctx, name) if isinstance(cli, click.Group) else None
    assert command is not None, name
    return {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))


def check_iee_deploy(words: list[str], where: str) -> None:
    assert words and words[0] in LAZY_COMMANDS, f"{where}: `iee-deploy {' '.join(words[:1])}` is not a command"
    missing = sorted(set(flags(words[1:])) - cli_options(words[0]))
    assert not missing, f"{where}: `iee-deploy {words[0]}` has no option {missing}"


def check_python_module(words: list[str], where: str) -> None:
    """`python -m MODULE ...` or `python SCRIPT ...`: the module or script exists and knows the flags given."""
    if "-m" in words:
        module = words[words.index("-m") + 1]
        rest = words[words.index("-m") + 2:]
        if module == "iee_deploy":
            check_iee_deploy(rest, where)
            return
        spec = importlib.util.find_spec(module) if not module.startswith("benchmarks") else None
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file() or spec is not None, f"{where}: no module {module}"
        source = path.read_text() if path.is_file() else ""
    else:
        script = next(w for w in words[1:] if not w.startswith("-"))
        path = ROOT / script
        assert path.is_file(), f"{where}: no script {script}"
        rest, source = words[words.index(script) + 1:], path.read_text()
    unknown = [f for f in flags(rest) if source and f"\"{f}\"" not in source and f"'{f}'" not in source]
    assert not unknown, f"{where}: {path.relative_to(ROOT)} has no option {unknown}"


def check_command(words: list[str], where: str) -> None:
    program = words[0]
    if program == "iee-deploy":
        check_iee_deploy(words[1:], where)
    elif program == "torchrun":
        assert "-m" in words, f"{where}: torchrun without -m"
        check_python_module(words, where)
    elif program == "make":
        targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
        assert set(targets) <= make_targets(), f"{where}: no make target {sorted(set(targets) - make_targets())}"
    elif program == "pip":
        extras = re.findall(r"\.\[([\w,-]+)\]", " ".join(words))
        pyproject = (ROOT / "pyproject.toml").read_text()
        for extra in (e for group in extras for e in group.split(",")):
            assert re.search(rf"^{extra}\s*=", pyproject, re.M), f"{where}: pyproject.toml has no extra '{extra}'"
    elif re.match(r"^(\.venv/bin/)?python3?$", program):
        check_python_module(words, where)
    else:
        assert "/" in program and (ROOT / program).is_file(), f"{where}: `{program}` is neither a command nor a file here"


@pytest.mark.parametrize("block", BASH, ids=lambda b: b.name)
def test_bash_blocks_name_real_commands_and_flags(block):
    lines = commands(block.code)
    assert lines, f"{block.name}: an empty bash block"
    for words in lines:
        check_command(words, block.name)


def test_the_command_checks_catch_a_wrong_flag_and_a_missing_target():
    with pytest.raises(AssertionError, match="has no option"):
        check_command(["iee-deploy", "train", "--sparsity", "0.9", "--no-such-flag"], "here")
    with pytest.raises(AssertionError, match="is not a command"):
        check_command(["iee-deploy", "trian"], "here")
    with pytest.raises(AssertionError, match="no make target"):
        check_command(["make", "gpu-nothing"], "here")
    assert commands("A=1 make demo   # a comment\niee-deploy train \\\n  --epochs 1\n") == [
        ["make", "demo"], ["iee-deploy", "train", "--epochs", "1"]]


# --- the pages as a whole --------------------------------------------------------------------------------------


def test_readme_reads_in_five_minutes():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    assert max(map(len, (line for line in lines if not line.startswith("|")))) <= 130  # prose, not walls


def test_readme_results_are_quoted_from_their_files():
    """Every decimal figure of a results-table row is written in the result file the row links to."""
    rows = re.findall(r"^\| \[[^\]]*\]\((benchmarks/results/[^)]+\.md)\) \|(.*)$", (ROOT / "README.md").read_text(), re.M)
    assert len(rows) >= 10
    unquoted = [(file, number) for file, rest in rows for number in re.findall(r"\d+\.\d+", rest)
                if number not in (ROOT / file).read_text()]
    assert not unquoted, f"README figures not found in their result files: {unquoted}"


def slug(heading: str) -> str:
    """The anchor a markdown renderer (GitHub's rule) gives a heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_slug_follows_the_renderers_rule():
    assert slug("When IEE pays off, and how to set it") == "when-iee-pays-off-and-how-to-set-it"
    assert slug("IEE's short-run period (`hjq_sweep`)") == "iees-short-run-period-hjq_sweep"


def anchors(page: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # a web address: not checked offline
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that do not resolve: {broken}"


def test_cli_reference_is_the_clis_own_help():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "tools" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    page = gen.render()
    assert (ROOT / "docs" / "cli.md").read_text() == page, "docs/cli.md is out of date: run python tools/gen_cli_docs.py"
    for name in LAZY_COMMANDS:
        assert f"## iee-deploy {name}\n" in page and f"Usage: iee-deploy {name} " in page


def test_architecture_page_states_the_enforced_import_rules():
    spec = importlib.util.spec_from_file_location("arrows", ROOT / "tests" / "test_import_arrows.py")
    assert spec is not None and spec.loader is not None
    arrows = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arrows)
    page = (ROOT / "docs" / "architecture.md").read_text()
    table = page.split("| layer | may import |")[1].split("\n\n")[0]
    stated = {}
    for row in table.strip().splitlines()[1:]:
        layer, allowed = (cell.strip() for cell in row.strip("|").split("|"))
        name = re.sub(r"[`]", "", layer).split()[0]
        stated[name] = set() if allowed.startswith("nothing") else {a.strip() for a in allowed.split(",")}
    assert stated == arrows.ALLOWED


def tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [ROOT / name for name in listed.decode().split("\0") if name]


def test_the_product_speaks_of_itself_alone():
    hits = []
    for path in tracked_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary files (figures, archives) and files another process is replacing
        hits += [f"{path.relative_to(ROOT)}:{n}: {line.strip()[:80]}" for n, line in enumerate(text.splitlines(), 1)
                 if FORBIDDEN.search(line)]
    assert not hits, "internal issue numbers or tooling named in the product:\n" + "\n".join(hits)
