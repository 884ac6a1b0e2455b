"""The TSP interpreter: a tree-walking evaluator of the parsed Lua subset with step and
call-depth budgets, the Lua standard library (:mod:`.stdlib`) and the TSP instrument
library (:mod:`.instrument`) installed in its globals.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from . import parser as ast
from .instrument import ErrorQueue, FormatSettings, InstrumentLibrary
from .lexer import LuaSyntaxError
from .stdlib import StandardLibrary
from .values import (
    _BREAK,
    DEFAULT_MAX_CALL_DEPTH,
    DEFAULT_MAX_STEPS,
    RUNTIME_ERROR,
    SYNTAX_ERROR,
    Builtin,
    LuaError,
    LuaFunction,
    LuaTable,
    Scope,
    TspChunkError,
    TspObject,
    _check_length,
    arith,
    fmt_number,
    lua_eq,
    lua_type,
    to_number,
    truthy,
)


class Interpreter(StandardLibrary, InstrumentLibrary):
    """Runs TSP chunks against one Lua global environment.

    ``output(text)`` receives each response message (one per ``print`` /
    ``printbuffer`` / ``printnumber``); ``sleep(s)`` lets instrument time pass (``delay``);
    ``now()`` is the instrument's clock (s). The instrument adds its own globals with
    :meth:`set_global`.
    """

    def __init__(
        self,
        *,
        output: Callable[[str], None],
        sleep: Callable[[float], None] | None = None,
        now: Callable[[], float] | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_call_depth: int = DEFAULT_MAX_CALL_DEPTH,
        seed: int = 0,
    ) -> None:
        self.output = output
        self.sleep = sleep or (lambda s: None)
        self.now = now or time.monotonic
        self.max_steps = int(max_steps)
        self.max_call_depth = int(max_call_depth)
        self.steps = 0
        self.depth = 0
        self.globals = LuaTable()
        self.format = FormatSettings()
        self.errorqueue = ErrorQueue()
        self.rng = random.Random(seed)
        self._timer_origin = self.now()
        self._ev: dict[type, Callable[[Any, Scope], Any]] = {
            ast.Nil: lambda n, s: None,
            ast.TrueLit: lambda n, s: True,
            ast.FalseLit: lambda n, s: False,
            ast.Number: lambda n, s: n.value,
            ast.String: lambda n, s: n.value,
            ast.Vararg: self._ev_vararg,
            ast.Name: self._ev_name,
            ast.Index: self._ev_index,
            ast.Call: self._ev_call1,
            ast.MethodCall: self._ev_call1,
            ast.Function: lambda n, s: LuaFunction(n, s),
            ast.BinOp: self._ev_binop,
            ast.And: self._ev_and,
            ast.Or: self._ev_or,
            ast.UnOp: self._ev_unop,
            ast.Paren: lambda n, s: self.eval(n.expr, s),
            ast.TableCons: self._ev_table,
        }
        self._ex: dict[type, Callable[[Any, Scope], Any]] = {
            ast.Local: self._ex_local,
            ast.LocalFunction: self._ex_local_function,
            ast.Assign: self._ex_assign,
            ast.CallStat: self._ex_callstat,
            ast.Do: self._ex_do,
            ast.While: self._ex_while,
            ast.Repeat: self._ex_repeat,
            ast.If: self._ex_if,
            ast.NumericFor: self._ex_numeric_for,
            ast.GenericFor: self._ex_generic_for,
            ast.Return: self._ex_return,
            ast.Break: lambda n, s: _BREAK,
        }
        self._install_library()

    # -- public API ---------------------------------------------------------------------------
    def set_global(self, name: str, value: Any) -> None:
        self.globals.set(name, value)

    def get_global(self, name: str) -> Any:
        return self.globals.get(name)

    def compile(self, src: str) -> ast.Block:
        """Parse a chunk; raises :class:`TspChunkError` (-285) if it does not parse."""
        try:
            return ast.parse(src)
        except LuaSyntaxError as exc:
            raise TspChunkError(
                SYNTAX_ERROR, f"TSP Syntax error at line {exc.line}: {exc.message}"
            ) from None
        except RecursionError:
            raise TspChunkError(
                SYNTAX_ERROR, "TSP Syntax error at line 1: chunk has too many syntax levels"
            ) from None

    def run(self, src: str) -> None:
        """Parse and execute one chunk; raises :class:`TspChunkError` on any error."""
        self.execute(self.compile(src))

    def execute(self, block: ast.Block) -> list[Any]:
        """Execute a parsed chunk with a fresh step budget; returns its return values."""
        self.steps = 0
        self.depth = 0
        scope = Scope(None)
        scope.vars["..."] = ()
        try:
            r = self.exec_block(block, scope)
        except LuaError as exc:
            raise TspChunkError(RUNTIME_ERROR, self._runtime_message(exc, block)) from None
        except RecursionError:
            raise TspChunkError(
                RUNTIME_ERROR, "TSP Runtime error at line 1: stack overflow"
            ) from None
        except TspChunkError:
            raise
        except Exception as exc:  # noqa: BLE001 - the firmware must never crash
            raise TspChunkError(
                RUNTIME_ERROR,
                f"TSP Runtime error at line 1: internal error ({type(exc).__name__}: {exc})",
            ) from None
        return r if isinstance(r, list) else []

    @staticmethod
    def _runtime_message(exc: LuaError, block: ast.Block) -> str:
        line = exc.line if exc.line is not None else block.line
        return f"TSP Runtime error at line {line}: {exc.message}"

    # -- statements ---------------------------------------------------------------------------
    def count_step(self) -> None:
        """Charge one step against the chunk budget (also used by instrument loops)."""
        self.steps += 1
        if self.steps > self.max_steps:
            raise LuaError(
                f"step budget of {self.max_steps} statements exceeded (emulator limit; infinite loop?)"
            )

    def exec_block(self, block: ast.Block, scope: Scope) -> Any:
        ex = self._ex
        stmt: ast.Node = block
        try:
            for stmt in block.stmts:
                self.steps += 1
                if self.steps > self.max_steps:
                    self.count_step()
                r = ex[type(stmt)](stmt, scope)
                if r is not None:
                    return r
        except LuaError as exc:
            if exc.line is None:
                exc.line = stmt.line
            raise
        return None

    def _ex_local(self, node: ast.Local, scope: Scope) -> None:
        values = self.eval_list(node.exprs, scope)
        vars_ = scope.vars
        for i, name in enumerate(node.names):
            vars_[name] = values[i] if i < len(values) else None

    def _ex_local_function(self, node: ast.LocalFunction, scope: Scope) -> None:
        scope.vars[node.name] = LuaFunction(node.func, scope)

    def _assign(self, target: ast.Node, value: Any, scope: Scope) -> None:
        if type(target) is ast.Name:
            name = target.name
            s: Scope | None = scope
            while s is not None:
                if name in s.vars:
                    s.vars[name] = value
                    return
                s = s.parent
            self.globals.set(name, value)
            return
        assert isinstance(target, ast.Index)
        obj = self.eval(target.obj, scope)
        key = self.eval(target.key, scope)
        self.setindex(obj, key, value, target, scope)

    def _ex_assign(self, node: ast.Assign, scope: Scope) -> None:
        targets = node.targets
        if len(targets) == 1 and len(node.exprs) == 1:
            value = self.eval(node.exprs[0], scope)
            self._assign(targets[0], value, scope)
            return
        values = self.eval_list(node.exprs, scope)
        for i, target in enumerate(targets):
            self._assign(target, values[i] if i < len(values) else None, scope)

    def _ex_callstat(self, node: ast.CallStat, scope: Scope) -> None:
        self.eval_call(node.call, scope)

    def _ex_do(self, node: ast.Do, scope: Scope) -> Any:
        return self.exec_block(node.body, Scope(scope))

    def _ex_while(self, node: ast.While, scope: Scope) -> Any:
        while truthy(self.eval(node.cond, scope)):
            self.count_step()
            r = self.exec_block(node.body, Scope(scope))
            if r is not None:
                return None if r is _BREAK else r
        return None

    def _ex_repeat(self, node: ast.Repeat, scope: Scope) -> Any:
        while True:
            self.count_step()
            inner = Scope(scope)
            r = self.exec_block(node.body, inner)
            if r is not None:
                return None if r is _BREAK else r
            if truthy(self.eval(node.cond, inner)):
                return None

    def _ex_if(self, node: ast.If, scope: Scope) -> Any:
        for cond, block in node.arms:
            if truthy(self.eval(cond, scope)):
                return self.exec_block(block, Scope(scope))
        if node.orelse is not None:
            return self.exec_block(node.orelse, Scope(scope))
        return None

    def _ex_numeric_for(self, node: ast.NumericFor, scope: Scope) -> Any:
        start = to_number(self.eval(node.start, scope))
        if start is None:
            raise LuaError("`for' initial value must be a number", node.line)
        stop = to_number(self.eval(node.stop, scope))
        if stop is None:
            raise LuaError("`for' limit must be a number", node.line)
        step = 1.0
        if node.step is not None:
            s = to_number(self.eval(node.step, scope))
            if s is None:
                raise LuaError("`for' step must be a number", node.line)
            step = s
        i = start
        var = node.var
        body = node.body
        while (i <= stop) if step > 0 else (i >= stop):
            self.count_step()
            inner = Scope(scope)
            inner.vars[var] = i
            r = self.exec_block(body, inner)
            if r is not None:
                return None if r is _BREAK else r
            i += step
        return None

    def _ex_generic_for(self, node: ast.GenericFor, scope: Scope) -> Any:
        values = self.eval_list(node.exprs, scope)
        values += [None] * (3 - len(values))
        f, state, control = values[0], values[1], values[2]
        names = node.names
        body = node.body
        if f is self._next_builtin and type(state) is LuaTable:
            # pairs(t): iterate a snapshot, skipping entries cleared meanwhile.
            for k, _ in state.items():
                v = state.get(k)
                if v is None:
                    continue
                self.count_step()
                r = self._for_body(names, [k, v], body, scope)
                if r is not None:
                    return None if r is _BREAK else r
            return None
        if f is self._ipairs_iter and type(state) is LuaTable:
            i = 1
            while True:
                v = state.get(float(i))
                if v is None:
                    return None
                self.count_step()
                r = self._for_body(names, [float(i), v], body, scope)
                if r is not None:
                    return None if r is _BREAK else r
                i += 1
        while True:
            self.count_step()
            results = self.call(f, [state, control], node)
            first = results[0] if results else None
            if first is None:
                return None
            control = first
            r = self._for_body(names, results, body, scope)
            if r is not None:
                return None if r is _BREAK else r

    def _for_body(self, names: list[str], values: list[Any], body: ast.Block, scope: Scope) -> Any:
        inner = Scope(scope)
        for i, name in enumerate(names):
            inner.vars[name] = values[i] if i < len(values) else None
        return self.exec_block(body, inner)

    def _ex_return(self, node: ast.Return, scope: Scope) -> list[Any]:
        return self.eval_list(node.exprs, scope)

    # -- expressions --------------------------------------------------------------------------
    def eval(self, node: ast.Node, scope: Scope) -> Any:
        t = type(node)
        if t is ast.Name:
            name = node.name  # type: ignore[attr-defined]
            s: Scope | None = scope
            while s is not None:
                v = s.vars
                if name in v:
                    return v[name]
                s = s.parent
            return self.globals.get(name)
        if t is ast.Number:
            return node.value  # type: ignore[attr-defined]
        return self._ev[t](node, scope)

    def eval_list(self, exprs: list[ast.Node], scope: Scope) -> list[Any]:
        if not exprs:
            return []
        out = [self.eval(e, scope) for e in exprs[:-1]]
        last = exprs[-1]
        tl = type(last)
        if tl is ast.Call or tl is ast.MethodCall:
            out.extend(self.eval_call(last, scope))
        elif tl is ast.Vararg:
            out.extend(self._varargs(scope))
        else:
            out.append(self.eval(last, scope))
        return out

    def _varargs(self, scope: Scope) -> tuple[Any, ...]:
        s: Scope | None = scope
        while s is not None:
            if "..." in s.vars:
                return s.vars["..."]  # type: ignore[no-any-return]
            s = s.parent
        return ()

    def _ev_vararg(self, node: ast.Vararg, scope: Scope) -> Any:
        values = self._varargs(scope)
        return values[0] if values else None

    def _ev_name(self, node: ast.Name, scope: Scope) -> Any:
        return self.eval(node, scope)

    def _is_local(self, name: str, scope: Scope | None) -> bool:
        while scope is not None:
            if name in scope.vars:
                return True
            scope = scope.parent
        return False

    def describe(self, node: ast.Node | None, scope: Scope | None) -> str:
        """How Lua names an expression in error messages (``global `x'``, ``field `y'``)."""
        if isinstance(node, ast.Name):
            kind = "local" if self._is_local(node.name, scope) else "global"
            return f"{kind} `{node.name}'"
        if isinstance(node, ast.Index) and isinstance(node.key, ast.String):
            return f"field `{node.key.value}'"
        if isinstance(node, ast.MethodCall):
            return f"method `{node.name}'"
        return ""

    def _type_error(
        self, what: str, node: ast.Node | None, value: Any, scope: Scope | None
    ) -> LuaError:
        desc = self.describe(node, scope)
        line = node.line if node is not None else None
        if desc:
            return LuaError(f"attempt to {what} {desc} (a {lua_type(value)} value)", line)
        return LuaError(f"attempt to {what} a {lua_type(value)} value", line)

    def index(
        self, obj: Any, key: Any, node: ast.Node | None = None, scope: Scope | None = None
    ) -> Any:
        t = type(obj)
        if t is LuaTable:
            return obj.get(key)
        if isinstance(obj, TspObject):
            return obj.tsp_get(key)
        if t is str:
            return self._string_lib.get(key)
        raise self._type_error(
            "index", node.obj if isinstance(node, ast.Index) else node, obj, scope
        )

    def setindex(
        self,
        obj: Any,
        key: Any,
        value: Any,
        node: ast.Node | None = None,
        scope: Scope | None = None,
    ) -> None:
        t = type(obj)
        if t is LuaTable:
            obj.set(key, value)
            return
        if isinstance(obj, TspObject):
            obj.tsp_set(key, value)
            return
        raise self._type_error(
            "index", node.obj if isinstance(node, ast.Index) else node, obj, scope
        )

    def _ev_index(self, node: ast.Index, scope: Scope) -> Any:
        obj = self.eval(node.obj, scope)
        if type(obj) is LuaTable:
            return obj.get(self.eval(node.key, scope))
        return self.index(obj, self.eval(node.key, scope), node, scope)

    def _ev_call1(self, node: ast.Node, scope: Scope) -> Any:
        results = self.eval_call(node, scope)
        return results[0] if results else None

    def eval_call(self, node: ast.Node, scope: Scope) -> list[Any]:
        if type(node) is ast.MethodCall:
            obj = self.eval(node.obj, scope)
            fn = self.index(obj, node.name, node, scope)
            if fn is None:
                raise self._type_error("call", node, fn, scope)
            args = [obj, *self.eval_list(node.args, scope)]
            return self.call(fn, args, node, node, scope)
        assert isinstance(node, ast.Call)
        fn = self.eval(node.func, scope)
        args = self.eval_list(node.args, scope)
        return self.call(fn, args, node, node.func, scope)

    def call(
        self,
        fn: Any,
        args: list[Any],
        node: ast.Node | None,
        fnode: ast.Node | None = None,
        scope: Scope | None = None,
    ) -> list[Any]:
        t = type(fn)
        if t is LuaFunction:
            return self._call_lua(fn, args)
        if t is Builtin:
            try:
                r = fn.fn(*args)
            except LuaError as exc:
                if exc.line is None and node is not None:
                    exc.line = node.line
                raise
            except TspChunkError:
                raise
            except RecursionError:
                raise
            except (
                TypeError,
                ValueError,
                OverflowError,
                ZeroDivisionError,
                IndexError,
                KeyError,
            ) as exc:
                raise LuaError(
                    f"bad argument to `{fn.name}' ({exc})", node.line if node else None
                ) from None
            if r is None:
                return []
            if type(r) is tuple:
                return [float(v) if type(v) is int else v for v in r]
            if type(r) is int:
                return [float(r)]
            return [r]
        callable_obj = getattr(fn, "tsp_call", None)
        if callable_obj is not None:
            return self.call(callable_obj, args, node, fnode, scope)
        raise self._type_error("call", fnode, fn, scope)

    def _call_lua(self, fn: LuaFunction, args: list[Any]) -> list[Any]:
        self.depth += 1
        try:
            if self.depth > self.max_call_depth:
                raise LuaError(f"stack overflow (more than {self.max_call_depth} nested calls)")
            f = fn.node
            scope = Scope(fn.closure)
            vars_ = scope.vars
            params = f.params
            n = len(args)
            for i, p in enumerate(params):
                vars_[p] = args[i] if i < n else None
            vars_["..."] = tuple(args[len(params) :]) if f.is_vararg else ()
            r = self.exec_block(f.body, scope)
            if r is None or r is _BREAK:
                return []
            return r  # type: ignore[no-any-return]
        finally:
            self.depth -= 1

    def _ev_and(self, node: ast.And, scope: Scope) -> Any:
        left = self.eval(node.left, scope)
        return self.eval(node.right, scope) if truthy(left) else left

    def _ev_or(self, node: ast.Or, scope: Scope) -> Any:
        left = self.eval(node.left, scope)
        return left if truthy(left) else self.eval(node.right, scope)

    def _ev_binop(self, node: ast.BinOp, scope: Scope) -> Any:
        op = node.op
        a = self.eval(node.left, scope)
        b = self.eval(node.right, scope)
        ta, tb = type(a), type(b)
        if ta is float and tb is float:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "<":
                return a < b
            if op == "<=":
                return a <= b
            if op == ">":
                return a > b
            if op == ">=":
                return a >= b
            if op == "==":
                return a == b
            if op == "~=":
                return a != b
        if op == "==":
            return lua_eq(a, b)
        if op == "~=":
            return not lua_eq(a, b)
        if op == "..":
            return self._concat(a, b, node, scope)
        if op in ("<", "<=", ">", ">="):
            return self._compare(op, a, b, node)
        x = to_number(a) if ta is not bool else None
        if x is None:
            raise self._type_error("perform arithmetic on", node.left, a, scope)
        y = to_number(b) if tb is not bool else None
        if y is None:
            raise self._type_error("perform arithmetic on", node.right, b, scope)
        return arith(op, x, y)

    def _concat(self, a: Any, b: Any, node: ast.BinOp, scope: Scope) -> str:
        parts = []
        for v, sub in ((a, node.left), (b, node.right)):
            t = type(v)
            if t is str:
                parts.append(v)
            elif t is float or t is int:
                parts.append(fmt_number(float(v)))
            else:
                raise self._type_error("concatenate", sub, v, scope)
        _check_length(len(parts[0]) + len(parts[1]))
        return parts[0] + parts[1]

    @staticmethod
    def _compare(op: str, a: Any, b: Any, node: ast.Node) -> bool:
        ta, tb = lua_type(a), lua_type(b)
        if ta == tb and ta in ("number", "string"):
            if op == "<":
                return bool(a < b)
            if op == "<=":
                return bool(a <= b)
            if op == ">":
                return bool(a > b)
            return bool(a >= b)
        if ta == tb:
            raise LuaError(f"attempt to compare two {ta} values", node.line)
        raise LuaError(f"attempt to compare {ta} with {tb}", node.line)

    def _ev_unop(self, node: ast.UnOp, scope: Scope) -> Any:
        v = self.eval(node.operand, scope)
        op = node.op
        if op == "not":
            return not truthy(v)
        if op == "-":
            x = to_number(v) if type(v) is not bool else None
            if x is None:
                raise self._type_error("perform arithmetic on", node.operand, v, scope)
            return -x
        t = type(v)
        if t is str:
            return float(len(v))
        if t is LuaTable:
            return float(v.length())
        if isinstance(v, TspObject):
            return float(v.tsp_len())
        raise self._type_error("get length of", node.operand, v, scope)

    def _ev_table(self, node: ast.TableCons, scope: Scope) -> LuaTable:
        t = LuaTable()
        i = 1
        items = node.items
        last = len(items) - 1
        for k, (key, value) in enumerate(items):
            if key is None:
                tv = type(value)
                if k == last and (tv is ast.Call or tv is ast.MethodCall or tv is ast.Vararg):
                    for v in self.eval_list([value], scope):
                        t.set(float(i), v)
                        i += 1
                else:
                    t.set(float(i), self.eval(value, scope))
                    i += 1
            else:
                kv = self.eval(key, scope)
                try:
                    t.set(kv, self.eval(value, scope))
                except LuaError as exc:
                    exc.line = key.line
                    raise
        return t

    # -- library ---------------------------------------------------------------------------------
    def _install_library(self) -> None:
        self._install_standard_library()
        self._install_instrument_library()
