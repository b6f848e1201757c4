"""docs/SPEC.md is generated from the spec models and the registries (scripts/spec_reference.py);
it must be current, and every field of the built-in kinds' specs must say what it is for."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("spec_reference", ROOT / "scripts" / "spec_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_spec_reference_is_current(generator):
    written = (ROOT / "docs" / "SPEC.md").read_text(encoding="utf-8")
    assert generator.render() == written, \
        "docs/SPEC.md is stale: run `python scripts/spec_reference.py --write` and commit the result"


def test_check_mode_finds_a_stale_file_and_write_fixes_it(generator, tmp_path, capsys):
    path = tmp_path / "SPEC.md"
    path.write_text("# an old reference\n")
    assert generator.main(["--check", "--path", str(path)]) == 1
    assert generator.main(["--write", "--path", str(path)]) == 0
    assert generator.main(["--check", "--path", str(path)]) == 0
    assert "## kind: learn" in path.read_text() and "### ewc" in path.read_text()


def test_every_field_of_the_builtin_kinds_is_described(generator):
    from palimpsest.core.registry import KINDS
    generator.load_everything()
    missing, seen = [], set()

    def walk(model, path):
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{path}{name} ({model.__name__})")
            for sub in generator.nested_models(field.annotation):
                walk(sub, f"{path}{name}.")

    for kind in ("learn", "unlearn", "adapt"):
        walk(KINDS.get(kind).obj.Spec, f"{kind}: ")
    assert not missing, f"add Field(description=...) to: {', '.join(missing)}"


def test_the_reference_documents_what_researchers_looked_for():
    text = (ROOT / "docs" / "SPEC.md").read_text(encoding="utf-8")
    for needle in ("`remap_labels`", "`standardize`", "`keep_first`", "`mask_unseen`", "`init_seed`",
                   "`max_examples`", "on `*/domain`: `ewc_lambda: 10.0`, `max_examples: 1000`", "for npz: the .npz file"):
        assert needle in text, needle
