"""The stored schema (``st_hpo/_tracking/_schema.py``) is the one home of every key st-hpo stores: no other
module spells an ``"st_hpo.`` key, and no two names hold the same key."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import st_hpo
from st_hpo._tracking import _schema

SRC = Path(st_hpo.__file__).parent
#: A quoted key: "st_hpo.x" or 'st_hpo.x' (inside any string token, f-strings included); module paths
#: (st_hpo._execution..., st_hpo.cli) are not keys.
KEY = re.compile(r"""["']st_hpo\.(?![_A-Z]|cli\b)""")


def test_no_module_but_the_schema_spells_a_stored_key():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == Path(_schema.__file__):
            continue
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.STRING and KEY.search(tok.string):
                found.append(f"{path.relative_to(SRC)}:{tok.start[0]} {tok.string[:60]}")
    assert not found, "stored keys spelt outside _tracking/_schema.py: " + "; ".join(found)


def test_every_schema_name_holds_its_own_key():
    keys = {name: value for name, value in vars(_schema).items() if name.isupper() and isinstance(value, str)}
    assert all(v.startswith("st_hpo.") for v in keys.values())
    values = list(keys.values())
    assert len(values) == len(set(values)), sorted(v for v in values if values.count(v) > 1)
