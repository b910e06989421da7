"""A config field's value from YAML or the command line, turned into the field's type (fkd/config.py's fields)."""
from __future__ import annotations

from .errors import FkdError


def coerce(name: str, typ, value):
    """Turn a YAML/CLI value into the field's type; a wrong one is a one-line error."""
    t = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if t.startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        if t == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if t == "int":
            f = float(value)
            if f != int(f):
                raise ValueError(value)
            return int(f)
        if t == "float":
            return float(value)
        if isinstance(value, bool):     # YAML reads off/on/no/yes as booleans; a text field means the word
            return "on" if value else "off"
        return str(value)
    except (TypeError, ValueError):
        raise FkdError(f"config field {name}: {value!r} is not a valid {t}") from None
