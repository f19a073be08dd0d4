r"""Segment-style subscription conditions: parsed once, then matched against every event.

Each mapping names the events it applies to with a condition in Segment's subscription
syntax (the FQL subset Segment's destination subscriptions understand), for example::

    type = "track" and event = "Audience Entered"
    type = "identify" or properties.total >= 100
    (type = "track" and contains(properties.coupon, "SALE")) or all
    !match(userId, "test-*")

Grammar (keywords are lowercase and case-sensitive; whitespace is free between tokens,
but a field is written without spaces around its dots)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | "!" function | primary
    primary    := "(" expr ")" | "all" | function | comparison
    function   := ("contains" | "match") "(" field "," string ")"
    comparison := field ("=" | "!=") value | field ("<" | "<=" | ">" | ">=") number
    field      := name ("." name)*
    name       := (start | escape) (rest | escape)*      escape := "\" any character
    start      := [A-Za-z_$]                             rest := [A-Za-z0-9_$-]
    value      := string | number | "true" | "false" | "null"
    string     := '"' (any character but '"' or '\', or one of \" \\ \n \t)* '"'
    number     := "-"? digits ("." digits)?

``and`` binds tighter than ``or``; parentheses nest at most 100 deep (counting ``not``).
A backslash in a field takes the next character as part of the key (Segment writes
``properties.product\ 1.price`` for the key ``product 1``); a name followed by ``(`` is a
function call, anywhere else ``contains`` and ``match`` are ordinary fields.

Meaning (Segment's ``validate`` rules, one rule for every field):

- a field is looked up by walking nested mappings from the event root; a missing key, or
  a path that runs through anything but a mapping, leaves the field absent;
- ``= "text"`` holds for that exact string; ``!= "text"`` for anything else, absent too;
- ``= 3`` holds for a number of that value (``3`` and ``3.0``, never ``"3"`` nor
  ``true``); ``!= 3`` only for a number of another value (a string, a boolean, null or an
  absent field gives false); ``<``, ``<=``, ``>``, ``>=`` hold only for numbers;
- ``= true``/``= false`` hold only for that boolean, ``!=`` is their negation;
- ``= null`` holds for a present null *or* an absent field, ``!= null`` for any other value;
- ``contains(field, "text")`` holds when the field is a string holding the text;
  ``match(field, "pattern")`` when the field is a string matching the pattern, where
  ``*`` stands for any run of characters and every other character is itself;
  ``!contains`` and ``!match`` hold when the field is a string that does *not* (so an
  absent field gives false, unlike ``not contains(...)``);
- ``all`` matches every event.

``parse_subscription`` turns the text into an immutable ``Condition`` tree, or raises
``MappingError`` naming the column of the first problem. The tree is compiled for the hot
path: paths are pre-split, each test is specialised for its operator and value, and
nested ``and``/``or`` are flattened. ``str(condition)`` is the canonical text, which parses
back to an equal condition.
"""

from __future__ import annotations

import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple, TypeAlias

from destination.errors import MappingError
from destination.kit.sql import NotCompiled, Scope, SqlValue, sql_string

__all__ = ["Condition", "parse_subscription"]

_Value: TypeAlias = str | int | float | bool | None
_Test: TypeAlias = Callable[[Mapping[str, Any]], bool]
_Kind: TypeAlias = Literal["field", "keyword", "string", "number", "operator", "(", ")", ",", "end"]

