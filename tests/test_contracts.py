"""One contract test per plugin kind, over every plugin qval itself registers."""

import pytest

from qval.cell import LOSSY_FAMILY
from qval.registry import KINDS, REGISTRY
from qval.testing import check_plugin, check_policy, check_scorer

BUILTIN = [(e.kind, e.name) for e in REGISTRY.entries() if e.distribution == "qval"]
# Generating scorers keep their replies short here: the contract is about shapes, failures and determinism.
QUICK = {
    "direct": {"max_new_tokens": 8},
    "direct-batched": {"max_new_tokens": 16},
    "direct-batch8-seq": {"max_new_tokens": 8},
    "gvl": {"max_new_tokens": 8},
    "ranking": {"max_new_tokens": 12},
    "codegen": {"programs": 2, "max_new_tokens": 64},
}


@pytest.mark.parametrize("kind,name", BUILTIN, ids=[f"{k}:{n}" for k, n in BUILTIN])
def test_builtin_plugin_honours_its_contract(kind, name, smollm):
    cls = REGISTRY.get(kind, name)
    if kind == "scorers":
        if cls.uses_model:
            check_scorer(cls, smollm, n_points=2, params=QUICK.get(name))
        else:
            check_scorer(cls)
    elif kind == "policies":
        # 16 tokens (the kit's default is 24): every rule still runs, at two thirds of the decoding. The policies'
        # own test files do not run the contract again; they test what is particular to each.
        report = check_policy(cls, smollm, max_new_tokens=16)
        if not cls.served_only:
            expected = ("declared lossy",) if cls.family == LOSSY_FAMILY else ("lossless at T=0", "coupled sampling")
            for rule in expected:
                assert any(rule in passed for passed in report.passed), (name, rule, report.passed)
    else:
        check_plugin(kind, cls)


def test_every_kind_has_a_builtin():
    assert {k for k, _ in BUILTIN} == set(KINDS)
