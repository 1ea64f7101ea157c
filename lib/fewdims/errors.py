"""One exception type for every mistake a user can make, so notebooks and the CLI can report it plainly."""


class FewdimsError(ValueError):
    """Bad input: the message says what is wrong and how to fix it."""


def check_type(name: str, value, expected: type | tuple[type, ...], hint: str = "") -> None:
    """Raise FewdimsError unless `value` is an instance of `expected` (bool is never accepted as a number)."""
    types = expected if isinstance(expected, tuple) else (expected,)
    is_bool_for_number = isinstance(value, bool) and bool not in types
    if not isinstance(value, types) or is_bool_for_number:
        want = " or ".join(t.__name__ for t in types)
        raise FewdimsError(
            f"{name} must be {want}, got {type(value).__name__} {value!r}" + (f"; {hint}" if hint else "")
        )
