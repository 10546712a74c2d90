"""In a chapter's notebook, a cell that needs an unsolved exercise says so in one line, and the
notebook goes on.

Each chapter's first code cell loads this IPython extension (``%load_ext
minirlhf.course.unsolved``). From then on every cell runs inside a guard: when it reaches the
stub of a solution region (``raise NotImplementedError  # your code here``, in the library or in
a notebook cell), it prints

    this cell needs exercise 1.3 (layer-norm-backward: minirlhf/autograd/functional.py,
    layer_norm_backward): solve it and re-run

on one line instead of a traceback, and the cell ends without an error, so "Run All" goes on to
the next cell. After that, a cell that fails for want of what such a cell did not make (a name it
never defined, a file it never wrote) says so in one line too, with its error and the exercise
the notebook waits for (``%tb`` still shows the traceback). Before any cell stopped, every error
is raised as usual: in the teacher's copy no cell reaches a stub, and nothing changes.

The exercise is read from the comment above its region (``# exercise layer-norm-backward: ...``;
a notebook's own region says ``# exercise: ...``), numbered as its chapter numbers it.
"""

from __future__ import annotations

import ast
import linecache
import re
import sys
from pathlib import Path

from minirlhf.course.classroom import STUB  # the stub a student copy holds in each region

GUARD = "_minirlhf_unsolved"  # the name the guard gives the handler in the user's namespace
LAST = "_minirlhf_last"  # where a guarded cell keeps its last expression's value, to display it

_waiting: list[str] = []  # what the cells stopped at so far, in order: "exercise 2.2 (...)"


def load_ipython_extension(ipython) -> None:
    """``%load_ext minirlhf.course.unsolved``: guard every cell from now on (once)."""
    if not any(isinstance(t, _Guard) for t in ipython.ast_transformers):
        ipython.ast_transformers.append(_Guard())
    ipython.user_ns[GUARD] = handle


def unload_ipython_extension(ipython) -> None:
    ipython.ast_transformers[:] = [t for t in ipython.ast_transformers
                                   if not isinstance(t, _Guard)]


