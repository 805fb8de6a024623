"""Every module imports (catches stale imports in code no other test reaches)."""

import ast
import importlib
import pathlib
import pkgutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("hvt_jax", "data_prep", "configs")


def _modules():
  for pkg in PACKAGES:
    yield pkg
    for info in pkgutil.walk_packages([str(REPO / pkg)], prefix=f"{pkg}."):
      yield info.name


@pytest.mark.parametrize("name", sorted(set(_modules())))
def test_module_imports(name):
  module = importlib.import_module(name)
  assert module.__doc__, f"{name} has no module docstring"


# --------------------------------------------------------------------------------------
# The import contract: which part of the code may import which.

# The console scripts that drive conversion: the only modules of hvt_jax allowed to import
# the converters (data_prep).
CONVERSION_DRIVERS = ("hvt_jax/cli/prepare.py", "hvt_jax/cli/demo.py")


def _imports(path: pathlib.Path) -> set[str]:
  """Every module a file imports, at any depth (lazy imports inside functions too)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      names.update(f"{node.module}.{a.name}" for a in node.names)
  return names


def _files(pattern: str) -> list[pathlib.Path]:
  return sorted(REPO.glob(pattern))


def _violations(files, forbidden) -> list[str]:
  out = []
  for path in files:
    bad = sorted(n for n in _imports(path) if forbidden(n))
    if bad:
      out.append(f"{path.relative_to(REPO)} imports {bad}")
  return out


def _under(name: str, *packages: str) -> bool:
  return any(name == p or name.startswith(p + ".") for p in packages)


def test_library_never_imports_the_converters():
  files = [p for p in _files("hvt_jax/**/*.py")
           if str(p.relative_to(REPO)) not in CONVERSION_DRIVERS]
  assert not _violations(files, lambda n: _under(n, "data_prep"))


def test_layers_and_models_never_import_input_or_evaluation():
  files = (_files("hvt_jax/models/*.py") + _files("hvt_jax/families/*/model.py")
           + _files("hvt_jax/families/*/heads.py"))
  assert len(files) >= 8
  assert not _violations(
      files, lambda n: _under(n, "hvt_jax.input", "hvt_jax.evaluation", "hvt_jax.train"))


def test_configs_never_import_hvt_jax():
  files = _files("configs/**/*.py")
  assert files
  assert not _violations(files, lambda n: _under(n, "hvt_jax"))


def test_shared_modules_never_import_a_family():
  """Shared code finds families through the table (``hvt_jax.families``), never by name."""
  families = {p.name for p in (REPO / "hvt_jax" / "families").iterdir() if p.is_dir()
              and (p / "__init__.py").exists()}
  assert {"hse", "hammer", "mcha", "text_mlm"} <= families
  shared = [p for p in _files("hvt_jax/**/*.py") if "families" not in p.parts]
  assert not _violations(
      shared, lambda n: _under(n, *(f"hvt_jax.families.{f}" for f in families)))


def test_families_never_import_each_other():
  out = []
  for family in _files("hvt_jax/families/*/"):
    others = [f"hvt_jax.families.{p.name}" for p in _files("hvt_jax/families/*/")
              if p.name != family.name]
    out += _violations(_files(f"hvt_jax/families/{family.name}/*.py"),
                       lambda n, others=others: _under(n, *others))
  assert not out


def test_the_contract_check_sees_a_violation(tmp_path):
  """The checks above can fail: a file with a lazy forbidden import is reported."""
  bad = tmp_path / "bad.py"
  bad.write_text("def f():\n  from data_prep import builder\n", encoding="utf-8")
  assert "data_prep.builder" in _imports(bad)
