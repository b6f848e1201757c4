import pytest

from palimpsest.core.errors import ConfigError, UnknownNameError
from palimpsest.core.registry import STRATEGIES, Registry, list_methods


def test_register_create_and_list():
    reg = Registry("thing")

    @reg.register("alpha_replay", summary="first")
    class Alpha:
        def __init__(self, x=1):
            self.x = x

    assert reg.create("alpha_replay", x=3).x == 3
    assert reg.names("*replay*") == ["alpha_replay"]
    assert reg.get("alpha_replay").summary == "first"


def test_duplicate_name_is_an_error():
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(ConfigError, match="duplicate thing name 'a'"):
        reg.register("a")(int)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError) as info:
        STRATEGIES.get("naiv")
    text = str(info.value)
    assert "unknown strategy 'naiv'" in text and "did you mean 'naive'" in text
    assert "expected: one of:" in text


def test_list_methods_pattern():
    assert "naive" in list_methods()
    assert list_methods("from_*") == ["from_scratch"]
