"""Finds what keeps a Python file from running on Python 2.7 (GIMP 2.10's Python-Fu).

parso 0.8 no longer ships a 2.7 grammar, so the check has two layers: parso's oldest
grammar (3.6) rejects the syntax of Python 3.7 and later (walrus, positional-only
parameters, ...), and a walk over the Python 3 syntax tree and tokens flags what 3.0-3.6
added (f-strings, keyword-only arguments, annotations, `nonlocal`, `yield from`, ...) and
the standard-library names, modules, keywords and exceptions that 2.7 lacks.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass

import parso

OLDEST_PARSO_GRAMMAR = "3.6"
PY27_FUTURE = {
    "nested_scopes",
    "generators",
    "division",
    "absolute_import",
    "with_statement",
    "print_function",
    "unicode_literals",
}
PY3_MODULES = {
    "pathlib",
    "typing",
    "asyncio",
    "concurrent",
    "enum",
    "dataclasses",
    "contextvars",
    "secrets",
    "statistics",
    "selectors",
    "ipaddress",
    "lzma",
    "faulthandler",
    "tracemalloc",
    "venv",
    "zipapp",
    "builtins",
    "queue",
    "configparser",
    "socketserver",
    "reprlib",
    "html",
    "http",
    "xmlrpc",
    "_thread",
    "copyreg",
    "winreg",
    "tkinter",
    "graphlib",
    "zoneinfo",
    "importlib.util",
    "importlib.resources",
    "importlib.metadata",
    "urllib.request",
    "urllib.parse",
    "urllib.error",
    "shlex.quote",
}
PY3_ATTRIBUTES = {
    "subprocess": {"run", "DEVNULL", "TimeoutExpired", "CompletedProcess", "getstatusoutput"},
    "shutil": {"which", "disk_usage", "get_terminal_size", "chown"},
    "os": {
        "replace",
        "scandir",
        "cpu_count",
        "get_terminal_size",
        "fsencode",
        "fsdecode",
        "set_inheritable",
        "get_inheritable",
        "makedirs_exist_ok",
        "getrandom",
        "sched_getaffinity",
        "PathLike",
        "fspath",
    },
    "tempfile": {"TemporaryDirectory"},
    "time": {"monotonic", "perf_counter", "process_time", "time_ns", "monotonic_ns"},
    "math": {"isclose", "inf", "nan", "gcd", "isqrt", "prod", "tau"},
    "functools": {"lru_cache", "partialmethod", "singledispatch", "cached_property", "cache"},
    "itertools": {"accumulate", "zip_longest"},
    "contextlib": {"suppress", "ExitStack", "redirect_stdout", "redirect_stderr", "nullcontext"},
    "json": {"JSONDecodeError"},
    "signal": {"pthread_sigmask", "pthread_kill", "sigwait", "Signals"},
    "threading": {"get_ident", "main_thread", "TIMEOUT_MAX"},
    "sys": {"getswitchinterval", "setswitchinterval", "implementation", "base_prefix"},
    "str": {"maketrans"},
    "bytes": {"fromhex", "maketrans"},
    "int": {"from_bytes"},
}
PY3_METHODS = {
    "format_map",
    "casefold",
    "isascii",
    "isidentifier",
    "isprintable",
    "removeprefix",
    "removesuffix",
    "to_bytes",
    "from_bytes",
    "hex",
}
PY3_BUILTINS = {
    "FileNotFoundError",
    "FileExistsError",
    "PermissionError",
    "TimeoutError",
    "IsADirectoryError",
    "NotADirectoryError",
    "ProcessLookupError",
    "ChildProcessError",
    "ConnectionError",
    "BrokenPipeError",
    "ConnectionAbortedError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "BlockingIOError",
    "InterruptedError",
    "RecursionError",
    "ModuleNotFoundError",
    "StopAsyncIteration",
    "ResourceWarning",
    "ascii",
    "breakpoint",
    "aiter",
    "anext",
}
PY3_KEYWORDS = {"exist_ok", "start_new_session", "pass_fds", "restore_signals"}
BUILTIN_OPEN_KEYWORDS = {"encoding", "errors", "newline", "closefd", "opener"}
TIMEOUT_METHODS = {"wait", "communicate", "check_call", "check_output", "call"}


@dataclass(frozen=True)
class Problem:
    line: int
    what: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what}"


def parso_errors(source: str) -> list[Problem]:
    """Syntax errors under parso's oldest grammar: catches everything newer than Python 3.6."""
    grammar = parso.load_grammar(version=OLDEST_PARSO_GRAMMAR)
    module = grammar.parse(source)
    errors = grammar.iter_errors(module)
    return [Problem(error.start_pos[0], f"not Python 3.6 syntax ({error.message})") for error in errors]


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(name, ast.Name) and name.id == "ImportError" for name in names)


