"""The mutants of one Python file: realistic one-token slips, found with `ast`, applied to the source text.

Each mutant changes one token (or drops one call statement) and leaves every other byte of the file as it
was, so a mutant's diff is one line. Operators:

  arith      + <-> -, * <-> /, // -> /, % -> //, ** -> *          (also the augmented forms += -= *= /=)
  compare    < <-> <=, > <-> >=, == <-> !=, is <-> is not, in <-> not in
  bool       and <-> or;  `not x` -> x
  negate     -x -> x
  number     an int n -> n + 1; a float x -> 2x (0.0 -> 1.0)
  truth      True <-> False
  call       a call made for its effect (`opt.zero_grad()`) -> pass

Not mutated: docstrings and other strings, annotations, imports, `if __name__ == "__main__"` blocks, calls
that only talk to people (print, logging, warnings, tqdm), and lines marked `# mutants: skip (<why>)`;
a `def` line so marked skips the whole function.
"""

from __future__ import annotations

import ast
import bisect
import hashlib
import re
from dataclasses import dataclass

ARITH = {
    ast.Add: ("+", "-"),
    ast.Sub: ("-", "+"),
    ast.Mult: ("*", "/"),
    ast.Div: ("/", "*"),
    ast.FloorDiv: ("//", "/"),
    ast.Mod: ("%", "//"),
    ast.Pow: ("**", "*"),
}
COMPARE = {
    ast.Lt: ("<", "<="),
    ast.LtE: ("<=", "<"),
    ast.Gt: (">", ">="),
    ast.GtE: (">=", ">"),
    ast.Eq: ("==", "!="),
    ast.NotEq: ("!=", "=="),
    ast.Is: ("is", "is not"),
    ast.IsNot: ("is not", "is"),
    ast.In: ("in", "not in"),
    ast.NotIn: ("not in", "in"),
}
BOOL = {ast.And: ("and", "or"), ast.Or: ("or", "and")}
TALK = {
    "print",
    "warn",
    "info",
    "debug",
    "warning",
    "error",
    "exception",
    "write",
    "set_postfix",
    "set_description",
    "update",
    "close",
    "refresh",
    "flush",
}
TALK_OWNERS = {"log", "logger", "logging", "warnings", "bar", "pbar", "progress", "sys.stderr", "sys.stdout"}
SKIP_MARK = "# mutants: skip"


@dataclass(frozen=True)
class Mutant:
    """One slip: where it is, what it does, and the whole mutated file."""

    path: str
    line: int
    op: str
    before: str  # the original line, stripped
    after: str  # the mutated line, stripped
    source: str
    lines: tuple[int, int] = (0, 0)  # the tests that run any of these lines cover it; (0, 0): the whole file

    @property
    def key(self) -> str:
        """Stable across edits elsewhere in the file: the path, the line's text and the slip."""
        digest = hashlib.sha1(f"{self.path}\0{self.before}\0{self.after}".encode()).hexdigest()[:10]
        return f"{self.path}:{digest}"


def _offsets(source: str) -> list[int]:
    starts, pos = [0], 0
    for line in source.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


