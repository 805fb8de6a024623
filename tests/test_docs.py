"""The README and the docs name only what exists.

Checked: README.md opens with the two commands that work on a fresh clone (the second is CI's
test command, `.ci/run`); every file and folder of the README's Layout block exists where the
block puts it; every repository path (``hvt_jax/...``, ``configs/...``, ``data_prep/...``,
``tools/...``, ``benchmarks/...``, ``docs/...``, ``tests/...``; ``:args`` stripped) that
README.md, ``docs/*.md`` and the family READMEs name exists; every relative Markdown link of
those files and of ``docs/notes/`` resolves, its ``#anchor`` included. Dated notes
(``docs/notes/``) quote paths as they were when written, so only their links are checked.
"""

from __future__ import annotations

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# The documents whose named paths must exist (the notes keep their historical paths).
DOCS = sorted([README, *(REPO / "docs").glob("*.md"),
               *(REPO / "hvt_jax" / "families").glob("*/README.md")])
LINKED = sorted({*DOCS, *(REPO / "docs" / "notes").glob("*.md")})

TOP = ("hvt_jax", "configs", "data_prep", "tools", "benchmarks", "docs", "tests")
# A repository path: one of TOP, a slash, then path characters (an ``:arg`` suffix is cut
# off after matching). Not inside a longer path (``../../docs/x.md`` is a link, checked as
# one) nor part of a word.
REPO_PATH = re.compile(r"(?<![\w./-])(?:%s)/[\w./<>{}*,:=|-]*" % "|".join(TOP))
PLACEHOLDER = re.compile(r"[<>{}*|]|\.\.\.|YYYY")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
FILE_WORD = re.compile(r"^[\w.-]+(\.(py|md|sh|txt|toml|json)|/)$")


def named_paths(text: str) -> list[str]:
  """Repository paths named in ``text``, without ``:args`` and trailing punctuation;
  placeholders (``<family>``, ``{a,b}``, ``*``, ``...``) are left out."""
  out = []
  for match in REPO_PATH.finditer(text):
    path = match.group(0).split(":")[0].rstrip(".,;=")
    if not PLACEHOLDER.search(path):
      out.append(path)
  return out


def layout_entries(block: str) -> list[str]:
  """Every file and folder the Layout block names, as repository paths.

  A line's first word ending in "/" is a folder inside the folder of the line above it with
  less indentation; the other file-like words of that line (``x.py``, ``sub/``) are inside
  it. A line that starts with a file names files of the enclosing folder.
  """
  stack: list[tuple[int, str]] = []   # (indent, folder) of the open folders
  out = []
  for line in block.splitlines():
    words = [w.rstrip(",;:") for w in line.split()]
    if not words:
      continue
    indent = len(line) - len(line.lstrip())
    while stack and stack[-1][0] >= indent:
      stack.pop()
    parent = stack[-1][1] if stack else ""
    here = parent
    if words[0].endswith("/"):
      here = parent + words[0]
      stack.append((indent, here))
      out.append(here)
      words = words[1:]
    out += [here + w for w in words if FILE_WORD.match(w)]
  return out


def slug(heading: str) -> str:
  """GitHub's anchor of a Markdown heading."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
  return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
  text = FENCE.sub("", path.read_text(encoding="utf-8"))
  return {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.M)}


def test_readme_opens_with_the_install_and_the_ci_test_command():
  text = README.read_text(encoding="utf-8")
  first = re.search(r"```(\w*)\n(.*?)```", text, re.S)
  assert first and first.group(1) == "bash", "README.md must open with a bash block"
  commands = [re.sub(r"\s+#.*$", "", line).strip() for line in first.group(2).splitlines()]
  assert commands == [
      "bash tools/bootstrap.sh && .venv/bin/hvt-demo --workdir runs/demo",
      ".venv/bin/python -m pytest -q -n 2 --dist loadfile tests"], commands
  ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
  assert ci[-1] == commands[1], f".ci/run runs {ci[-1]!r}, the README {commands[1]!r}"


def test_readme_layout_exists():
  text = README.read_text(encoding="utf-8")
  section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, re.M | re.S)
  assert section, "README.md has no '## Layout' section"
  block = FENCE.search(section.group(1))
  assert block, "the Layout section has no code block"
  entries = layout_entries(block.group(1))
  assert len(entries) > 20, entries
  missing = [e for e in entries if not (REPO / e).exists()]
  assert not missing, f"README.md's Layout names what does not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_named_paths_exist(doc):
  paths = named_paths(doc.read_text(encoding="utf-8"))
  missing = sorted({p for p in paths if not (REPO / p).exists()})
  assert not missing, f"{doc.relative_to(REPO)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", LINKED, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(doc):
  broken = []
  for target in LINK.findall(FENCE.sub("", doc.read_text(encoding="utf-8"))):
    if re.match(r"[a-z]+:", target):
      continue                           # http(s), mailto: not checked offline
    path, _, anchor = target.partition("#")
    dest = (doc.parent / path).resolve() if path else doc
    if not dest.exists():
      broken.append(target)
    elif anchor and (dest.is_dir() or anchor not in anchors(dest)):
      broken.append(target)
  assert not broken, f"{doc.relative_to(REPO)}: broken links {broken}"


def test_the_checks_see_paths_layouts_and_anchors():
  """The parsers find what they must, so an empty result cannot pass for a clean one."""
  assert named_paths("see `configs/hse/demo.py:model=fse,runlocal`, hvt_jax/x.py. "
                     "../../docs/a.md configs/<family>/<dataset>.py configs/{a,b}/c.py") == [
                         "configs/hse/demo.py", "hvt_jax/x.py"]
  assert layout_entries("a/   one.py two.md\n  b/   three.py\n  four.py\nc/  d/\n") == [
      "a/", "a/one.py", "a/two.md", "a/b/", "a/b/three.py", "a/four.py", "c/", "c/d/"]
  assert slug("Data: TFDS builders, `hvt-prepare` and `tfds build`") == (
      "data-tfds-builders-hvt-prepare-and-tfds-build")
