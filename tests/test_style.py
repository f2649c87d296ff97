"""Tests of the tree's shape that review would otherwise have to catch by eye."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
MAX_LINES = 80


def long_functions(root: pathlib.Path, max_lines: int) -> list[str]:
  """``path:line name (length)`` of every function under ``root`` longer than ``max_lines``.

  A function's length counts its whole ``def``: signature, docstring and body.
  """
  found = []
  for path in sorted(root.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > max_lines:
          found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length})")
  return found


def test_no_function_in_advjax_or_experiments_is_longer_than_80_lines():
  found = [f for d in ("advjax", "experiments") for f in long_functions(REPO / d, MAX_LINES)]
  assert found == []


def test_a_long_function_is_found(tmp_path):
  package = tmp_path / "package"
  package.mkdir()
  body = "".join(f"  x{i} = {i}\n" for i in range(MAX_LINES - 1))
  (package / "module.py").write_text(f"def short():\n  pass\n\n\ndef long():\n{body}  return 0\n")
  assert long_functions(package, MAX_LINES) == [f"package/module.py:5 long ({MAX_LINES + 1})"]
  assert long_functions(package, MAX_LINES + 1) == []
