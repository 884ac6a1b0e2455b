"""Recursive-descent parser for the TSP Lua subset: tokens -> AST (see :mod:`nvmlab.mocks.firmware.tsp`).

The grammar is Lua's (5.1 surface syntax, which is a superset of the 5.0 that TSP
firmware runs): statements, blocks, function bodies, table constructors, and the
expression precedence climbing of the reference implementation (``or`` < ``and`` <
comparisons < ``..`` (right) < ``+ -`` < ``* / %`` < unary ``not # -`` < ``^`` (right)).
Nesting depth is bounded (:data:`MAX_NESTING`) so a pathological chunk is a syntax
error, not a Python ``RecursionError``.
"""

from __future__ import annotations

from .lexer import LuaSyntaxError, Token, tokenize

#: Deepest allowed nesting of blocks / parenthesised expressions / constructors
#: (Lua's own C-level limit is 200).
MAX_NESTING = 120


class Node:
    """Base AST node; ``line`` is where the construct starts (1-based)."""

    __slots__ = ("line",)

    def __init__(self, line: int) -> None:
        self.line = line


# --- expressions ---------------------------------------------------------------------
class Nil(Node):
    __slots__ = ()


class TrueLit(Node):
    __slots__ = ()


class FalseLit(Node):
    __slots__ = ()


class Vararg(Node):
    __slots__ = ()


class Number(Node):
    __slots__ = ("value",)

    def __init__(self, line: int, value: float) -> None:
        super().__init__(line)
        self.value = value


class String(Node):
    __slots__ = ("value",)

    def __init__(self, line: int, value: str) -> None:
        super().__init__(line)
        self.value = value


class Name(Node):
    __slots__ = ("name",)

    def __init__(self, line: int, name: str) -> None:
        super().__init__(line)
        self.name = name


class Index(Node):
    """``obj[key]`` or ``obj.name`` (then ``key`` is a :class:`String`)."""

    __slots__ = ("obj", "key")

    def __init__(self, line: int, obj: Node, key: Node) -> None:
        super().__init__(line)
        self.obj = obj
        self.key = key


class Call(Node):
    __slots__ = ("func", "args")

    def __init__(self, line: int, func: Node, args: list[Node]) -> None:
        super().__init__(line)
        self.func = func
        self.args = args


class MethodCall(Node):
    """``obj:name(args)``."""

    __slots__ = ("obj", "name", "args")

    def __init__(self, line: int, obj: Node, name: str, args: list[Node]) -> None:
        super().__init__(line)
        self.obj = obj
        self.name = name
        self.args = args


class Function(Node):
    """A function body: parameter names, vararg flag, block, and a name for messages."""

    __slots__ = ("params", "is_vararg", "body", "name")

    def __init__(
        self, line: int, params: list[str], is_vararg: bool, body: Block, name: str
    ) -> None:
        super().__init__(line)
        self.params = params
        self.is_vararg = is_vararg
        self.body = body
        self.name = name


class BinOp(Node):
    __slots__ = ("op", "left", "right")

    def __init__(self, line: int, op: str, left: Node, right: Node) -> None:
        super().__init__(line)
        self.op = op
        self.left = left
        self.right = right


class And(Node):
    __slots__ = ("left", "right")

    def __init__(self, line: int, left: Node, right: Node) -> None:
        super().__init__(line)
        self.left = left
        self.right = right


class Or(Node):
    __slots__ = ("left", "right")

    def __init__(self, line: int, left: Node, right: Node) -> None:
        super().__init__(line)
        self.left = left
        self.right = right


class UnOp(Node):
    __slots__ = ("op", "operand")

    def __init__(self, line: int, op: str, operand: Node) -> None:
        super().__init__(line)
        self.op = op
        self.operand = operand


class Paren(Node):
    """A parenthesised expression: truncates multiple values to one."""

    __slots__ = ("expr",)

    def __init__(self, line: int, expr: Node) -> None:
        super().__init__(line)
        self.expr = expr


class TableCons(Node):
    """``{...}``: positional items and (key, value) pairs, in source order."""

    __slots__ = ("items",)

    def __init__(self, line: int, items: list[tuple[Node | None, Node]]) -> None:
        super().__init__(line)
        self.items = items


# --- statements ------------------------------------------------------------------------
class Block(Node):
    __slots__ = ("stmts",)

    def __init__(self, line: int, stmts: list[Node]) -> None:
        super().__init__(line)
        self.stmts = stmts


class Local(Node):
    __slots__ = ("names", "exprs")

    def __init__(self, line: int, names: list[str], exprs: list[Node]) -> None:
        super().__init__(line)
        self.names = names
        self.exprs = exprs


