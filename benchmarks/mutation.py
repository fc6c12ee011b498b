"""Mutation testing of segkit's core modules: do the tests notice a small defect?

Each *mutant* is one small deliberate change to one module (``<`` -> ``<=``,
``+`` -> ``-``, a constant moved, ``and`` -> ``or``, a keyword argument or a call
statement dropped, a condition negated...). The tests mapped to that module run
against it; the mutant is *killed* when they fail (or time out) and *survives* when
they pass. The score of a module is killed / all mutants (the headline: an
equivalent mutant counts as not killed), printed next to killed / (all - equivalent).
A surviving mutant is either a missing test or an *equivalent* mutant (one that cannot
change behaviour), which is written down in ``benchmarks/mutation_equivalent.txt``
with the reason.

Every mutant runs in a temporary copy of the tree (the working tree is never
modified). To keep a run short, a parent process imports the heavy third-party
libraries once and forks one child per mutant, which imports the mutated segkit
from the copy and runs only the mapped test files, under a per-mutant timeout.

Usage::

    python benchmarks/mutation.py                      # every module, a few minutes each
    python benchmarks/mutation.py segkit/evaluation/metrics.py --show-survivors   # with the changed code
    python benchmarks/mutation.py segkit/evaluation/metrics.py --line 74          # the mutants of one line
    python benchmarks/mutation.py --sample 25          # an estimate from 25 random mutants per module
    python benchmarks/mutation.py --list               # the modules and their test files
    python benchmarks/mutation.py --json out.json      # also write the results as JSON

Not part of CI's default run (too slow): run it after changing a core module or its
tests.
"""
from __future__ import annotations

import argparse
import ast
import copy
import difflib
import fnmatch
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EQUIVALENT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mutation_equivalent.txt")

# Module (glob, relative to the repository root) -> the test files that cover it.
# First matching pattern wins.
TEST_MAP: List[Tuple[str, Sequence[str]]] = [
    # Modules whose behaviour is tested through an entry point in another test file.
    ("segkit/evaluation/multi_task.py", ["tests/test_evaluation.py", "tests/test_benchmark_configs.py"]),
    ("segkit/postprocess/chain.py", ["tests/test_postprocess.py", "tests/test_crf_valid_region.py"]),
    ("segkit/config/locate.py", ["tests/test_config.py", "tests/test_model_zoo.py"]),
    ("segkit/config/configurable.py", ["tests/test_config.py", "tests/test_configurable.py"]),
    ("segkit/config/validate.py", ["tests/test_config.py", "tests/test_solver.py", "tests/test_reliability_inputs.py"]),
    ("segkit/evaluation/*.py", ["tests/test_evaluation.py"]),
    ("segkit/modeling/losses/*.py", ["tests/test_losses_wiring.py", "tests/test_losses.py"]),
    # The native CRF's fast helpers (_exp_normalize, _take) and its thread policy have their own files.
    ("segkit/postprocess/dense_crf.py",
     ["tests/test_crf_oracle.py", "tests/test_crf.py", "tests/test_crf_native_kernels.py", "tests/test_threads.py"]),
    ("segkit/postprocess/permutohedral.py",
     ["tests/test_crf_oracle.py", "tests/test_crf.py", "tests/test_crf_native_kernels.py"]),
    ("segkit/postprocess/crf_search.py", ["tests/test_crf_search.py"]),
    ("segkit/postprocess/*.py", ["tests/test_postprocess.py"]),
    ("segkit/config/*.py", ["tests/test_config.py"]),
]
DEFAULT_MODULES = ["segkit/evaluation", "segkit/modeling/losses", "segkit/postprocess", "segkit/config"]
# What the child processes need from the tree.
COPIED = ["segkit", "tests", "configs", "plugins", "examples", "tools", "pyproject.toml", "README.md", "docs"]
# Imported once in the parent so that each forked mutant starts warm (third-party only:
# segkit itself must be imported fresh, from the mutated copy, in each child).
PRELOAD = ["numpy", "torch", "torch.nn.functional", "torch.distributed", "pytest", "cv2", "fvcore.common.config",
           "albumentations", "yaml", "PIL.Image", "scipy"]

