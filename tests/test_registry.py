from types import SimpleNamespace

import pytest

from qval.errors import PluginError
from qval.registry import KINDS, REGISTRY, PluginEntry, Registry


def test_builtins_are_discovered_through_entry_points():
    for kind in KINDS:
        assert REGISTRY.names(kind), f"no built-in {kind}"
    entry = REGISTRY.entry("scorers", "oracle-q")
    assert entry.distribution == "qval" and entry.target.endswith(":OracleQScorer")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(PluginError, match="did you mean 'oracle-q'"):
        REGISTRY.get("scorers", "oracle-qq")


def test_failing_import_is_a_hard_error_when_loaded_and_text_when_checked():
    entry = PluginEntry("scorers", "broken", "qval_no_such_module:X", "somepkg", "1.0")
    assert "ModuleNotFoundError" in entry.check()
    with pytest.raises(PluginError, match="'broken' from somepkg 1.0 failed to load"):
        entry.load()


def test_name_clash_names_both_distributions(monkeypatch):
    def fake_entry_points(group):
        if group != "qval.scorers":
            return []
        return [SimpleNamespace(name="dup", value="a:A", dist=SimpleNamespace(name="pkg-a", version="1")),
                SimpleNamespace(name="dup", value="b:B", dist=SimpleNamespace(name="pkg-b", version="2"))]

    monkeypatch.setattr("qval.registry.metadata.entry_points", fake_entry_points)
    with pytest.raises(PluginError, match=r"pkg-a 1.*pkg-b 2"):
        Registry().names("scorers")


def test_direct_registration_rejects_clashes():
    reg = Registry()
    with pytest.raises(PluginError, match="already registered"):
        reg.register("scorers", "random", object)
