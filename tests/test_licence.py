"""The licence metadata: pyproject's ``license`` is a canonical SPDX expression (PEP 639), and the LICENSE file at
the root, shipped in the wheel through ``license-files``, is that licence's full text."""

import re
import tomllib

from conftest import ROOT
from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# What identifies each licence qval may declare: lines of its official text, whitespace aside.
TEXTS = {
    "Apache-2.0": (
        "Apache License",
        "Version 2.0, January 2004",
        "http://www.apache.org/licenses/",
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "END OF TERMS AND CONDITIONS",
    ),
}


def _words(text: str) -> str:
    return " ".join(text.split())


def test_licence_is_a_canonical_spdx_expression():
    expression = PROJECT["license"]
    assert isinstance(expression, str), "PEP 639: `license` is an SPDX expression string, not a table"
    assert canonicalize_license_expression(expression) == expression
    for invalid in ("Apache 2.0", "Apache-2.0 AND", "Apache-2.0 OR Nonexistent-1.0"):  # the check can fail
        try:
            canonicalize_license_expression(invalid)
        except InvalidLicenseExpression:
            continue
        raise AssertionError(f"{invalid!r} was accepted")


def test_licence_file_exists_and_is_the_declared_licence():
    ids = re.findall(r"[A-Za-z0-9.+-]+", canonicalize_license_expression(PROJECT["license"]))
    ids = [i for i in ids if i not in ("AND", "OR", "WITH")]
    assert ids == ["Apache-2.0"], f"add the text of {ids} to LICENSE and its markers to TEXTS"
    licence = ROOT / "LICENSE"
    assert licence.is_file()
    text = _words(licence.read_text(encoding="utf-8"))
    for line in TEXTS["Apache-2.0"]:
        assert _words(line) in text, line
    # The whole text, word for word: the bundled Spec-Bench prompts carry the same licence, verbatim.
    assert text == _words((ROOT / "qval/data/spec_bench/LICENSE").read_text(encoding="utf-8"))
    assert "LICENSE" in PROJECT["license-files"]
    assert all((ROOT / f).is_file() for f in PROJECT["license-files"])