class _Py3Finder(ast.NodeVisitor):
    """Flags Python 3.0-3.6 syntax and names that Python 2.7 does not have."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.aliases: dict[str, str] = {}  # local name -> module, from `import x [as y]`
        self.future: set[str] = set()
        self.in_subscript = False
        self.import_guarded = False  # inside a `try` whose handler catches ImportError

    def flag(self, node: ast.AST, what: str) -> None:
        self.problems.append(Problem(getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.aliases[alias.asname or alias.name.split(".")[0]] = alias.name
            self._check_module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module == "__future__":
            self.future.update(alias.name for alias in node.names)
            for alias in node.names:
                if alias.name not in PY27_FUTURE:
                    self.flag(node, f"`from __future__ import {alias.name}` does not exist in 2.7")
            return
        self._check_module(node, module)
        for alias in node.names:
            self._check_module(node, f"{module}.{alias.name}")
            if alias.name in PY3_ATTRIBUTES.get(module, ()):
                self.flag(node, f"{module}.{alias.name} is Python 3 only")

    def _check_module(self, node: ast.AST, name: str) -> None:
        if self.import_guarded:
            return
        if name in PY3_MODULES or name.split(".")[0] in PY3_MODULES:
            self.flag(node, f"module {name} is not in Python 2.7's standard library")

    def visit_Try(self, node: ast.Try) -> None:
        # `try: import http.client ... except ImportError: import httplib`: Python 2.7 takes the fallback.
        guarded = any(_catches_import_error(handler) for handler in node.handlers)
        outer, self.import_guarded = self.import_guarded, self.import_guarded or guarded
        for statement in node.body:
            self.visit(statement)
        self.import_guarded = outer
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self.flag(node, "f-strings are Python 3.6+")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.flag(node, "`nonlocal` is Python 3 only")

    def visit_YieldFrom(self, node: ast.YieldFrom) -> None:
        self.flag(node, "`yield from` is Python 3 only")

    def visit_Await(self, node: ast.Await) -> None:
        self.flag(node, "`await` is Python 3 only")

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.flag(node, "`async def` is Python 3 only")
        self.generic_visit(node)

    visit_AsyncFor = visit_AsyncWith = visit_AsyncFunctionDef  # type: ignore[assignment]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        args = node.args
        if args.kwonlyargs:
            self.flag(node, f"keyword-only arguments in {node.name}() are Python 3 only")
        if args.posonlyargs:
            self.flag(node, f"positional-only arguments in {node.name}() are Python 3.8+")
        annotated = [a for a in args.args + args.kwonlyargs + [args.vararg, args.kwarg] if a and a.annotation]
        if annotated or node.returns:
            self.flag(node, f"annotations in {node.name}() are Python 3 only")
        if self._returns_value_in_generator(node):
            self.flag(node, f"{node.name}() returns a value from a generator (2.7: SyntaxError)")
        self.generic_visit(node)

    @staticmethod
    def _returns_value_in_generator(node: ast.FunctionDef) -> bool:
        inner = list(_own_nodes(node))
        has_yield = any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in inner)
        return has_yield and any(isinstance(n, ast.Return) and n.value is not None for n in inner)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.flag(node, "variable annotations are Python 3.6+")

    def visit_NamedExpr(self, node: ast.AST) -> None:
        self.flag(node, "`:=` is Python 3.8+")

    def visit_Raise(self, node: ast.Raise) -> None:
        if node.cause is not None:
            self.flag(node, "`raise ... from ...` is Python 3 only")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.MatMult):
            self.flag(node, "`@` is Python 3.5+")
        self.generic_visit(node)

    def visit_Starred(self, node: ast.Starred) -> None:
        self.flag(node, "`*` unpacking outside a call's last positional argument is Python 3 only")
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        if any(key is None for key in node.keys):
            self.flag(node, "`**` unpacking in a dict display is Python 3.5+")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if node.value is Ellipsis and not self.in_subscript:
            self.flag(node, "`...` outside a subscript is Python 3 only")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.visit(node.value)
        outer, self.in_subscript = self.in_subscript, True
        self.visit(node.slice)
        self.in_subscript = outer

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if node.keywords:
            self.flag(node, f"class keywords (metaclass=...) in {node.name} are Python 3 only")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in PY3_BUILTINS:
            self.flag(node, f"{node.id} does not exist in Python 2.7")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name):
            module = self.aliases.get(node.value.id, node.value.id)
            if node.attr in PY3_ATTRIBUTES.get(module, ()):
                self.flag(node, f"{module}.{node.attr} is Python 3 only")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        self._check_call_shape(node)
        self._check_keywords(node)
        if isinstance(node.func, ast.Attribute) and node.func.attr in PY3_METHODS:
            self.flag(node, f".{node.func.attr}() is a Python 3 method")
        if isinstance(node.func, ast.Name) and node.func.id == "super" and not node.args:
            self.flag(node, "super() needs its arguments on Python 2.7")
        is_print = isinstance(node.func, ast.Name) and node.func.id == "print"
        if is_print and "print_function" not in self.future:
            self.flag(node, "print() without `from __future__ import print_function` prints a tuple")
        self.visit(node.func)
        for arg in node.args:
            self.visit(arg.value if self._is_trailing_star(node, arg) else arg)
        for keyword in node.keywords:
            self.visit(keyword.value)

    @staticmethod
    def _is_trailing_star(call: ast.Call, arg: ast.expr) -> bool:
        return isinstance(arg, ast.Starred) and arg is call.args[-1]

    def _check_call_shape(self, node: ast.Call) -> None:
        if sum(1 for k in node.keywords if k.arg is None) > 1:
            self.flag(node, "more than one `**` in a call is Python 3.5+")

    def _check_keywords(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        for keyword in node.keywords:
            if keyword.arg in PY3_KEYWORDS:
                self.flag(keyword.value, f"keyword {keyword.arg}= does not exist in Python 2.7")
            elif name == "open" and isinstance(func, ast.Name) and keyword.arg in BUILTIN_OPEN_KEYWORDS:
                self.flag(keyword.value, f"2.7's open() has no {keyword.arg}=: use io.open")
            elif name == "print" and keyword.arg == "flush":
                self.flag(keyword.value, "print(flush=) is Python 3.3+")
            elif name in ("min", "max") and keyword.arg == "default":
                self.flag(keyword.value, f"{name}(default=) is Python 3.4+")
            elif name in TIMEOUT_METHODS and keyword.arg == "timeout":
                self.flag(keyword.value, f"{name}(timeout=) is Python 3.3+")


def _own_nodes(function: ast.FunctionDef):
    """The nodes of `function`'s body, not those of functions or lambdas nested in it."""
    stack = list(function.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def token_problems(source: str) -> list[Problem]:
    """What only the tokens show: `1_000`, `rb''` strings, and non-ASCII without a coding line."""
    problems = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NUMBER and "_" in token.string:
            problems.append(Problem(token.start[0], "underscores in numbers are Python 3.6+"))
        is_string = token.type == tokenize.STRING
        prefix = re.match(r"[A-Za-z]*", token.string).group(0).lower() if is_string else ""
        if "r" in prefix and "b" in prefix and not prefix.startswith("b"):
            problems.append(Problem(token.start[0], f"string prefix {prefix!r}: Python 2.7 takes only 'br'"))
    if not source.isascii() and not re.search(r"coding[:=]\s*utf-?8", "\n".join(source.splitlines()[:2])):
        problems.append(Problem(1, "non-ASCII text needs `# -*- coding: utf-8 -*-` on Python 2.7"))
    return problems


def py27_problems(source: str) -> list[Problem]:
    """Everything found in `source` that Python 2.7 cannot run, in line order."""
    problems = parso_errors(source)
    if not problems:  # the syntax tree exists only for code that parses
        finder = _Py3Finder()
        finder.visit(ast.parse(source))
        problems = finder.problems + token_problems(source)
    return sorted(problems, key=lambda p: p.line)