NO_MUTATE = "pragma: no mutate"


@dataclass
class Mutant:
    module: str
    index: int
    line: int
    description: str
    status: str = "?"  # killed | survived | timeout | equivalent | error
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.module}:{self.line}: {self.description}"


# --------------------------------------------------------------------------- #
# Mutation operators
# --------------------------------------------------------------------------- #
_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
             ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr}
_OP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is",
            ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
            ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.BitOr: "|", ast.BitAnd: "&",
            ast.And: "and", ast.Or: "or"}


def _new_constant(value):
    """A different constant of the same kind, or None when there is nothing to mutate."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1 if value != 1 else 0
    if isinstance(value, float):
        return value * 2.0 if value not in (0.0, 1.0) else (1.0 if value == 0.0 else 0.5)
    return None


Edit = Callable[[ast.AST], Optional[ast.AST]]


class _Sites(ast.NodeVisitor):
    """Collects (line, description, edit) for every mutation of a module, in a fixed order.

    An edit is applied to a node found again by its position in a fresh parse, so the
    same index always means the same mutant.
    """

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = lines
        self.sites: List[Tuple[int, str, Tuple[int, ...], Edit, Tuple[int, int]]] = []
        self._path: List[int] = []
        self._docstrings: set = set()

    def _skip(self, node: ast.AST) -> bool:
        line = getattr(node, "lineno", None)
        return line is not None and NO_MUTATE in self.lines[line - 1]

    def add(self, node: ast.AST, description: str, edit: Edit) -> None:
        if not self._skip(node):
            # The lines that must run for the mutant to matter (an if: its condition).
            where = node.test if isinstance(node, (ast.If, ast.While)) else node
            span = (where.lineno, getattr(where, "end_lineno", None) or where.lineno)
            self.sites.append((node.lineno, description, tuple(self._path), edit, span))

    def generic_visit(self, node: ast.AST) -> None:
        for i, child in enumerate(ast.iter_child_nodes(node)):
            self._path.append(i)
            self.visit(child)
            self._path.pop()

    # Definitions that are not behaviour: docstrings, __all__, type-only code.
    def _note_docstring(self, body) -> None:
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self._docstrings.add(id(body[0]))

    def visit_Module(self, node):
        self._note_docstring(node.body)
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        self._note_docstring(node.body)
        # Default values and annotations: visit the body only (defaults are API, and a
        # moved default is caught, if at all, by the config tests through from_config).
        for i, child in enumerate(ast.iter_child_nodes(node)):
            if child in node.body or child in node.decorator_list:
                self._path.append(i)
                self.visit(child)
                self._path.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self._note_docstring(node.body)
        self.generic_visit(node)

    def visit_Assign(self, node):
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        # dataclass fields: the value is a default, the annotation is a type.
        if node.value is not None:
            self._path.append(list(ast.iter_child_nodes(node)).index(node.value))
            self.visit(node.value)
            self._path.pop()

    def visit_If(self, node):
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        self.add(node, "negate if condition", _negate_test)
        self.generic_visit(node)

    def visit_While(self, node):
        self.add(node, "negate while condition", _negate_test)
        self.generic_visit(node)

    def visit_Raise(self, node):
        return  # the message of an error is text; raising at all is covered by the if above

    def visit_Assert(self, node):
        return

    def visit_JoinedStr(self, node):
        return  # f-strings: messages

    def visit_Expr(self, node):
        if id(node) in self._docstrings:
            return
        if isinstance(node.value, ast.Call):
            self.add(node, "remove call statement", _replace_with_pass)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self.add(node, "remove augmented assignment", _replace_with_pass)
        if type(node.op) in _BIN_SWAP:
            new = _BIN_SWAP[type(node.op)]
            self.add(node, f"{_OP_TEXT[type(node.op)]}= -> {_OP_TEXT[new]}=", _set_attr("op", new))
        self.generic_visit(node)

    def visit_Return(self, node):
        if isinstance(node.value, ast.Name):
            self.add(node, f"return {node.value.id} -> return None", _return_none)
        self.generic_visit(node)

    def visit_Compare(self, node):
        for i, op in enumerate(node.ops):
            new = _CMP_SWAP.get(type(op))
            if new is not None:
                self.add(node, f"{_OP_TEXT[type(op)]} -> {_OP_TEXT[new]}", _swap_cmp(i, new))
        self.generic_visit(node)

    def visit_BinOp(self, node):
        new = _BIN_SWAP.get(type(node.op))
        if new is not None:
            self.add(node, f"{_OP_TEXT[type(node.op)]} -> {_OP_TEXT[new]}", _set_attr("op", new))
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        self.add(node, f"{_OP_TEXT[type(node.op)]} -> {_OP_TEXT[new]}", _set_attr("op", new))
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
            op = {ast.Not: "not", ast.USub: "-", ast.Invert: "~"}[type(node.op)]
            self.add(node, f"drop unary {op}", _drop_unary)
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return  # -1 etc.: the constant mutation would only duplicate this one
        self.generic_visit(node)

    def visit_Constant(self, node):
        new = _new_constant(node.value)
        if new is not None:
            self.add(node, f"constant {node.value!r} -> {new!r}", _set_attr("value", new))

    def visit_Call(self, node):
        # x.long(), x.detach(), x.contiguous()...: drop the call, keep the receiver.
        if isinstance(node.func, ast.Attribute) and not node.args and not node.keywords:
            self.add(node, f"drop call .{node.func.attr}()", _drop_method_call)
        for i, kw in enumerate(node.keywords):
            if kw.arg is not None:
                self.add(node, f"drop argument {kw.arg}=", _drop_keyword(i))
        self.generic_visit(node)


def _negate_test(node):
    node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)


def _replace_with_pass(node):
    return ast.Pass()


def _return_none(node):
    node.value = ast.Constant(value=None)


def _drop_method_call(node):
    return node.func.value


def _drop_unary(node):
    return node.operand


def _set_attr(name, value):
    def edit(node):
        setattr(node, name, value() if isinstance(value, type) else value)
    return edit


def _swap_cmp(i, new):
    def edit(node):
        node.ops[i] = new()
    return edit


def _drop_keyword(i):
    def edit(node):
        del node.keywords[i]
    return edit


def _apply(tree: ast.AST, path: Tuple[int, ...], edit: Edit) -> None:
    """Apply ``edit`` to the node at ``path``; an edit that returns a node replaces it."""
    parent, node = None, tree
    for i in path:
        parent, node = node, list(ast.iter_child_nodes(node))[i]
    new = edit(node)
    if new is None:
        return
    for field, value in ast.iter_fields(parent):
        if value is node:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for j, item in enumerate(value):
                if item is node:
                    value[j] = new
                    return
    raise AssertionError("mutation: node not found in its parent")


def mutation_sites(source: str):
    """(line, description, path, edit, span of lines) of every mutant of ``source``, in a stable order."""
    tree = ast.parse(source)
    sites = _Sites(source.splitlines())
    sites.visit(tree)
    return sites.sites


def mutate(source: str, index: int) -> str:
    """The source of mutant ``index`` of ``source``."""
    line, description, path, edit, _span = mutation_sites(source)[index]
    tree = ast.parse(source)
    _apply(tree, path, edit)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


# --------------------------------------------------------------------------- #
# Running
# --------------------------------------------------------------------------- #
def tests_for(module: str) -> List[str]:
    for pattern, tests in TEST_MAP:
        if fnmatch.fnmatch(module, pattern):
            return [t for t in tests if os.path.exists(os.path.join(ROOT, t))]
    return []


def expand_modules(targets: Sequence[str]) -> List[str]:
    modules = []
    for target in targets:
        path = os.path.join(ROOT, target)
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                if name.endswith(".py") and name != "__init__.py":
                    modules.append(os.path.join(target, name).replace(os.sep, "/"))
        elif os.path.isfile(path):
            modules.append(target)
        else:
            raise SystemExit(f"mutation: no module or folder '{target}' under {ROOT}")
    return modules


def _copy_tree(dest: str) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info", "output*", "results")
    for name in COPIED:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name), ignore=ignore)
        elif os.path.isfile(src):
            shutil.copy2(src, os.path.join(dest, name))


class _LineTracer:
    """pytest plugin: which lines of one file each test runs (key "" = outside any test,
    e.g. at import), so that a mutant runs only the tests that reach its lines."""

    def __init__(self, filename: str) -> None:
        self.filename = os.path.realpath(filename)
        self.current = ""
        self.lines: Dict[str, set] = {}
        self.order: List[str] = []
        self._seen: Dict[str, bool] = {}

    def _global(self, frame, event, arg):
        name = frame.f_code.co_filename
        ours = self._seen.get(name)
        if ours is None:  # realpath once per file, not once per call
            ours = self._seen[name] = os.path.realpath(name) == self.filename
        return self._local if ours else None

    def _local(self, frame, event, arg):
        if event == "line":
            self.lines.setdefault(self.current, set()).add(frame.f_lineno)
        return self._local

    def start(self) -> None:
        import threading

        sys.settrace(self._global)
        threading.settrace(self._global)

    def pytest_runtest_protocol(self, item, nextitem):  # noqa: ARG002 - pytest hook signature
        self.current = item.nodeid
        self.order.append(item.nodeid)

    def pytest_runtest_logfinish(self, nodeid, location):  # noqa: ARG002
        self.current = ""


def _child(copy_root: str, tests: Sequence[str], quiet: bool, trace: Optional[Tuple[str, str]] = None) -> None:
    """In the forked child: import segkit from the copy and run the tests; never returns.

    ``trace=(module file, output json)`` records the lines each test runs.
    """
    try:
        os.setpgid(0, 0)
        os.chdir(copy_root)
        sys.dont_write_bytecode = True
        sys.path[:0] = [copy_root, os.path.join(copy_root, "tests")]
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [copy_root, os.path.join(copy_root, "plugins", "segkit-example-plugin"), os.environ.get("PYTHONPATH", "")])
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        for name in [m for m in sys.modules if m == "segkit" or m.startswith("segkit.")]:
            del sys.modules[name]
        if quiet:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        import pytest

        plugins = []
        if trace is not None:
            tracer = _LineTracer(trace[0])
            tracer.start()
            plugins.append(tracer)
        code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests], plugins=plugins)
        if trace is not None:
            sys.settrace(None)
            with open(trace[1], "w", encoding="utf-8") as f:
                json.dump({"order": tracer.order, "lines": {k: sorted(v) for k, v in tracer.lines.items()}}, f)
    except BaseException:  # noqa: BLE001 - anything but a clean pass counts as killed
        code = 99
    os._exit(int(code))


def run_tests(copy_root: str, tests: Sequence[str], timeout: float, quiet: bool = True,
              trace: Optional[Tuple[str, str]] = None) -> Tuple[str, float]:
    """Fork a child that runs ``tests``; returns ("passed" | "failed" | "timeout", seconds)."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(copy_root, tests, quiet, trace)
    deadline = start + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            try:  # leftovers of the run (e.g. a worker pool a mutant never shut down)
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            code = os.waitstatus_to_exitcode(status)
            # pytest: 1 tests failed, 2 collection error (the mutant broke an import); 3-5 are
            # problems of the run itself (internal error, usage, nothing collected): not a kill.
            status = {0: "passed", 3: "error", 4: "error", 5: "error"}.get(code, "failed")
            return status, time.monotonic() - start
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)  # the child and anything it started
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - start
        time.sleep(0.05)


