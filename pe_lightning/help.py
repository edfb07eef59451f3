"""The fast, PE-focused ``--help`` of ``python -m pe_lightning`` (no torch, no Lightning import).

``python -m pe_lightning --help`` prints the commands; ``python -m pe_lightning fit --config X
--help`` lists the PE options of that config first (the budget, the model, its API and
embedding, the data, the PE callbacks), each with its value in the config and its docstring,
then the few Trainer options a user changes. ``--help-all`` is LightningCLI's full help (every
Trainer option; it imports Lightning, so it takes seconds).

The options are read from the source files without importing them (:mod:`ast`): the
``__init__`` signature of each class a config names (following ``**kwargs`` to the base
class) and the Google-style ``Args:`` section of its docstrings.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

__all__ = ["HELP_ALL_FLAG", "ClassOptions", "Option", "class_options", "option_values", "print_help", "wants_fast_help"]

HELP_ALL_FLAG = "--help-all"
_HELP_FLAGS = ("--help", "-h")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
_TRAINER_OPTIONS = (
    ("--trainer.accelerator", "cpu | gpu | auto (the demo config says cpu: use gpu on a GPU machine)"),
    ("--trainer.devices", "how many devices (or which, e.g. [0, 1]); with --trainer.strategy ddp for several"),
    ("--trainer.default_root_dir", "the output root: populations, grids, checkpoints, logs, summary.json"),
    ("--ckpt_path", "resume from a checkpoint: last, or <root>/checkpoints/last.ckpt"),
    ("--print_config", "print the full configuration after the overrides, and exit"),
    ("--traceback", "show the full traceback of an error instead of one line"),
)


@dataclass(frozen=True)
class Option:
    """One ``__init__`` argument: name, annotation and default as written in the source, its doc."""

    name: str
    annotation: str
    default: str | None  # None: required
    doc: str


@dataclass(frozen=True)
class ClassOptions:
    """A class's summary line and its ``__init__`` options, in signature order."""

    class_path: str
    summary: str
    options: tuple[Option, ...]


# ------------------------------------------------------------------ reading source without importing
def _module_file(module: str) -> Path | None:
    """The source file of ``module``, found by the import system's finders without importing it or its parents."""
    path, spec = None, None
    parts = module.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        spec = next((found for finder in sys.meta_path if hasattr(finder, "find_spec")
                     for found in [_safe_find(finder, name, path)] if found is not None), None)
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or [])
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _safe_find(finder: Any, name: str, path: list[str] | None) -> Any:
    try:
        return finder.find_spec(name, path)
    except (ImportError, ValueError, TypeError):
        return None


def _parse(module: str) -> ast.Module | None:
    file = _module_file(module)
    return ast.parse(file.read_text(encoding="utf-8")) if file is not None else None