class _Finder(ast.NodeVisitor):
    """Collects (start, end, replacement, op) text edits, one per mutant."""

    def __init__(self, source: str):
        self.source = source
        self.starts = _offsets(source)
        self.lines = source.splitlines()
        self.edits: list[tuple[int, int, str, str, int, int]] = []
        self.in_function = 0
        self.stmt_lines = (1, 1)  # the lines of the statement (a compound statement's header) being visited

    # positions ------------------------------------------------------------------------------------------
    def pos(self, line: int, col: int) -> int:
        return self.starts[line - 1] + len(self.lines[line - 1].encode()[:col].decode(errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.pos(node.lineno, node.col_offset), self.pos(node.end_lineno, node.end_col_offset)

    def token_between(self, a: int, b: int, token: str, op: str, new: str) -> None:
        """Replace the first `token` (as a whole token) in source[a:b], skipping brackets and comments."""
        text = self.source[a:b]
        words = r"\b" if token[0].isalpha() else ""
        pattern = re.compile(rf"{words}{re.escape(token)}{words}" + ("" if words else r"(?![=*/])"))
        for m in pattern.finditer(text):
            if "#" in text[: m.start()].split("\n")[-1]:
                continue
            self.add(a + m.start(), a + m.end(), new, op)
            return

    def add(self, a: int, b: int, new: str, op: str) -> None:
        self.edits.append((a, b, new, op, *self.stmt_lines))

    def visit(self, node: ast.AST) -> None:
        if not isinstance(node, ast.stmt):
            return super().visit(node)
        outer = self.stmt_lines
        body = getattr(node, "body", None)
        if not self.in_function:  # runs at import, outside any test: every test that uses the file covers it
            self.stmt_lines = (0, 0)
        elif isinstance(body, list) and body:
            self.stmt_lines = (node.lineno, max(node.lineno, body[0].lineno - 1))
        else:
            self.stmt_lines = (node.lineno, node.end_lineno)
        try:
            return super().visit(node)
        finally:
            self.stmt_lines = outer

    # skipping -------------------------------------------------------------------------------------------
    def skipped(self, node: ast.AST) -> bool:
        return SKIP_MARK in self.lines[node.lineno - 1]

    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.stmt) and self.skipped(node):
            return
        super().generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if self.skipped(node):
            return
        outer, self.stmt_lines = self.stmt_lines, (node.body[0].lineno, node.end_lineno)
        for d in node.decorator_list:
            self.visit(d)
        self.visit(node.args)  # defaults matter when the body runs
        self.stmt_lines, self.in_function = outer, self.in_function + 1
        for stmt in node.body:
            self.visit(stmt)
        self.in_function -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_arguments(self, node: ast.arguments) -> None:
        for d in [*node.defaults, *[d for d in node.kw_defaults if d is not None]]:
            self.visit(d)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Import(self, node: ast.AST) -> None:
        return

    visit_ImportFrom = visit_Import

    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if test in ('__name__ == "__main__"', "__name__ == '__main__'") or test == "TYPE_CHECKING":
            return
        self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # a docstring
        if isinstance(node.value, ast.Call) and not _talks(node.value):
            a, b = self.span(node)
            self.add(a, b, "pass", "call")
        if isinstance(node.value, ast.Call) and _talks(node.value):
            return
        self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # f-strings are messages

    def visit_Call(self, node: ast.Call) -> None:
        if _talks(node):
            return
        self.generic_visit(node)

    def visit_Raise(self, node: ast.Raise) -> None:
        return  # the message; the condition that raises lives in the enclosing `if`

    # operators ------------------------------------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> None:
        self.generic_visit(node)
        if type(node.op) not in ARITH or _stringy(node.left) or _stringy(node.right):
            return
        token, new = ARITH[type(node.op)]
        self.token_between(self.span(node.left)[1], self.span(node.right)[0], token, "arith", new)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.generic_visit(node)
        if type(node.op) not in ARITH or _stringy(node.value):
            return
        token, new = ARITH[type(node.op)]
        self.token_between(
            self.span(node.target)[1], self.span(node.value)[0], token + "=", "arith", new + "="
        )

    def visit_Compare(self, node: ast.Compare) -> None:
        self.generic_visit(node)
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            token, new = COMPARE[type(op)]
            self.token_between(self.span(left)[1], self.span(right)[0], token, "compare", new)
            left = right

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self.generic_visit(node)
        token, new = BOOL[type(node.op)]
        self.token_between(self.span(node.values[0])[1], self.span(node.values[1])[0], token, "bool", new)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not | ast.USub) and not isinstance(node.operand, ast.Constant):
            a, _ = self.span(node)
            token = "not" if isinstance(node.op, ast.Not) else "-"
            b = a + len(token)
            while self.source[b] in " \t":
                b += 1
            self.add(a, b, "", "bool" if token == "not" else "negate")
        elif isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            a, b = self.span(node)
            value = node.operand.value
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.add(a, b, repr(-_bump(value)), "number")

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        a, b = self.span(node)
        if isinstance(value, bool):
            self.add(a, b, repr(not value), "truth")
        elif isinstance(value, int | float) and not isinstance(value, complex):
            self.add(a, b, repr(_bump(value)), "number")


def _bump(value: int | float) -> int | float:
    if isinstance(value, int):
        return value + 1
    return 1.0 if value == 0 else value * 2


def _stringy(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _talks(call: ast.Call) -> bool:
    """A call that only prints, logs, warns or draws a progress bar."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in {"print", "tqdm"}
    if isinstance(func, ast.Attribute):
        owner = ast.unparse(func.value)
        return (
            owner in TALK_OWNERS
            or (func.attr in TALK and owner.split(".")[-1] in TALK_OWNERS)
            or (func.attr in {"warn", "info", "debug", "warning", "print", "_log"})
        )
    return False


def mutants(path: str, source: str) -> list[Mutant]:
    """Every mutant of one file, in source order (duplicates of the same edit removed). Edits are token for
    token, so they parse by construction; the runner still compiles each before running it."""
    finder = _Finder(source)
    finder.visit(ast.parse(source))
    found, seen = [], set()
    starts, lines = finder.starts, finder.lines
    for a, b, new, op, first, last in sorted(set(finder.edits)):
        mutated = source[:a] + new + source[b:]
        line = bisect.bisect_right(starts, a)
        line_start = starts[line - 1]
        line_end = source.find("\n", b)
        before = lines[line - 1].strip()
        after = (source[line_start:a] + new + source[b : len(source) if line_end < 0 else line_end]).strip()
        after = " ".join(after.split()) if "\n" in after else after
        m = Mutant(path, line, op, before, after, mutated, (first, last))
        if m.key not in seen:
            seen.add(m.key)
            found.append(m)
    return found
