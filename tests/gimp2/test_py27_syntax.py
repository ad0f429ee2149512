"""The GIMP 2.10 plug-in and the bridge it imports must run on Python 2.7 (GIMP 2.10's Python-Fu).

The check (py27_check) is itself tested both ways: every snippet it flags really fails
on Python 2.7 (or, for the two semantic cases, behaves differently there), and the Python 2.7
idioms the plug-in relies on pass it and run on Python 2.7.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from gimp2_harness import BRIDGE, COMMON, PLUGIN, SERVICE
from interpreters import python27
from py27_check import parso_errors, py27_problems

# (snippet, words expected in the problem found). All of them fail on a real Python 2.7.
BAD = [
    ("name = 'x'\nprint(f'{name}')\n", "f-strings"),
    ("def outer():\n    x = 1\n    def inner():\n        nonlocal x\n    inner()\nouter()\n", "nonlocal"),
    ("def f(a, *, b=1):\n    return a\n", "keyword-only"),
    ("def f(a: int) -> int:\n    return a\n", "annotations"),
    ("x: int = 1\n", "variable annotations"),
    ("async def f():\n    pass\n", "async"),
    ("def g():\n    yield from range(3)\n", "yield from"),
    ("def g():\n    yield 1\n    return 2\n", "generator"),
    ("if (n := 3):\n    pass\n", "3.6 syntax"),
    ("def f(a, /):\n    return a\n", "3.6 syntax"),
    ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    raise ValueError('x') from e\n", "raise"),
    ("import numpy\nx = numpy.eye(2) @ numpy.eye(2)\n", "`@`"),
    ("a, *rest = [1, 2, 3]\n", "unpacking"),
    ("items = [*range(2)]\n", "unpacking"),
    ("merged = {**{}, 'a': 1}\n", "dict display"),
    ("def f(*a, **k):\n    pass\nf(*[1], *[2])\n", "unpacking"),
    ("def f(**k):\n    pass\nf(**{'a': 1}, **{'b': 2})\n", "more than one"),
    ("from __future__ import print_function\nprint('x', flush=True)\n", "flush"),
    ("from __future__ import annotations\n", "future feature"),
    ("import pathlib\n", "pathlib"),
    ("try:\n    import http.client\nexcept ValueError:\n    pass\n", "http"),
    ("from typing import List\n", "typing"),
    ("import queue\n", "queue"),
    ("from urllib.parse import quote\n", "urllib.parse"),
    ("import subprocess\nsubprocess.run(['true'])\n", "subprocess.run"),
    ("import subprocess as sp\nsp.call(['true'], stdout=sp.DEVNULL)\n", "subprocess.DEVNULL"),
    ("from subprocess import run\n", "subprocess.run"),
    ("import subprocess\nsubprocess.Popen(['true']).wait(timeout=5)\n", "timeout"),
    ("import shutil\nshutil.which('ls')\n", "shutil.which"),
    ("import os\nos.makedirs('.', exist_ok=True)\n", "exist_ok"),
    ("import os\nos.replace('a', 'b')\n", "os.replace"),
    ("import tempfile\ntempfile.TemporaryDirectory()\n", "TemporaryDirectory"),
    ("import time\ntime.monotonic()\n", "time.monotonic"),
    ("try:\n    open('/no/such/file')\nexcept FileNotFoundError:\n    pass\n", "FileNotFoundError"),
    ("try:\n    pass\nexcept PermissionError:\n    pass\nraise ValueError\n", "PermissionError"),
    ("raise TimeoutError('slow')\n", "TimeoutError"),
    ("b'ab'.hex()\n", ".hex()"),
    ("(1).to_bytes(2, 'big')\n", ".to_bytes()"),
    ("bytes.fromhex('00')\n", "bytes.fromhex"),
    ("'{a}'.format_map({'a': 1})\n", ".format_map()"),
    ("class A(object):\n    def __init__(self):\n        super().__init__()\nA()\n", "super()"),
    ("handle = open('/dev/null', encoding='utf-8')\n", "io.open"),
    ("max([], default=0)\n", "default="),
    ("x = 1_000\n", "underscores"),
    ("x = rb'raw'\n", "prefix"),
    ("x = ...\n", "`...`"),
    ("class M(type):\n    pass\nclass A(metaclass=M):\n    pass\n", "class keywords"),
    ("# caf\u00e9\nx = 1\n", "coding"),
]
# Flagged although Python 2.7 runs them: the output differs (a tuple is printed).
SEMANTIC = [("print('a', 'b')\n", "print_function")]
# Python 2.7 idioms the plug-in and the bridge use: the check must let them through.
GOOD = [
    "try:\n    import http.client as httplib\nexcept ImportError:\n    import httplib\nstatus = httplib.OK\n",
    "from __future__ import absolute_import, division, print_function, unicode_literals\nprint('a', 'b')\n",
    "def f(a, *args, **kwargs):\n    return a\nf(1, *[2], **{'c': 3})\nf(1, *[2], c=3)\n",
    "try:\n    1 / 0\nexcept (ZeroDivisionError, ValueError) as error:\n    message = '%s' % error\n",
    "import io, os, json, subprocess, tempfile, shutil, signal\nfolder = tempfile.mkdtemp()\n"
    "with io.open(os.path.join(folder, 'x'), 'w', encoding='utf-8') as h:\n    h.write(u'{}')\n"
    "shutil.rmtree(folder)\n",
    "class A(object):\n    def __init__(self):\n        super(A, self).__init__()\nA()\n",
    "def g():\n    yield 1\n    return\nlist(g())\n",
    "def g():\n    def helper():\n        return 2\n    yield helper()\nlist(g())\n",
    "data = b'\\x00' + br'\\d' + u'text'.encode('utf-8')\nsquares = {k: k * k for k in range(3)}\n",
    "with open('/dev/null') as a, open('/dev/null') as b:\n    pass\n",
    "import subprocess\nsubprocess.Popen(['true'], stdin=subprocess.PIPE, close_fds=True).wait()\n",
    "# -*- coding: utf-8 -*-\nname = 'caf\u00e9'\n",
    "'{0} {1}'.format(1, 2)\n",
]


def run_on_python27(source: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "snippet.py"
    path.write_text(source, encoding="utf-8")
    return subprocess.run([python27(), str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=60)


@pytest.mark.parametrize(
    "path", [PLUGIN, BRIDGE, SERVICE, COMMON], ids=["plug-in", "bridge", "service-client", "common"]
)
def test_runs_on_python27(path: Path) -> None:
    problems = py27_problems(path.read_text(encoding="utf-8"))
    assert not problems, "\n".join(f"{path.name} {problem}" for problem in problems)


@pytest.mark.parametrize(
    "path", [PLUGIN, BRIDGE, SERVICE, COMMON], ids=["plug-in", "bridge", "service-client", "common"]
)
def test_compiles_on_a_real_python27(path: Path) -> None:
    check = "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')"
    done = subprocess.run([python27(), "-c", check, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_parso_layer_rejects_syntax_newer_than_its_grammar() -> None:
    assert parso_errors("if (n := 3):\n    pass\n")
    assert parso_errors("def f(a, /):\n    return a\n")
    assert not parso_errors("x = [i for i in range(3)]\n")


@pytest.mark.parametrize(("source", "expected"), BAD + SEMANTIC, ids=lambda v: v if len(v) < 20 else None)
def test_check_flags_python3_only_code(source: str, expected: str) -> None:
    problems = [str(problem) for problem in py27_problems(source)]
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(("source", "expected"), BAD, ids=lambda v: v if len(v) < 20 else None)
def test_flagged_snippets_really_fail_on_python27(source: str, expected: str, tmp_path: Path) -> None:
    done = run_on_python27(source, tmp_path)
    assert done.returncode != 0, f"Python 2.7 ran {source!r} without error: drop it from the check"


def test_print_without_future_import_prints_a_tuple_on_python27(tmp_path: Path) -> None:
    done = run_on_python27(SEMANTIC[0][0], tmp_path)
    assert done.stdout.strip() == "('a', 'b')"


@pytest.mark.parametrize("source", GOOD)
def test_python27_idioms_pass_the_check_and_run(source: str, tmp_path: Path) -> None:
    assert [str(problem) for problem in py27_problems(source)] == []
    done = run_on_python27(textwrap.dedent(source), tmp_path)
    assert done.returncode == 0, done.stderr