_ABSENT = object()  # what a lookup finds when the field is not in the event
_KEYWORD_VALUES = MappingProxyType({"true": True, "false": False, "null": None})
_KEYWORDS = frozenset({"and", "or", "not", "all", *_KEYWORD_VALUES})
_DIGITS = frozenset("0123456789")
_MAX_NUMBER = 1e308
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_$")
_NAME_REST = _NAME_START | _DIGITS | {"-"}
_OPERATOR_CHARS = frozenset("=!<>~")
_OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
_ORDERINGS: Mapping[str, Callable[[Any, Any], bool]] = MappingProxyType(
    {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
)
_OPERATOR_LIST = ", ".join(_OPERATORS)
_FUNCTIONS = ("contains", "match")
_ESCAPES = MappingProxyType({'"': '"', "\\": "\\", "n": "\n", "t": "\t"})
_MAX_NESTING = 100
_EXCERPT_WIDTH = 120
_TOKEN_WIDTH = 40


# --------------------------------------------------------------------------- the tree


class Condition(ABC):
    """A compiled subscription condition; immutable, hashable, equal by structure.

    ``str()`` gives the canonical text of the expression (useful in logs).
    """

    __slots__ = ()
    _precedence: ClassVar[int]  # 1 for "or", 2 for "and", 3 for "not", 4 for atoms

    @abstractmethod
    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether the event satisfies the condition; never raises, whatever it holds."""

    @abstractmethod
    def __str__(self) -> str:
        """The canonical text of the condition."""

    @abstractmethod
    def to_sql(self, scope: Scope) -> str:
        """The condition as an SQL boolean (never NULL) over the values ``scope`` reads
        (the compiled route); ``NotCompiled`` for what it does not cover."""

    def __repr__(self) -> str:
        return f"Condition({str(self)!r})"


def _lookup(event: object, path: tuple[str, ...]) -> object:
    """The value at ``path`` under ``event``, or ``_ABSENT``."""
    found = event
    for key in path:
        if type(found) is dict:  # the usual case, kept cheap
            found = found.get(key, _ABSENT)
        elif isinstance(found, Mapping):
            try:
                found = found.get(key, _ABSENT)
            except Exception:  # a foreign mapping that fails to look up holds nothing
                return _ABSENT
        else:
            return _ABSENT
    return found


def _is_number(found: object) -> bool:
    """Whether a looked-up value is a JSON number (a boolean is not one, as in JavaScript)."""
    return isinstance(found, int | float) and not isinstance(found, bool)


def _equality_test(value: _Value) -> Callable[[object], bool]:
    """A test telling whether a looked-up value (maybe ``_ABSENT``) equals ``value``."""
    if value is None:
        return lambda found: found is None or found is _ABSENT
    if isinstance(value, bool):
        return lambda found: found is value
    if isinstance(value, str):
        return lambda found: isinstance(found, str) and found == value
    return lambda found: _is_number(found) and found == value


def _comparison_test(symbol: str, value: _Value) -> Callable[[object], bool]:
    """The test for ``field <symbol> value``, built once per comparison.

    ``!=`` is the negation of ``=`` except on a number, where Segment asks for a number
    that differs: an absent field, a string ``"3"`` or a boolean never passes ``!= 3``.
    """
    if symbol in _ORDERINGS:
        compare = _ORDERINGS[symbol]
        return lambda found: _is_number(found) and compare(found, value)
    equals = _equality_test(value)
    if symbol == "=":
        return equals
    if _value_kind(value) == "number":
        return lambda found: _is_number(found) and found != value
    return lambda found: not equals(found)


def _equality_sql(found: SqlValue, value: _Value, text: str) -> str:
    """``found = value`` in SQL, as ``_equality_test`` decides it (numbers: not compiled,
    JSON numbers being read apart by the two routes)."""
    if value is None:
        return f"({found.kind} IS NULL OR {found.kind} = 'NULL')"
    if isinstance(value, bool):
        return (
            f"coalesce({found.kind} = 'BOOLEAN' AND {found.text} = '{str(value).lower()}', FALSE)"
        )
    if isinstance(value, str):
        return f"coalesce({found.kind} = 'VARCHAR' AND {found.text} = {sql_string(value)}, FALSE)"
    raise NotCompiled(f"the comparison {text} (numbers are not compiled)")


def _glob_test(pattern: str) -> Callable[[str], bool]:
    """A test of a whole string against ``pattern``, ``*`` standing for any run of characters.

    The usual Segment patterns (``"abc*"``, ``"*abc"``) become plain ``startswith`` and
    ``endswith`` calls; only patterns with stars inside need a regular expression.
    """
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern.__eq__
    if len(parts) == 2 and not parts[1]:
        return lambda text: text.startswith(parts[0])
    if len(parts) == 2 and not parts[0]:
        return lambda text: text.endswith(parts[1])
    regex = re.compile(".*".join(re.escape(part) for part in parts), re.DOTALL)
    return lambda text: regex.fullmatch(text) is not None


def _function_test(name: str, argument: str, negated: bool) -> Callable[[object], bool]:
    """The test for ``contains``/``match`` (``negated`` for ``!``): strings only, as in Segment."""
    if name == "contains":
        if negated:
            return lambda found: isinstance(found, str) and argument not in found
        return lambda found: isinstance(found, str) and argument in found
    test = _glob_test(argument)
    if negated:
        return lambda found: isinstance(found, str) and not test(found)
    return lambda found: isinstance(found, str) and test(found)


def _value_kind(value: _Value) -> str:
    """What sort of literal ``value`` is; keeps ``true`` apart from ``1`` in comparisons."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    return "number"


def _format_value(value: _Value) -> str:
    """The canonical source text of a literal."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = (
            value.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\t", "\\t")
        )
        return f'"{escaped}"'
    if isinstance(value, int):
        return str(value)
    text = format(Decimal(repr(value)), "f")  # never an exponent, unlike repr()
    return text if "." in text else f"{text}.0"


def _format_path(path: tuple[str, ...]) -> str:
    """A field path as source text that reads back as the same keys.

    A character a bare name cannot hold gets a backslash, and so does the first character
    of a key starting with a digit or "-", or of a whole field reading as a keyword.
    """
    names = []
    for key in path:
        escaped = "".join(char if char in _NAME_REST else f"\\{char}" for char in key)
        start = key[:1]
        if start in _NAME_REST and (
            start not in _NAME_START or (path == (key,) and key in _KEYWORDS)
        ):
            escaped = f"\\{escaped}"
        names.append(escaped)
    return ".".join(names)


def _wrap(condition: Condition, precedence: int) -> str:
    """``condition`` as text, in parentheses if it binds looser than ``precedence``."""
    return f"({condition})" if condition._precedence < precedence else str(condition)


@dataclass(frozen=True, slots=True, repr=False)
class _All(Condition):
    _precedence: ClassVar[int] = 4

    def matches(self, event: Mapping[str, Any]) -> bool:
        return True

    def to_sql(self, scope: Scope) -> str:
        return "TRUE"

    def __str__(self) -> str:
        return "all"


@dataclass(frozen=True, slots=True, repr=False)
class _Comparison(Condition):
    path: tuple[str, ...]
    symbol: str  # one of _OPERATORS
    value: _Value
    _kind: str = field(init=False)
    _test: Callable[[object], bool] = field(init=False, compare=False)
    _precedence: ClassVar[int] = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "_kind", _value_kind(self.value))
        object.__setattr__(self, "_test", _comparison_test(self.symbol, self.value))

    def matches(self, event: Mapping[str, Any]) -> bool:
        return self._test(_lookup(event, self.path))

    def to_sql(self, scope: Scope) -> str:
        if self.symbol not in ("=", "!="):
            raise NotCompiled(f"the comparison {self}")
        equals = _equality_sql(scope.value(self.path), self.value, str(self))
        return equals if self.symbol == "=" else f"NOT {equals}"

    def __str__(self) -> str:
        return f"{_format_path(self.path)} {self.symbol} {_format_value(self.value)}"


@dataclass(frozen=True, slots=True, repr=False)
class _Function(Condition):
    name: str  # one of _FUNCTIONS
    path: tuple[str, ...]
    argument: str
    negated: bool
    _test: Callable[[object], bool] = field(init=False, compare=False)
    _precedence: ClassVar[int] = 4

    def __post_init__(self) -> None:
        test = _function_test(self.name, self.argument, self.negated)
        object.__setattr__(self, "_test", test)

    def matches(self, event: Mapping[str, Any]) -> bool:
        return self._test(_lookup(event, self.path))

    def to_sql(self, scope: Scope) -> str:
        value = scope.value(self.path)
        if self.name == "contains":
            test = f"contains({value.text}, {sql_string(self.argument)})"
        else:  # a LIKE pattern: * is %, and the pattern's own % _ \\ are escaped
            escaped = "".join("\\" + c if c in "%_\\" else c for c in self.argument)
            test = f"{value.text} LIKE {sql_string(escaped.replace('*', '%'))} ESCAPE '\\'"
        if self.negated:
            test = f"NOT {test}"
        return f"coalesce({value.kind} = 'VARCHAR' AND {test}, FALSE)"

    def __str__(self) -> str:
        bang = "!" if self.negated else ""
        path, argument = _format_path(self.path), _format_value(self.argument)
        return f"{bang}{self.name}({path}, {argument})"


@dataclass(frozen=True, slots=True, repr=False)
class _Not(Condition):
    operand: Condition
    _precedence: ClassVar[int] = 3

    def matches(self, event: Mapping[str, Any]) -> bool:
        return not self.operand.matches(event)

    def to_sql(self, scope: Scope) -> str:
        return f"(NOT {self.operand.to_sql(scope)})"

    def __str__(self) -> str:
        return f"not {_wrap(self.operand, self._precedence)}"


@dataclass(frozen=True, slots=True, repr=False)
class _And(Condition):
    operands: tuple[Condition, ...]
    _tests: tuple[_Test, ...] = field(init=False, compare=False)
    _precedence: ClassVar[int] = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tests", tuple(op.matches for op in self.operands))

    def matches(self, event: Mapping[str, Any]) -> bool:
        for test in self._tests:  # noqa: SIM110 (all() over a generator costs twice this)
            if not test(event):
                return False
        return True

    def to_sql(self, scope: Scope) -> str:
        return "(" + " AND ".join(op.to_sql(scope) for op in self.operands) + ")"

    def __str__(self) -> str:
        return " and ".join(_wrap(op, self._precedence) for op in self.operands)


@dataclass(frozen=True, slots=True, repr=False)
class _Or(Condition):
    operands: tuple[Condition, ...]
    _tests: tuple[_Test, ...] = field(init=False, compare=False)
    _precedence: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tests", tuple(op.matches for op in self.operands))

    def matches(self, event: Mapping[str, Any]) -> bool:
        for test in self._tests:  # noqa: SIM110 (as in _And)
            if test(event):
                return True
        return False

    def to_sql(self, scope: Scope) -> str:
        return "(" + " OR ".join(op.to_sql(scope) for op in self.operands) + ")"

    def __str__(self) -> str:
        return " or ".join(_wrap(op, self._precedence) for op in self.operands)


def _join(kind: type[_And | _Or], operands: list[Condition]) -> Condition:
    """One operand as is, or several as one flat ``kind`` node."""
    if len(operands) == 1:
        return operands[0]
    flat: list[Condition] = []
    for operand in operands:
        flat.extend(operand.operands if isinstance(operand, kind) else (operand,))
    return kind(tuple(flat))


# --------------------------------------------------------------------------- the parser


class _SyntaxProblem(Exception):
    """A syntax error at a 1-based ``column``; turned into ``MappingError`` at the top."""

    def __init__(self, detail: str, column: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.column = column


class _Token(NamedTuple):
    kind: _Kind
    text: str  # as written
    column: int  # 1-based
    value: _Value = None  # the decoded string or number
    path: tuple[str, ...] = ()  # a field's keys, escapes decoded


def _skip(text: str, index: int, allowed: frozenset[str]) -> int:
    """The index of the first character at or after ``index`` not in ``allowed``."""
    while index < len(text) and text[index] in allowed:
        index += 1
    return index


def _read_string(text: str, start: int) -> tuple[_Token, int]:
    chars: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return _Token("string", text[start : index + 1], start + 1, "".join(chars)), index + 1
        if char == "\\":
            escape = text[index + 1 : index + 2]
            if not escape:
                break
            if escape not in _ESCAPES:
                raise _SyntaxProblem(
                    f"unsupported escape '\\{escape}' in a string (only \\\", \\\\, \\n and \\t)",
                    index + 1,
                )
            chars.append(_ESCAPES[escape])
            index += 2
        else:
            chars.append(char)
            index += 1
    raise _SyntaxProblem("unterminated string (no closing '\"')", start + 1)


def _read_number(text: str, start: int) -> tuple[_Token, int]:
    digits_start = start + 1 if text[start] == "-" else start
    index = _skip(text, digits_start, _DIGITS)
    if index == digits_start:
        raise _SyntaxProblem("expected digits after '-'", digits_start + 1)
    is_float = text[index : index + 1] == "."
    if is_float:
        fraction_end = _skip(text, index + 1, _DIGITS)
        if fraction_end == index + 1:
            raise _SyntaxProblem("expected digits after the decimal point", index + 2)
        index = fraction_end
    literal = text[start:index]
    try:
        value: int | float = float(literal) if is_float else int(literal)
    except ValueError:  # more digits than int() agrees to convert
        raise _SyntaxProblem("number too long", start + 1) from None
    if abs(value) > _MAX_NUMBER:  # also infinity; a comparison, so no int is too big
        raise _SyntaxProblem("number out of range", start + 1)
    return _Token("number", literal, start + 1, value), index


def _read_name(text: str, index: int) -> tuple[str, int]:
    """One key of a field path (maybe empty) and the index after it; ``\\x`` stands for x."""
    chars: list[str] = []
    allowed = _NAME_START
    while index < len(text):
        char = text[index]
        if char == "\\":
            escaped = text[index + 1 : index + 2]
            if not escaped:
                raise _SyntaxProblem("expected a character after '\\' in a field", index + 2)
            chars.append(escaped)
            index += 2
        elif char in allowed:
            chars.append(char)
            index += 1
        else:
            break
        allowed = _NAME_REST
    return "".join(chars), index


def _read_word(text: str, start: int) -> tuple[_Token, int]:
    key, index = _read_name(text, start)
    path = [key]
    while text[index : index + 1] == ".":
        key, end = _read_name(text, index + 1)
        if not key:
            raise _SyntaxProblem(
                f"expected a name after '.' in field '{text[start : index + 1]}'", index + 2
            )
        path.append(key)
        index = end
    word = text[start:index]
    kind: _Kind = "keyword" if word in _KEYWORDS else "field"
    return _Token(kind, word, start + 1, path=tuple(path)), index


def _read_operator(text: str, start: int) -> tuple[_Token, int]:
    index = _skip(text, start, _OPERATOR_CHARS)
    operator = text[start:index]
    if operator not in _OPERATORS and operator != "!":  # "!" before contains/match
        raise _SyntaxProblem(_unknown_operator(operator), start + 1)
    return _Token("operator", operator, start + 1), index


def _unknown_operator(operator: str) -> str:
    return f"unknown operator '{operator}' (use {_OPERATOR_LIST})"


def _bad_character(char: str, column: int) -> _SyntaxProblem:
    hint = {"'": " (strings take double quotes)", "&": " (use 'and')", "|": " (use 'or')"}
    return _SyntaxProblem(f"unexpected character {char!r}{hint.get(char, '')}", column)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
            continue
        if char == "(":
            token, index = _Token("(", char, index + 1), index + 1
        elif char == ")":
            token, index = _Token(")", char, index + 1), index + 1
        elif char == ",":
            token, index = _Token(",", char, index + 1), index + 1
        elif char == '"':
            token, index = _read_string(text, index)
        elif char == "-" or char in _DIGITS:
            token, index = _read_number(text, index)
        elif char in _NAME_START or char == "\\":
            token, index = _read_word(text, index)
        elif char in _OPERATOR_CHARS:
            token, index = _read_operator(text, index)
        else:
            raise _bad_character(char, index + 1)
        tokens.append(token)
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _describe(token: _Token) -> str:
    """The token as named in a message ("found ...")."""
    if token.kind == "end":
        return "the end of the text"
    text = token.text
    if len(text) > _TOKEN_WIDTH:
        text = text[: _TOKEN_WIDTH - 3] + "..."
    if token.kind == "field" and token.text.lower() in _KEYWORDS:
        return f"{text!r} (keywords are lowercase)"
    return repr(text)


class _Parser:
    """Recursive descent over the token list, one method per grammar rule."""

    def __init__(self, text: str) -> None:
        self._tokens = _tokenize(text)
        self._index = 0

    def parse(self) -> Condition:
        if self._peek().kind == "end":
            raise _SyntaxProblem("expected a condition, found an empty text", 1)
        condition = self._expr("", 0)
        token = self._peek()
        if token.kind == ")":
            raise _SyntaxProblem("unexpected ')' without a matching '('", token.column)
        if token.kind != "end":
            raise _SyntaxProblem(
                f"expected 'and', 'or' or the end of the text, found {_describe(token)}",
                token.column,
            )
        return condition

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _calls(self) -> bool:
        """Whether the next tokens are a name and "(": a function call, not a field."""
        token = self._tokens[self._index]
        return token.kind == "field" and self._tokens[self._index + 1].kind == "("

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind != "end":
            self._index += 1
        return token

    def _accept(self, keyword: str) -> bool:
        token = self._peek()
        if token.kind == "keyword" and token.text == keyword:
            self._index += 1
            return True
        return False

    def _expr(self, after: str, depth: int) -> Condition:
        operands = [self._and_expr(after, depth)]
        while self._accept("or"):
            operands.append(self._and_expr("or", depth))
        return _join(_Or, operands)

    def _and_expr(self, after: str, depth: int) -> Condition:
        operands = [self._unary(after, depth)]
        while self._accept("and"):
            operands.append(self._unary("and", depth))
        return _join(_And, operands)

    def _unary(self, after: str, depth: int) -> Condition:
        if depth > _MAX_NESTING:
            raise _SyntaxProblem(
                f"nesting deeper than {_MAX_NESTING} levels of '(' and 'not'", self._peek().column
            )
        if self._accept("not"):
            return _Not(self._unary("not", depth + 1))
        bang = self._peek()
        if bang.kind == "operator" and bang.text == "!":
            self._index += 1
            if not self._calls():
                raise _SyntaxProblem(
                    "'!' only negates contains(...) and match(...); use 'not' to negate"
                    " a condition",
                    bang.column,
                )
            return self._function(negated=True)
        return self._primary(after, depth)

    def _primary(self, after: str, depth: int) -> Condition:
        token = self._advance()
        if token.kind == "(":
            inner = self._expr("(", depth + 1)
            close = self._advance()
            if close.kind != ")":
                raise _SyntaxProblem(
                    f"expected 'and', 'or' or ')' to close the '(' at column {token.column},"
                    f" found {_describe(close)}",
                    close.column,
                )
            return inner
        if token.kind == "keyword" and token.text == "all":
            return _All()
        if token.kind == "field":
            self._index -= 1
            return self._function(negated=False) if self._calls() else self._comparison()
        where = f" after '{after}'" if after else ""
        raise _SyntaxProblem(
            f"expected a condition{where} (a field comparison, 'all', 'not' or '('),"
            f" found {_describe(token)}",
            token.column,
        )

    def _function(self, *, negated: bool) -> Condition:
        """``name(field, "text")``, the name token next (the caller saw the "(")."""
        name = self._advance()
        if name.text not in _FUNCTIONS:
            raise _SyntaxProblem(
                f"unknown function '{name.text}' (subscriptions offer"
                ' contains(field, "text") and match(field, "pattern"))',
                name.column,
            )
        self._advance()  # "("
        call = f"{name.text}("
        field_token = self._advance()
        if field_token.kind != "field":
            raise _SyntaxProblem(
                f"expected a field as the first argument of {call}, found {_describe(field_token)}",
                field_token.column,
            )
        comma = self._advance()
        if comma.kind != ",":
            raise _SyntaxProblem(
                f"expected ',' after the field in {call}, found {_describe(comma)}", comma.column
            )
        argument = self._advance()
        if argument.kind != "string" or not isinstance(argument.value, str):
            raise _SyntaxProblem(
                f"expected a double-quoted string as the second argument of {call},"
                f" found {_describe(argument)}",
                argument.column,
            )
        close = self._advance()
        if close.kind != ")":
            raise _SyntaxProblem(
                f"expected ')' to close {call} at column {name.column}, found {_describe(close)}",
                close.column,
            )
        return _Function(name.text, field_token.path, argument.value, negated)

    def _comparison(self) -> Condition:
        field_token = self._advance()
        operator = self._advance()
        if operator.kind != "operator":
            raise _SyntaxProblem(
                f"expected an operator ({_OPERATOR_LIST}) after field '{field_token.text}',"
                f" found {_describe(operator)}",
                operator.column,
            )
        if operator.text not in _OPERATORS:
            raise _SyntaxProblem(_unknown_operator(operator.text), operator.column)
        token = self._advance()
        value: _Value
        if operator.text in _ORDERINGS:
            if token.kind != "number":
                raise _SyntaxProblem(
                    f"expected a number after '{operator.text}', found {_describe(token)}",
                    token.column,
                )
            value = token.value
        elif token.kind in ("string", "number"):
            value = token.value
        elif token.kind == "keyword" and token.text in _KEYWORD_VALUES:
            value = _KEYWORD_VALUES[token.text]
        else:
            hint = (
                " (strings need double quotes)"
                if token.kind == "field" and token.text.lower() not in _KEYWORDS
                else ""
            )
            raise _SyntaxProblem(
                f"expected a value (a double-quoted string, a number, true, false or null)"
                f" after '{operator.text}', found {_describe(token)}{hint}",
                token.column,
            )
        return _Comparison(field_token.path, operator.text, value)


def _excerpt(text: str, column: int) -> str:
    """``text`` quoted for a message, cut to a window around ``column`` if long."""
    if len(text) <= _EXCERPT_WIDTH:
        return repr(text)
    start = min(max(column - 1 - _EXCERPT_WIDTH // 2, 0), len(text) - _EXCERPT_WIDTH)
    end = start + _EXCERPT_WIDTH
    before = "..." if start > 0 else ""
    after = "..." if end < len(text) else ""
    return f"{before}{text[start:end]!r}{after}"


def parse_subscription(
    text: str, *, source: str = "<subscription>", pointer: str = ""
) -> Condition:
    """Parse a subscription such as ``type = "track" and event = "Signed Up"``.

    Raises ``MappingError(source, pointer, ...)`` naming the (1-based) column of the first
    syntax error, with the text quoted.
    """
    try:
        return _Parser(text).parse()
    except _SyntaxProblem as problem:
        expected = (
            f"a valid subscription: {problem.detail} at column {problem.column}"
            f" in {_excerpt(text, problem.column)}"
        )
        raise MappingError(source, pointer, expected) from None
