"""The package's layers, held as rules: which side imports torch, and which way imports flow."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._records import rerun_of

PACKAGE = Path(__file__).resolve().parent.parent / "vaebench"
EXAMPLE = PACKAGE.parent / "docs" / "examples" / "nvidia-h200"
TORCH_FREE = ("", "measure", "analysis", "tune", "reproduce")  # "" is the root
# Which subpackages each layer may import (the root's contract is open to all). cli sits on top.
MAY_IMPORT = {
    "": set(),
    "analysis": set(),
    "train": {"analysis"},  # the profiler window summarizes its trace with analysis.trace
    "measure": {"analysis"},  # a record carries its bottleneck verdict, from analysis.attribution
    "tune": {"analysis", "measure", "train"},
    "reproduce": {"analysis", "measure"},
}
BLOCK_TORCH = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.') or name.startswith('torchvision'):\n"
    "            raise ImportError('torch is blocked in this test')\n"
    "sys.meta_path.insert(0, Block())\n"
    "from vaebench.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def modules(layer: str) -> list[str]:
    folder = PACKAGE / layer if layer else PACKAGE
    return sorted(f"vaebench{'.' + layer if layer else ''}.{p.stem}".replace(".__init__", "")
                  for p in folder.glob("*.py"))


def test_the_root_holds_about_a_dozen_modules() -> None:
    assert len(modules("")) <= 13, modules("")


def test_every_module_outside_train_imports_without_torch() -> None:
    names = [m for layer in TORCH_FREE for m in modules(layer)]
    code = "import sys\n" + "".join(f"import {m}\n" for m in names) + "sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# Outside train/, torch is imported only inside these functions, each reached only where torch is
# wanted: `env`'s runtime half, a device probe, MNIST's download, tune's warm search child.
DEFERRED_TORCH = {
    ("machine.py", "runtime_fingerprint"),
    ("machine.py", "capabilities"),
    ("measure/data.py", "_download"),
    ("tune/screen.py", "main"),
}


def torch_imports(path: Path) -> set[tuple[str, str]]:
    """(file, function) of every torch or torchvision import in a module; '' for module level."""
    found = set()

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            names = ([a.name for a in child.names] if isinstance(child, ast.Import)
                     else [child.module or ""] if isinstance(child, ast.ImportFrom) and not child.level else [])
            if any(n.split(".")[0] in ("torch", "torchvision") for n in names):
                found.add((path.relative_to(PACKAGE).as_posix(), function))
            visit(child, inner)

    visit(ast.parse(path.read_text()), "")
    return found


def test_torch_is_imported_in_train_and_in_a_few_named_functions_only() -> None:
    outside = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "train"]
    found = set().union(*map(torch_imports, outside))
    assert found == DEFERRED_TORCH


def imported_layers(path: Path) -> set[str]:
    """The vaebench subpackages a module imports, at any depth of the file."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[: len(parts) - node.level + 1])
            target = [*base, *(node.module.split(".") if node.module else [])]
            if target:
                found.add(target[0])
            else:  # from . import x (at the root): x itself may be a subpackage
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaebench."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("vaebench."))
    return found & {"train", "measure", "analysis", "tune", "reproduce"}


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_imports_flow_one_way(layer: str) -> None:
    folder = PACKAGE / layer if layer else PACKAGE
    files = [p for p in folder.glob("*.py") if p.stem not in ("cli", "__init__") or layer]
    for path in files:
        wrong = imported_layers(path) - MAY_IMPORT[layer] - {layer}
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


def sibling_imports(path: Path) -> set[str]:
    """The modules of its own subpackage a module imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
    return found


def test_a_report_is_built_then_rendered_then_written() -> None:
    steps = ("report", "report_text", "export")
    for i, step in enumerate(steps):
        later = sibling_imports(PACKAGE / "analysis" / f"{step}.py") & set(steps[i + 1:])
        assert not later, f"analysis/{step}.py imports {sorted(later)}"


def test_the_analysis_commands_work_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    folder = tmp_path / "h200"
    shutil.copytree(EXAMPLE, folder)

    def vaebench(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", BLOCK_TORCH, *args], capture_output=True, text=True)

    report = vaebench("report", str(folder))
    assert report.returncode == 0, report.stderr
    assert "wrote" in report.stdout
    compare = vaebench("compare", str(folder), str(rerun_of(folder, tmp_path / "again")))
    assert compare.returncode == 0, compare.stderr
    reproduce = vaebench("reproduce", "--report-only", "--quick", "--out", str(folder))
    assert reproduce.returncode == 0, reproduce.stderr
    assert "gpu-faster: AGREES" in reproduce.stdout
    ladder = vaebench("ladder", "--report-only", "--device", "cuda:0", "--out", str(folder))
    assert ladder.returncode == 0, ladder.stderr
    assert "cuda-graphs" in ladder.stdout
    torch_itself = BLOCK_TORCH.split("from vaebench.cli")[0] + "import torch\n"
    assert subprocess.run([sys.executable, "-c", torch_itself], capture_output=True).returncode != 0  # a real block
