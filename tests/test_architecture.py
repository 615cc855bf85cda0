"""The layers of docs/architecture.md, enforced: imports point down, no cycles, runtimes opened in one place,
the CLI starts without TensorFlow, one manifest reader, one parity, one gate set."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "edgecnn"

# lowest first; a module may import its own layer or lower ones (docs/architecture.md)
LAYERS = [
    ("ground", ("edgecnn", "edgecnn.errors", "edgecnn.io", "edgecnn.native", "edgecnn.graph", "edgecnn.script")),
    ("contracts", ("edgecnn.contracts",)),
    ("runtimes", ("edgecnn.runtimes",)),
    ("stages", ("edgecnn.data", "edgecnn.models", "edgecnn.checkpoint", "edgecnn.rundir", "edgecnn.reporting",
                "edgecnn.train", "edgecnn.train_inputs", "edgecnn.precise_bn", "edgecnn.transfer", "edgecnn.tune", "edgecnn.tune_trials", "edgecnn.tune_workers", "edgecnn.tune_device", "edgecnn.export", "edgecnn.bench", "edgecnn.device",
                "edgecnn.predict", "edgecnn.inspect", "edgecnn.testing", "edgecnn.report", "edgecnn.imported",
                "edgecnn.imported_fit")),
    ("cli", ("edgecnn.cli", "edgecnn.__main__")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer of docs/architecture.md"
    return best[0]


def imports(module: str) -> set:
    """Every edgecnn module `module` imports, at the top or inside a function."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "edgecnn"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "edgecnn":
                continue
            for a in node.names:  # `from edgecnn.export import onnx` imports the submodule
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for m in MODULES:
        layer_of(m)


def test_no_import_points_up():
    bad = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
           for m, deps in GRAPH.items() for d in deps if layer_of(d) > layer_of(m) and m != "edgecnn"]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    # the package __init__ only re-exports; edges into a package stand for its __init__ module
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        for d in GRAPH[m]:
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_script_imports_nothing_from_edgecnn():
    assert not GRAPH["edgecnn.script.edgecnn_infer"]


OPENS_A_RUNTIME = re.compile(r"Interpreter\(|InferenceSession\(|CompiledModel\.|\.from_file\(|\.compile_model\(|"
                             r"\bCore\(\)|vela\.main|subprocess\.[a-z]+\(\[.*vela")


def test_runtimes_are_opened_only_in_the_runtime_layer():
    outside = [str(p.relative_to(ROOT)) for m, p in MODULES.items()
               if not m.startswith(("edgecnn.runtimes", "edgecnn.script")) and OPENS_A_RUNTIME.search(p.read_text())]
    assert not outside, outside


@pytest.mark.parametrize("concept, pattern, home", [
    ("manifest reader", r"^def read_manifest\(", {"edgecnn/contracts/manifest.py", "edgecnn/script/edgecnn_infer.py"}),
    ("parity", r"^def parity\(", {"edgecnn/contracts/parity.py"}),
    ("gates", r"^class Gates\b", {"edgecnn/contracts/gates.py"}),
    ("row schema", r"^ROW_KEYS = \(", {"edgecnn/script/edgecnn_infer.py"}),
    ("native log capture", r"^def native_stderr\(", {"edgecnn/native.py"}),
])
def test_each_concept_lives_once(concept, pattern, home):
    where = {str(p.relative_to(ROOT)) for p in MODULES.values() if re.search(pattern, p.read_text(), re.M)}
    assert where == home, (concept, where)


def test_cli_help_imports_no_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from edgecnn.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'onnxruntime', "
            "'ai_edge_litert', 'openvino', 'tflite_micro')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