def _resolve_import(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    is_package = (_module_file(module) or Path()).name == "__init__.py"
    base = package if is_package else package[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _find_class(module: str, name: str, depth: int = 0) -> tuple[str, ast.ClassDef] | None:
    """``(defining module, ClassDef)`` of ``module.name``, following re-exports and lazy ``_EXPORTS`` maps."""
    tree = _parse(module)
    if tree is None or depth > 8:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
    for node in ast.walk(tree):  # re-exports, including those under `if TYPE_CHECKING:`
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            return _find_class(_resolve_import(module, node), original, depth + 1)
    return None


def _base_classes(module: str, cls: ast.ClassDef) -> Iterator[tuple[str, ast.ClassDef]]:
    for base in cls.bases:
        name = ast.unparse(base)
        found = _find_class(module, name) if "." not in name else None
        if found is not None:
            yield found


def _doc_args(doc: str | None) -> dict[str, str]:
    """The ``Args:`` entries of a Google-style docstring (``a, b: text`` documents both)."""
    out: dict[str, str] = {}
    if not doc:
        return out
    lines = doc.expandtabs().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return out
    indent, names, body = None, [], []
    for line in lines[start + 1:]:  # a list of names wrapped over lines ("a, b,\n    c: text") is one entry
        if body and re.fullmatch(r"\s*[\w, *]+,", body[-1]):
            body[-1] = body[-1] + " " + line.strip()
        else:
            body.append(line)
    for line in body:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        entry = re.match(r"\s*(\*{0,2}[\w, *]+?)(?: \([^)]*\))?: (.*)", line) if width == indent else None
        if entry:
            names = [n.strip().lstrip("*") for n in entry.group(1).split(",") if n.strip()]
            for n in names:
                out[n] = entry.group(2).strip()
        else:
            for n in names:
                out[n] += " " + line.strip()
    return out


def _init(cls: ast.ClassDef) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)


def _options(module: str, cls: ast.ClassDef, depth: int = 0) -> list[Option]:
    init = _init(cls)
    if init is None:  # inherited
        return next((_options(m, c, depth + 1) for m, c in _base_classes(module, cls)), []) if depth < 8 else []
    docs = {**_doc_args(ast.get_docstring(init)), **_doc_args(ast.get_docstring(cls))}
    args = init.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = list(zip(positional, defaults))[1:] + list(zip(args.kwonlyargs, args.kw_defaults))
    options = [
        Option(name=a.arg, annotation=ast.unparse(a.annotation) if a.annotation is not None else "",
               default=ast.unparse(d) if d is not None else None, doc=docs.get(a.arg, ""))
        for a, d in pairs
    ]
    if args.kwarg is not None and depth < 8:  # **kwargs: the base class's arguments pass through
        seen = {o.name for o in options}
        for m, c in _base_classes(module, cls):
            options += [o for o in _options(m, c, depth + 1) if o.name not in seen]
            break
    return options


def class_options(class_path: str) -> ClassOptions | None:
    """The options of the class named by a config's ``class_path``, read from its source (``None``: not found)."""
    module, _, name = class_path.rpartition(".")
    found = _find_class(module, name) if module else None
    if found is None:
        return None
    doc = (ast.get_docstring(found[1]) or "").strip()
    summary = " ".join(doc.split("\n\n", 1)[0].split())
    return ClassOptions(class_path=class_path, summary=summary, options=tuple(_options(*found)))


# ------------------------------------------------------------------ the help text
def wants_fast_help(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for the fast help (``--help``/``-h`` without ``--help-all``)."""
    return any(a in _HELP_FLAGS for a in argv) and HELP_ALL_FLAG not in argv


def option_values(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """The values given to any of the options ``names`` in ``argv`` (``--x V`` or ``--x=V``), in order.

    Read without the CLI's parser (no Lightning import): the fast help and the W&B preload
    (:mod:`pe_lightning.preload`) use it.
    """
    values = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in names:
            if eq:
                values.append(value)
            elif i + 1 < len(argv):
                values.append(argv[i + 1])
    return values


def _config_files(argv: Sequence[str]) -> list[Path]:
    return [Path(value) for value in option_values(argv, ("--config",))]


def _load_config(files: Sequence[Path]) -> dict:
    import yaml

    config: dict = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"--config {file}: no such file")
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        config.update(data)  # later files replace whole sections, enough for a help page
    return config


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def _entries(config: dict) -> Iterator[tuple[str, dict]]:
    """``(option prefix, {class_path, init_args})`` of every PE class the config names, model first."""
    model = config.get("model")
    if isinstance(model, dict) and "class_path" in model:
        yield "--model", model
        for key, value in (model.get("init_args") or {}).items():
            if isinstance(value, dict) and "class_path" in value:
                yield f"--model.init_args.{key}", value
    data = config.get("data")
    if isinstance(data, dict) and "class_path" in data:
        yield "--data", data
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).startswith("pe_lightning."):
            yield "--trainer.callbacks", callback


def _print_class(prefix: str, entry: dict, out: TextIO) -> None:
    class_path = entry["class_path"]
    given = entry.get("init_args") or {}
    info = class_options(class_path)
    where = "trainer.callbacks (edit the config file)" if prefix == "--trainer.callbacks" else prefix.lstrip("-")
    print(f"\n{where}: {class_path}", file=out)
    if info is None:
        print(f"  (options: --help-all, or {prefix}.help {class_path})", file=out)
        return
    if info.summary:
        print(f"  {info.summary}", file=out)
    options = sorted(info.options, key=lambda o: o.name not in given)  # what the config sets, first
    for o in options:
        if isinstance(given.get(o.name), dict) and "class_path" in given[o.name]:
            continue  # a nested class: listed in its own section
        value = f"{_value(given[o.name])}  (config)" if o.name in given else (
            "REQUIRED" if o.default is None else f"{o.default}  (default)")
        # A callback's options are edited in the config file (a list entry has no --flag of its own).
        flag = f"{prefix}.init_args.{o.name}" if prefix != "--trainer.callbacks" else o.name
        print(f"  {flag} = {value}", file=out)
        if o.doc:
            print(f"      {o.doc}", file=out)


def print_help(argv: Sequence[str], *, prog: str = "python -m pe_lightning", out: TextIO = sys.stdout) -> int:
    """Print the fast help for ``argv`` (the command line without the program); returns the exit status."""
    subcommand = next((a for a in argv if a in SUBCOMMANDS), None)
    files = _config_files(argv)
    if subcommand is None:
        print(f"usage: {prog} {{{','.join(SUBCOMMANDS)}}} --config CONFIG.yaml [--key value ...]\n\n"
              "Private Evolution (DP synthetic images from foundation-model APIs) on PyTorch Lightning.\n\n"
              "commands:\n"
              "  fit       run PE (or train a downstream classifier): python -m pe_lightning fit --config configs/mnist_drawtext.yaml\n"
              "  test      evaluate a saved run: --ckpt_path <root>/checkpoints/last.ckpt, or\n"
              "            --model.init_args.population_path <root>/final/population.npz\n"
              "  validate, predict  as in LightningCLI\n\n"
              f"{prog} fit --config X --help     the PE options of config X, with their docs\n"
              f"{prog} fit --config X {HELP_ALL_FLAG} every option (LightningCLI's help; slower)", file=out)
        return 0
    if not files:
        print(f"usage: {prog} {subcommand} --config CONFIG.yaml [--epsilon E] [--delta D] [--key value ...]\n\n"
              f"Give a config to see its PE options: {prog} {subcommand} --config configs/mnist_drawtext.yaml --help\n"
              f"Shipped configs: {', '.join(_shipped_configs())}\n"
              f"Every option (Trainer included): {prog} {subcommand} {HELP_ALL_FLAG}", file=out)
        return 0
    try:
        config = _load_config(files)
    except Exception as err:  # noqa: BLE001 - a missing file or a YAML syntax error: one line
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    names = " ".join(f"--config {f}" for f in files)
    print(f"PE options of {names} (value in the config, or the default); set any with --key value.", file=out)
    print(f"Every option, Trainer included: {prog} {subcommand} {names} {HELP_ALL_FLAG}", file=out)
    print("\nbudget (the PrivacyAccountant's; the planner reads it):\n"
          "  --epsilon E, --delta D   set the run's (epsilon, delta) once", file=out)
    for prefix, entry in _entries(config):
        _print_class(prefix, entry, out)
    print("\ncommon Trainer and run options:", file=out)
    for flag, doc in _TRAINER_OPTIONS:
        print(f"  {flag:28s} {doc}", file=out)
    return 0


def _shipped_configs() -> list[str]:
    folder = _module_file("pe_lightning.configs")
    return sorted(p.name for p in folder.parent.glob("*.yaml")) if folder is not None else []
