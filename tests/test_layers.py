"""Imports run one way (docs/architecture.md): no circle, no module importing a higher layer.

Reads every module of fewshot_jax/ with ``ast`` (imports inside functions count too) and
checks each import against the layer map below. A new module must be placed in the map.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Higher numbers sit higher. A module may import its own layer or lower ones; inside one
# package any direction is allowed (the circle test still applies). A pattern ending in
# ``.*`` places the package and everything in it.
LAYERS = [
    (6, ['fewshot_jax']),  # the package's lazy public API (load_encoder, Encoder)
    # The workflow dispatches the stage tasks through the registry (which names them lazily).
    (5, ['fewshot_jax.tasks', 'fewshot_jax.workflow', 'fewshot_jax.first_run']),
    (4, ['fewshot_jax.pretrain.*', 'fewshot_jax.probe.*', 'fewshot_jax.segment.*', 'fewshot_jax.select.*']),
    (3, ['fewshot_jax.encoder']),
    (2, ['fewshot_jax.models.*']),
    (1, ['fewshot_jax.train_lib.*', 'fewshot_jax.analysis.*']),
    (
        0,
        [
            'fewshot_jax.data.*',
            'fewshot_jax.masks',
            'fewshot_jax.errors',
            'fewshot_jax.launch_errors',
            'fewshot_jax.integrity',
        ],
    ),
]


def module_name(path: Path) -> str:
    return '.'.join(path.relative_to(ROOT).with_suffix('').parts).removesuffix('.__init__')


def layer_of(module: str) -> int | None:
    for layer, patterns in LAYERS:
        for pattern in patterns:
            package = pattern.removesuffix('.*')
            if module == package or (pattern.endswith('.*') and module.startswith(package + '.')):
                return layer
    return None


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """The fewshot_jax modules ``path`` imports (``from pkg import mod`` names the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('fewshot_jax'):
            for alias in node.names:
                sub = f'{node.module}.{alias.name}'
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith('fewshot_jax'))
    return found


def graph():
    files = {module_name(p): p for p in (ROOT / 'fewshot_jax').rglob('*.py')}
    return {m: project_imports(p, set(files)) - {m} for m, p in files.items()}


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in graph() if layer_of(m) is None)
    assert not unplaced, f'add these modules to LAYERS in tests/test_layers.py: {unplaced}'


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, deps in graph().items():
        for dep in deps:
            if (layer_of(dep) or 0) > (layer_of(module) or 0):
                upward.append(f'{module} (layer {layer_of(module)}) imports {dep} (layer {layer_of(dep)})')
    assert not upward, '\n'.join(upward)


def test_no_import_circle():
    g = graph()
    cycles, done = [], set()

    def visit(m, stack):
        if m in stack:
            cycles.append(stack[stack.index(m) :] + [m])
            return
        if m in done:
            return
        for d in sorted(g.get(m, ())):
            visit(d, stack + [m])
        done.add(m)

    for m in sorted(g):
        visit(m, [])
    assert not cycles, '\n'.join(' -> '.join(c) for c in cycles)


def test_config_files_import_only_ml_collections():
    for path in (ROOT / 'configs').glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                assert name.split('.')[0] in ('ml_collections', 'configs', '__future__'), (
                    f'{path.name} imports {name}'
                )


def test_config_literals_equal_the_model_constants():
    from configs import ssl_base
    from fewshot_jax.models import resnet

    assert ssl_base.IMAGENET_MEAN == tuple(resnet.IMAGENET_MEAN)
    assert ssl_base.IMAGENET_STD == tuple(resnet.IMAGENET_STD)


MAX_MODULE_LINES = 500


def test_no_module_is_over_the_size_limit():
    # Small modules (docs/architecture.md, "House style"): split by responsibility instead.
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / 'fewshot_jax').rglob('*.py')
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f'modules over {MAX_MODULE_LINES} lines: {long}'


def test_only_package_faces_re_export():
    # A name in a module's __all__ is defined in that module; re-exports belong to the
    # package's __init__.py, its one public face.
    borrowed = []
    for path in (ROOT / 'fewshot_jax').rglob('*.py'):
        if path.name == '__init__.py':
            continue
        tree = ast.parse(path.read_text())
        defined, exported = set(), []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    defined.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
                    if isinstance(target, ast.Name) and target.id == '__all__':
                        exported = [e.value for e in node.value.elts]
        borrowed += [f'{path.relative_to(ROOT)}: {name}' for name in exported if name not in defined]
    assert not borrowed, f'names exported but defined elsewhere: {borrowed}'
