"""Every Python block in README.md, docs/*.md and examples/README.md runs on its own.

Each ```` ```python ```` block is executed alone, in a fresh namespace, so a block
must carry its own imports and data: a reader can paste any one of them and run it.
"""

import pathlib
import re

import pytest

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_DOCS = [_ROOT / "README.md", *sorted((_ROOT / "docs").glob("*.md")),
         _ROOT / "examples" / "README.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks():
  for doc in _DOCS:
    if not doc.exists():
      continue
    text = doc.read_text()
    for match in _BLOCK.finditer(text):
      line = text.count("\n", 0, match.start()) + 2  # The block's first line of code.
      yield pytest.param(match.group(1), id=f"{doc.relative_to(_ROOT)}:{line}")


_ALL = list(_blocks())


def test_the_docs_have_python_blocks():
  assert len(_ALL) >= 5, [p.id for p in _ALL]


@pytest.mark.parametrize("code", _ALL)
def test_doc_block_runs_on_its_own(code, request):
  name = request.node.callspec.id
  exec(compile(code, name, "exec"), {"__name__": "__doc_block__"})
