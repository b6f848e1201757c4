from palimpsest.learn import defaults


def test_most_specific_default_wins_and_spec_settings_override(monkeypatch, tmp_path):
    monkeypatch.setitem(defaults.DEFAULTS, "naive_probe", {"*/*": {"a": 1, "b": 1}, "fashion_mnist/*": {"b": 2},
                                                           "fashion_mnist/task": {"b": 3}})
    assert defaults.defaults_for("naive_probe", "digits", "class") == {"a": 1, "b": 1}
    assert defaults.defaults_for("naive_probe", "fashion_mnist", "class") == {"a": 1, "b": 2}
    assert defaults.defaults_for("naive_probe", "fashion_mnist", "task") == {"a": 1, "b": 3}
    assert defaults.defaults_for("unknown", "x", "y") == {}