class LocalFunction(Node):
    __slots__ = ("name", "func")

    def __init__(self, line: int, name: str, func: Function) -> None:
        super().__init__(line)
        self.name = name
        self.func = func


class Assign(Node):
    __slots__ = ("targets", "exprs")

    def __init__(self, line: int, targets: list[Node], exprs: list[Node]) -> None:
        super().__init__(line)
        self.targets = targets
        self.exprs = exprs


class CallStat(Node):
    __slots__ = ("call",)

    def __init__(self, line: int, call: Node) -> None:
        super().__init__(line)
        self.call = call


class Do(Node):
    __slots__ = ("body",)

    def __init__(self, line: int, body: Block) -> None:
        super().__init__(line)
        self.body = body


class While(Node):
    __slots__ = ("cond", "body")

    def __init__(self, line: int, cond: Node, body: Block) -> None:
        super().__init__(line)
        self.cond = cond
        self.body = body


class Repeat(Node):
    __slots__ = ("body", "cond")

    def __init__(self, line: int, body: Block, cond: Node) -> None:
        super().__init__(line)
        self.body = body
        self.cond = cond


class If(Node):
    """``if`` with its ``elseif`` arms as (condition, block) pairs, then an optional else."""

    __slots__ = ("arms", "orelse")

    def __init__(self, line: int, arms: list[tuple[Node, Block]], orelse: Block | None) -> None:
        super().__init__(line)
        self.arms = arms
        self.orelse = orelse


class NumericFor(Node):
    __slots__ = ("var", "start", "stop", "step", "body")

    def __init__(
        self, line: int, var: str, start: Node, stop: Node, step: Node | None, body: Block
    ) -> None:
        super().__init__(line)
        self.var = var
        self.start = start
        self.stop = stop
        self.step = step
        self.body = body


class GenericFor(Node):
    __slots__ = ("names", "exprs", "body")

    def __init__(self, line: int, names: list[str], exprs: list[Node], body: Block) -> None:
        super().__init__(line)
        self.names = names
        self.exprs = exprs
        self.body = body


class Return(Node):
    __slots__ = ("exprs",)

    def __init__(self, line: int, exprs: list[Node]) -> None:
        super().__init__(line)
        self.exprs = exprs


class Break(Node):
    __slots__ = ()


# --- the parser ----------------------------------------------------------------------------
#: Binary operator priorities (left, right) as in the Lua reference implementation.
_BINARY_PRIORITY: dict[str, tuple[int, int]] = {
    "+": (6, 6),
    "-": (6, 6),
    "*": (7, 7),
    "/": (7, 7),
    "%": (7, 7),
    "^": (10, 9),
    "..": (5, 4),
    "==": (3, 3),
    "~=": (3, 3),
    "<": (3, 3),
    "<=": (3, 3),
    ">": (3, 3),
    ">=": (3, 3),
    "and": (2, 2),
    "or": (1, 1),
}
_UNARY_PRIORITY = 8
_BLOCK_END = frozenset(("else", "elseif", "end", "until", "eof"))


