import pytest
from pydantic import Field

from palimpsest.core.config import Settings, validate
from palimpsest.core.errors import SpecError


class Demo(Settings):
    lam: float = Field(1.0, gt=0)
    steps: int = Field(3, ge=1)


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(SpecError) as info:
        validate(Demo, {"lam": -1, "steps": "many", "typo": 2}, "strategy 'demo'")
    problems = info.value.problems
    assert len(problems) == 3
    joined = "\n".join(problems)
    assert "strategy 'demo'.lam: expected a number > 0, got -1" in joined
    assert "steps" in joined and "'many'" in joined
    assert "typo: expected no such field" in joined