def load_equivalent(path: str = EQUIVALENT_FILE) -> Dict[str, str]:
    """``key -> reason`` from the equivalent-mutants file (``key  # reason`` per line)."""
    out: Dict[str, str] = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, _, reason = line.partition("  # ")
            out[key.strip()] = reason.strip()
    return out


def _tests_reaching(span: Tuple[int, int], coverage: dict, files: Sequence[str]) -> List[str]:
    """Test ids that run a line of ``span`` (all files when import-time code does)."""
    lines = set(range(span[0], span[1] + 1))
    if lines & set(coverage["lines"].get("", ())):
        return list(files)
    return [t for t in coverage["order"] if lines & set(coverage["lines"].get(t, ()))]


def run_module(module: str, copy_root: str, args, equivalent: Dict[str, str]) -> List[Mutant]:
    tests = tests_for(module)
    target = os.path.join(copy_root, module)
    with open(os.path.join(ROOT, module), encoding="utf-8") as f:
        original = f.read()
    sites = mutation_sites(original)
    mutants = [Mutant(module, i, site[0], site[1]) for i, site in enumerate(sites)]
    if args.line:
        mutants = [m for m in mutants if m.line in args.line]
    if args.sample and len(mutants) > args.sample:
        # A quick estimate: a fixed random subset (the same for the same --seed).
        mutants = sorted(random.Random(f"{args.seed}:{module}").sample(mutants, args.sample), key=lambda m: m.index)
    if not tests:
        print(f"{module}: no test files mapped; skipped", flush=True)
        return []
    trace_file = os.path.join(copy_root, ".mutation_lines.json")
    trace = None if args.all_tests else (target, trace_file)
    status, base = run_tests(copy_root, tests, timeout=args.baseline_timeout, quiet=not args.verbose, trace=trace)
    if status != "passed":
        raise SystemExit(f"mutation: the tests of {module} ({' '.join(tests)}) do not pass unmutated ({status}).")
    coverage = None
    if trace is not None:
        with open(trace_file, encoding="utf-8") as f:
            coverage = json.load(f)
    timeout = max(args.min_timeout, args.timeout_factor * base)
    print(f"{module}: {len(mutants)} mutants, tests {' '.join(tests)} ({base:.1f} s unmutated, "
          f"timeout {timeout:.0f} s)", flush=True)
    try:
        for i, m in enumerate(mutants):
            if i and i % 25 == 0:
                done = mutants[:i]
                print(f"  ... {i}/{len(mutants)} run: {sum(x.status in ('killed', 'timeout') for x in done)} killed, "
                      f"{sum(x.status == 'equivalent' for x in done)} equivalent", flush=True)
            selected = tests if coverage is None else _tests_reaching(sites[m.index][4], coverage, tests)
            if not selected:  # no test runs this code: the change cannot be noticed
                result = "passed"
            else:
                with open(target, "w", encoding="utf-8") as f:
                    f.write(mutate(original, m.index))
                result, m.seconds = run_tests(copy_root, selected, timeout)
            if result == "passed":
                m.status = "equivalent" if m.key in equivalent else "survived"
                if not selected and m.status == "survived":
                    m.description += " (no test reaches it)"
            elif result == "error":
                m.status = "error"
                print(f"  [error: the tests could not run] {m.key}", flush=True)
            else:
                m.status = "killed" if result == "failed" else "timeout"
            if args.verbose or m.status == "survived":
                print(f"  [{m.status}] {m.key}", flush=True)
    finally:
        with open(target, "w", encoding="utf-8") as f:
            f.write(original)
    return mutants