class Parser:
    """Parses one chunk; use :func:`parse`."""

    def __init__(self, src: str) -> None:
        self.tokens = tokenize(src)
        self.pos = 0
        self.tok: Token = self.tokens[0]
        self.depth = 0
        self.loops = 0

    # -- helpers ------------------------------------------------------------------------
    def _advance(self) -> Token:
        tok = self.tok
        self.pos += 1
        if self.pos < len(self.tokens):
            self.tok = self.tokens[self.pos]
        return tok

    def _peek(self) -> Token:
        return self.tokens[min(self.pos + 1, len(self.tokens) - 1)]

    def _error(self, message: str) -> LuaSyntaxError:
        return LuaSyntaxError(f"{message} near `{self.tok.text()}'", self.tok.line)

    def _check(self, kind: str) -> bool:
        return self.tok.kind == kind

    def _accept(self, kind: str) -> bool:
        if self.tok.kind == kind:
            self._advance()
            return True
        return False

    def _expect(self, kind: str) -> Token:
        if self.tok.kind != kind:
            raise self._error(f"`{kind}' expected")
        return self._advance()

    def _expect_match(self, what: str, opener: str, line: int) -> None:
        if self.tok.kind == what:
            self._advance()
            return
        if line == self.tok.line:
            raise self._error(f"`{what}' expected")
        raise self._error(f"`{what}' expected (to close `{opener}' at line {line})")

    def _name(self) -> str:
        if self.tok.kind != "name":
            raise self._error("<name> expected")
        return str(self._advance().value)

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self._error(f"chunk has too many syntax levels (limit {MAX_NESTING})")

    def _leave(self) -> None:
        self.depth -= 1

    # -- blocks and statements -------------------------------------------------------------
    def parse_chunk(self) -> Block:
        block = self._block()
        if not self._check("eof"):
            raise self._error("`<eof>' expected")
        return block

    def _block(self) -> Block:
        self._enter()
        line = self.tok.line
        stmts: list[Node] = []
        while self.tok.kind not in _BLOCK_END:
            if self.tok.kind == "return":
                stmts.append(self._return())
                break
            if self.tok.kind == "break":
                if self.loops == 0:
                    raise self._error("no loop to break")
                stmts.append(Break(self._advance().line))
                self._accept(";")
                break
            stmt = self._statement()
            if stmt is not None:
                stmts.append(stmt)
        self._leave()
        return Block(line, stmts)

    def _loop_block(self) -> Block:
        self.loops += 1
        try:
            return self._block()
        finally:
            self.loops -= 1

    def _return(self) -> Return:
        line = self._advance().line
        exprs: list[Node] = []
        if self.tok.kind not in _BLOCK_END and self.tok.kind != ";":
            exprs = self._exprlist()
        self._accept(";")
        return Return(line, exprs)

    def _statement(self) -> Node | None:
        tok = self.tok
        kind = tok.kind
        line = tok.line
        if kind == ";":
            self._advance()
            return None
        if kind == "if":
            return self._if()
        if kind == "while":
            self._advance()
            cond = self._expr()
            self._expect("do")
            body = self._loop_block()
            self._expect_match("end", "while", line)
            return While(line, cond, body)
        if kind == "do":
            self._advance()
            body = self._block()
            self._expect_match("end", "do", line)
            return Do(line, body)
        if kind == "for":
            return self._for()
        if kind == "repeat":
            self._advance()
            body = self._loop_block()
            self._expect_match("until", "repeat", line)
            return Repeat(line, body, self._expr())
        if kind == "function":
            return self._function_stat()
        if kind == "local":
            self._advance()
            if self._accept("function"):
                name = self._name()
                return LocalFunction(line, name, self._funcbody(line, name, is_method=False))
            names = [self._name()]
            while self._accept(","):
                names.append(self._name())
            exprs: list[Node] = []
            if self._accept("="):
                exprs = self._exprlist()
            return Local(line, names, exprs)
        return self._expr_stat()

    def _if(self) -> If:
        line = self._advance().line
        arms: list[tuple[Node, Block]] = []
        cond = self._expr()
        self._expect("then")
        arms.append((cond, self._block()))
        orelse: Block | None = None
        while True:
            if self._accept("elseif"):
                cond = self._expr()
                self._expect("then")
                arms.append((cond, self._block()))
                continue
            if self._accept("else"):
                orelse = self._block()
            self._expect_match("end", "if", line)
            return If(line, arms, orelse)

    def _for(self) -> Node:
        line = self._advance().line
        first = self._name()
        if self._accept("="):
            start = self._expr()
            self._expect(",")
            stop = self._expr()
            step = self._expr() if self._accept(",") else None
            self._expect("do")
            body = self._loop_block()
            self._expect_match("end", "for", line)
            return NumericFor(line, first, start, stop, step, body)
        if self.tok.kind in (",", "in"):
            names = [first]
            while self._accept(","):
                names.append(self._name())
            self._expect("in")
            exprs = self._exprlist()
            self._expect("do")
            body = self._loop_block()
            self._expect_match("end", "for", line)
            return GenericFor(line, names, exprs, body)
        raise self._error("`=' or `in' expected")

    def _function_stat(self) -> Assign:
        line = self._advance().line
        name = self._name()
        target: Node = Name(line, name)
        full = name
        is_method = False
        while self.tok.kind in (".", ":"):
            sep = self._advance().kind
            key = self._name()
            full += sep + key
            target = Index(line, target, String(line, key))
            if sep == ":":
                is_method = True
                break
        func = self._funcbody(line, full, is_method=is_method)
        return Assign(line, [target], [func])

    def _funcbody(self, line: int, name: str, *, is_method: bool) -> Function:
        self._enter()
        params: list[str] = ["self"] if is_method else []
        is_vararg = False
        self._expect("(")
        if not self._check(")"):
            while True:
                if self._accept("..."):
                    is_vararg = True
                    break
                params.append(self._name())
                if not self._accept(","):
                    break
        self._expect(")")
        saved_loops, self.loops = self.loops, 0
        body = self._block()
        self.loops = saved_loops
        self._expect_match("end", "function", line)
        self._leave()
        return Function(line, params, is_vararg, body, name)

    def _expr_stat(self) -> Node:
        line = self.tok.line
        expr = self._suffixed()
        if self.tok.kind in ("=", ","):
            targets = [expr]
            while self._accept(","):
                targets.append(self._suffixed())
            for t in targets:
                if not isinstance(t, (Name, Index)):
                    raise self._error("syntax error")
            self._expect("=")
            return Assign(line, targets, self._exprlist())
        if not isinstance(expr, (Call, MethodCall)):
            raise self._error("syntax error")
        return CallStat(line, expr)

    # -- expressions ----------------------------------------------------------------------------
    def _exprlist(self) -> list[Node]:
        exprs = [self._expr()]
        while self._accept(","):
            exprs.append(self._expr())
        return exprs

    def _expr(self, limit: int = 0) -> Node:
        self._enter()
        tok = self.tok
        if tok.kind in ("not", "-", "#"):
            self._advance()
            operand = self._expr(_UNARY_PRIORITY)
            if tok.kind == "-" and isinstance(operand, Number):
                left: Node = Number(tok.line, -operand.value)
            else:
                left = UnOp(tok.line, tok.kind, operand)
        else:
            left = self._simple()
        while True:
            op = self.tok.kind
            prio = _BINARY_PRIORITY.get(op)
            if prio is None or prio[0] <= limit:
                break
            line = self._advance().line
            right = self._expr(prio[1])
            if op == "and":
                left = And(line, left, right)
            elif op == "or":
                left = Or(line, left, right)
            else:
                left = BinOp(line, op, left, right)
        self._leave()
        return left

    def _simple(self) -> Node:
        tok = self.tok
        kind = tok.kind
        if kind == "number":
            self._advance()
            return Number(tok.line, float(tok.value))  # type: ignore[arg-type]
        if kind == "string":
            self._advance()
            return String(tok.line, str(tok.value))
        if kind == "nil":
            self._advance()
            return Nil(tok.line)
        if kind == "true":
            self._advance()
            return TrueLit(tok.line)
        if kind == "false":
            self._advance()
            return FalseLit(tok.line)
        if kind == "...":
            self._advance()
            return Vararg(tok.line)
        if kind == "{":
            return self._table()
        if kind == "function":
            self._advance()
            return self._funcbody(tok.line, "anonymous", is_method=False)
        return self._suffixed()

    def _primary(self) -> Node:
        tok = self.tok
        if tok.kind == "name":
            self._advance()
            return Name(tok.line, str(tok.value))
        if tok.kind == "(":
            self._advance()
            expr = self._expr()
            self._expect_match(")", "(", tok.line)
            return Paren(tok.line, expr)
        raise self._error("unexpected symbol")

    def _suffixed(self) -> Node:
        expr = self._primary()
        while True:
            tok = self.tok
            kind = tok.kind
            if kind == ".":
                self._advance()
                expr = Index(tok.line, expr, String(tok.line, self._name()))
            elif kind == "[":
                self._advance()
                key = self._expr()
                self._expect("]")
                expr = Index(tok.line, expr, key)
            elif kind == ":":
                self._advance()
                name = self._name()
                expr = MethodCall(tok.line, expr, name, self._args())
            elif kind in ("(", "string", "{"):
                expr = Call(tok.line, expr, self._args())
            else:
                return expr

    def _args(self) -> list[Node]:
        tok = self.tok
        if tok.kind == "string":
            self._advance()
            return [String(tok.line, str(tok.value))]
        if tok.kind == "{":
            return [self._table()]
        if tok.kind != "(":
            raise self._error("function arguments expected")
        self._advance()
        args: list[Node] = []
        if not self._check(")"):
            args = self._exprlist()
        self._expect_match(")", "(", tok.line)
        return args

    def _table(self) -> TableCons:
        self._enter()
        line = self._advance().line
        items: list[tuple[Node | None, Node]] = []
        while not self._check("}"):
            if self._check("["):
                self._advance()
                key = self._expr()
                self._expect("]")
                self._expect("=")
                items.append((key, self._expr()))
            elif self._check("name") and self._peek().kind == "=":
                key_tok = self._advance()
                self._advance()
                items.append((String(key_tok.line, str(key_tok.value)), self._expr()))
            else:
                items.append((None, self._expr()))
            if not (self._accept(",") or self._accept(";")):
                break
        self._expect_match("}", "{", line)
        self._leave()
        return TableCons(line, items)


def parse(src: str) -> Block:
    """Parse a chunk; raises :class:`LuaSyntaxError` (with line) on bad input."""
    return Parser(src).parse_chunk()