class _Guard(ast.NodeTransformer):
    """Wrap a cell's statements in ``try: ... except Exception as e: if not handle(e): raise``;
    the last expression's value is kept and shown after the guard, as IPython shows it."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        body = node.body
        if not body or _imports_future(body):
            return node
        last = body[-1] if isinstance(body[-1], ast.Expr) else None
        inner = body[:-1] if last else body
        if last:
            inner = [*inner, ast.Assign(targets=[ast.Name(LAST, ast.Store())], value=last.value)]
        before = [ast.Assign(targets=[ast.Name(LAST, ast.Store())], value=ast.Constant(None))]
        caught = ast.Name("_minirlhf_error", ast.Load())
        handler = ast.ExceptHandler(
            type=ast.Name("Exception", ast.Load()), name="_minirlhf_error",
            body=[ast.If(test=ast.UnaryOp(ast.Not(), ast.Call(
                ast.Name(GUARD, ast.Load()), [caught], [])), body=[ast.Raise()], orelse=[])])
        guarded = ast.Try(body=inner or [ast.Pass()], handlers=[handler], orelse=[],
                          finalbody=[])
        after = [ast.Expr(ast.Name(LAST, ast.Load()))] if last else []
        for new in (*before, guarded):
            ast.copy_location(new, body[0])
        for new in after:
            ast.copy_location(new, last)
        node.body = [*before, guarded, *after]
        return ast.fix_missing_locations(node)


def _imports_future(body: list[ast.stmt]) -> bool:
    return any(isinstance(s, ast.ImportFrom) and s.module == "__future__" for s in body)


def handle(error: BaseException) -> bool:
    """Print the one line for an error that an unsolved exercise explains, and return True; return
    False for any other error (the cell raises it as usual). The error stays where ``%tb`` finds
    it, for whoever wants its traceback."""
    stub = stub_of(error)
    if stub is not None:
        _waiting.append(stub)
        line = f"this cell needs {stub}: solve it and re-run"
    elif _waiting:  # after a cell stopped: what it did not make (a name, a file, a result)
        said = (str(error).splitlines() or [""])[0]
        said = _shorter(said)
        line = (f"this cell needs what a cell above did not make ({type(error).__name__}: "
                f"{said}); that cell needs {_waiting[-1]}: solve it and re-run from there")
    else:
        return False
    sys.last_type, sys.last_value, sys.last_traceback = type(error), error, error.__traceback__
    print(line)
    return True


def _shorter(text: str, most: int = 160) -> str:
    """``text`` cut to about ``most`` characters, its first command between backticks kept
    whole (cut, it would not run when pasted): the words before and after it are cut instead,
    a side that needs less room leaving it to the other, and no later command is cut in two."""
    if len(text) <= most:
        return text
    start = text.find("`")
    end = text.find("`", start + 1) if start >= 0 else -1
    if end < 0:
        return text[:most - 3] + "..."
    head, command, tail = text[:start], text[start:end + 1], text[end + 1:]
    room = max(most - len(command), 0)
    keep_head = min(len(head), max(room // 2, room - len(tail)))
    keep_tail = room - keep_head
    if len(head) > keep_head:
        head = "..." + head[len(head) - max(keep_head - 3, 0):]
    if len(tail) > keep_tail:
        tail = tail[:max(keep_tail - 3, 0)]
        if tail.count("`") % 2:  # a later command cut in two: end before it
            tail = tail[:tail.rfind("`")]
        tail += "..."
    return head + command + tail


def stub_of(error: BaseException) -> str | None:
    """What the error waits for, "exercise 1.3 (layer-norm-backward: ...)", when it (or an error
    it caused, or that caused it) is a NotImplementedError raised by a region's stub; else
    None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, NotImplementedError):
            tb = error.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                frame = tb.tb_frame
                line = linecache.getline(frame.f_code.co_filename, tb.tb_lineno).strip()
                if line == STUB:
                    return _exercise(frame.f_code, tb.tb_lineno)
        error = error.__cause__ or error.__context__
    return None


def _exercise(code, lineno: int) -> str:
    """The exercise whose region holds line ``lineno`` of ``code``'s file, from the comment
    above the stub: "exercise 1.3 (layer-norm-backward: minirlhf/autograd/functional.py,
    layer_norm_backward)"."""
    from minirlhf.course.exercises import EXERCISES

    above = [linecache.getline(code.co_filename, k).strip()
             for k in range(max(1, lineno - 4), lineno)]
    named = next((m for line in reversed(above)
                  if (m := re.match(r"# exercise ([a-z0-9, -]+):", line))), None)
    if named is None:  # a notebook's own region: "# exercise: ..."
        function = getattr(code, "co_qualname", code.co_name).replace(".<locals>", "")
        return f"the exercise in this notebook's {function} (where it says 'your code here')"
    chosen = [next(e for e in EXERCISES if e.name == n.strip()) for n in named[1].split(",")]
    numbers = [f"{e.chapter}.{[x for x in EXERCISES if x.chapter == e.chapter].index(e) + 1}"
               for e in chosen]
    return (f"exercise {' / '.join(numbers)} ({' / '.join(e.name for e in chosen)}: "
            f"{where(chosen[0])})")


def where(exercise) -> str:
    """'minirlhf/autograd/functional.py, softmax': the file and the function an exercise's
    ``where`` names (the longest prefix that is a file of the package)."""
    package = Path(__file__).resolve().parents[1]
    parts = exercise.where.split(".")
    k = max(i for i in range(1, len(parts))
            if package.joinpath(*parts[:i]).with_suffix(".py").exists())
    return f"minirlhf/{'/'.join(parts[:k])}.py, {'.'.join(parts[k:])}"