def score(mutants: Sequence[Mutant]) -> Tuple[int, int, int]:
    """(killed incl. timeouts, equivalent, total); runs that errored are left out of the total."""
    killed = sum(m.status in ("killed", "timeout") for m in mutants)
    equiv = sum(m.status == "equivalent" for m in mutants)
    return killed, equiv, sum(m.status != "error" for m in mutants)


def summary(mutants: Sequence[Mutant]) -> Dict[str, float]:
    """The counts and both scores of one module: ``score`` = killed / total (an equivalent
    mutant counts as not killed) and ``score_without_equivalent`` = killed / (total - equivalent)."""
    killed, equiv, total = score(mutants)
    return {"killed": killed, "equivalent": equiv, "survived": sum(m.status == "survived" for m in mutants),
            "errors": sum(m.status == "error" for m in mutants), "total": total,
            "score": killed / max(total, 1), "score_without_equivalent": killed / max(total - equiv, 1)}


def changed_code(module: str, index: int) -> List[str]:
    """The lines mutant ``index`` changes, as ``-`` / ``+`` lines of the normalised source."""
    with open(os.path.join(ROOT, module), encoding="utf-8") as f:
        original = f.read()
    before = ast.unparse(ast.parse(original)).splitlines()
    after = mutate(original, index).splitlines()
    return [line for line in difflib.unified_diff(before, after, n=0, lineterm="")
            if line[:1] in "-+" and not line.startswith(("---", "+++"))]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=DEFAULT_MODULES, help="modules or folders (default: the core)")
    parser.add_argument("--list", action="store_true", help="list the modules, mutant counts and test files")
    parser.add_argument("--line", type=int, action="append", help="only mutants on this line (repeatable)")
    parser.add_argument("--sample", type=int, default=0, help="run only this many mutants per module (an estimate)")
    parser.add_argument("--seed", type=int, default=0, help="which random subset --sample takes")
    parser.add_argument("--all-tests", action="store_true",
                        help="run every mapped test for each mutant (default: only the tests that reach its lines)")
    parser.add_argument("--timeout-factor", type=float, default=4.0, help="per-mutant timeout / unmutated time")
    parser.add_argument("--min-timeout", type=float, default=30.0, help="per-mutant timeout floor, seconds")
    parser.add_argument("--baseline-timeout", type=float, default=600.0)
    parser.add_argument("--min-score", type=float, default=None, help="exit 1 when a module's score (killed / total) is below this (0-1)")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--show-survivors", action="store_true",
                        help="print the changed code under each surviving mutant")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)

    modules = expand_modules(args.targets)
    if args.list:
        for module in modules:
            with open(os.path.join(ROOT, module), encoding="utf-8") as f:
                n = len(mutation_sites(f.read()))
            print(f"{module:45s} {n:4d} mutants  {' '.join(tests_for(module)) or '(no tests mapped)'}")
        return 0

    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    equivalent = load_equivalent()
    results: Dict[str, List[Mutant]] = {}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="segkit-mutation-") as tmp:
        _copy_tree(tmp)
        for module in modules:
            results[module] = run_module(module, tmp, args, equivalent)
            if results[module]:  # a long run keeps what it has: the module's line, the JSON so far
                s = summary(results[module])
                print(f"{module}: {s['killed']}/{s['total']} killed, {s['equivalent']} equivalent, "
                      f"{s['survived']} survived: {100 * s['score']:.1f}% "
                      f"({100 * s['score_without_equivalent']:.1f}% without the equivalents)", flush=True)
                _write_json(args, results)

    print(f"\n{'module':45s} {'killed':>7s} {'equiv':>6s} {'surv':>5s} {'total':>6s} {'score':>7s} {'w/o eq':>7s}")
    failing = False
    summaries = {}
    for module, mutants in results.items():
        if not mutants:
            continue
        s = summaries[module] = summary(mutants)
        # The headline counts equivalent mutants as not killed; the last column leaves them out.
        failing |= args.min_score is not None and s["score"] < args.min_score
        print(f"{module:45s} {s['killed']:7d} {s['equivalent']:6d} {s['survived']:5d} {s['total']:6d} "
              f"{100 * s['score']:6.1f}% {100 * s['score_without_equivalent']:6.1f}%")
    survivors = [m for ms in results.values() for m in ms if m.status == "survived"]
    print(f"\n{len(survivors)} surviving mutants ({time.monotonic() - start:.0f} s):")
    for m in survivors:
        print(f"  {m.key}")
        if args.show_survivors:
            for line in changed_code(m.module, m.index):
                print(f"      {line}")
    _write_json(args, results)
    return 1 if failing else 0


def _write_json(args, results: Dict[str, List[Mutant]]) -> None:
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"summary": {k: summary(v) for k, v in results.items() if v}, "sample": args.sample,
                       "seed": args.seed, "mutants": {k: [asdict(m) for m in v] for k, v in results.items()}},
                      f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
