import json
import sys
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


class _Declared:
    """What ``metadata.entry_points()`` gives, as far as the registry reads it: the entry points of a group."""

    def __init__(self, of_group):
        self.of_group = of_group

    def select(self, group):
        return self.of_group(group)


def _entry_points(of_group):
    """A stand-in for ``metadata.entry_points``: called with no argument, as the registry does, or with a group, as
    a library the test imports may do (gymnasium looks up its environments at import)."""

    def entry_points(group=None):
        return _Declared(of_group) if group is None else of_group(group)

    return entry_points


def test_name_clash_names_both_distributions(monkeypatch):
    def fake_entry_points(group):
        if group != "qval.scorers":
            return []
        return [
            SimpleNamespace(name="dup", value="a:A", dist=SimpleNamespace(name="pkg-a", version="1")),
            SimpleNamespace(name="dup", value="b:B", dist=SimpleNamespace(name="pkg-b", version="2")),
        ]

    monkeypatch.setattr("qval.registry.metadata.entry_points", _entry_points(fake_entry_points))
    with pytest.raises(PluginError, match=r"pkg-a 1.*pkg-b 2"):
        Registry().names("scorers")


def test_direct_registration_rejects_clashes():
    reg = Registry()
    with pytest.raises(PluginError, match="already registered"):
        reg.register("scorers", "random", object)


# -- one name per plugin: the entry-point name is the name ---------------------------------------------------------
def _fake_scorer_entry_points(monkeypatch, name: str, target: str):
    from importlib import metadata

    real = metadata.entry_points

    def fake_entry_points(group):
        found = list(real(group=group))
        if group == "qval.scorers":
            found.append(SimpleNamespace(name=name, value=target, dist=SimpleNamespace(name="pkg-x", version="9")))
        return found

    monkeypatch.setattr("qval.registry.metadata.entry_points", _entry_points(fake_entry_points))


def test_a_class_naming_itself_otherwise_is_refused(monkeypatch):
    _fake_scorer_entry_points(monkeypatch, "dice", "qval.qalign.scorers.baselines:RandomScorer")
    with pytest.raises(PluginError, match=r"scorer plugin 'dice' from pkg-x 9 .*whose `name` is 'random'"):
        Registry().get("scorers", "dice")


def test_a_class_without_a_name_takes_its_entry_point_name():
    from qval.qalign.scorers.base import Scorer

    class Nameless(Scorer):
        pass

    reg = Registry()
    reg.register("scorers", "nameless", Nameless)
    assert reg.get("scorers", "nameless").name == "nameless"


def test_a_metric_may_name_the_column_of_another_tracks_metric_only():
    from qval.qalign.metrics import PooledSpearman

    reg = Registry()
    # per_state_spearman_stored writes per_state_spearman for the per-state track: allowed
    assert reg.get("metrics", "per_state_spearman_stored").name == "per_state_spearman"
    reg.register("metrics", "my_spearman", PooledSpearman)  # the same track: two metrics, one column
    with pytest.raises(PluginError, match="whose `name` is 'pooled_spearman'"):
        reg.get("metrics", "my_spearman")


def test_qval_plugins_exits_non_zero_on_a_name_mismatch(monkeypatch, capsys):
    import qval.cli

    _fake_scorer_entry_points(monkeypatch, "dice", "qval.qalign.scorers.baselines:RandomScorer")
    monkeypatch.setattr(qval.cli, "REGISTRY", Registry())
    monkeypatch.setattr(sys, "argv", ["qval", "plugins"])
    with pytest.raises(SystemExit) as exit_:
        qval.cli.main()
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "scorer plugin 'dice' from pkg-x 9" in captured.err and "whose `name` is 'random'" in captured.err
    assert "1 plugin(s) declare a name other than their entry point's" in captured.err
    assert "error: name mismatch" in captured.out


def test_qval_plugins_passes_when_every_name_matches(monkeypatch, capsys):
    import qval.cli

    monkeypatch.setattr(qval.cli, "REGISTRY", Registry())
    monkeypatch.setattr(sys, "argv", ["qval", "plugins", "--json"])
    with pytest.raises(SystemExit) as exit_:
        qval.cli.main()
    assert exit_.value.code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and not [r for r in rows if r["error"]]


def test_a_subclass_without_its_own_name_takes_its_entry_point_name():
    from qval.qalign.scorers.baselines import HeuristicScorer

    class Closer(HeuristicScorer):  # inherits name = "heuristic"
        pass

    reg = Registry()
    reg.register("scorers", "closer", Closer)
    assert reg.get("scorers", "closer").name == "closer" and HeuristicScorer.name == "heuristic"
