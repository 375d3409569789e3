"""Named configs: a YAML file of a command's option values, e.g. `smap pretrain --config FILE`.

A config is a mapping from option names, written with underscores (`time_budget: 16`,
`compress: ctc`, `train: [data/a, data/b]`), to values: a scalar, or a list for a repeatable option.
The command line wires each key to its option's default, so an option given as a flag wins over the
config. This module reads and checks a file; it knows nothing of the command-line library: the caller
passes one converter per key it accepts.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and, where there is one, the key."""


def read_config(path: str | Path) -> dict[str, object]:
    """The mapping in a YAML file (an empty file: {}), with string keys and scalar or list values."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not YAML: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got a {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}: key {key!r}: option names are text")
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, (dict, list)) for v in items):
            raise ConfigError(f"{path}: {key}: expected a value or a list of values")
    return data


def check_config(path: str | Path, values: Mapping[str, object],
                 converters: Mapping[str, Callable[[object], object]]) -> dict[str, object]:
    """Each value converted by its key's converter (which raises ValueError with the reason);
    an unknown key or a bad value raises ConfigError naming the file and the key."""
    checked = {}
    for key, value in values.items():
        if key not in converters:
            close = difflib.get_close_matches(key, converters, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}")
        try:
            checked[key] = converters[key](value)
        except ValueError as e:
            raise ConfigError(f"{path}: {key}: {e}") from None
    return checked


def load_config(path: str | Path, converters: Mapping[str, Callable[[object], object]]) -> dict[str, object]:
    """`read_config`, then `check_config`."""
    return check_config(path, read_config(path), converters)
