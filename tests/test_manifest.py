"""The manifest is typed and versioned: it validates against the JSON Schema in the repository (checked by
an independent validator, jsonschema), and a wrong one gets one line naming the field."""
import json
import shutil
from pathlib import Path

import pytest

from edgedec import manifest as mf

from conftest import run_cli

SCHEMA = Path(mf.__file__).with_name("bundle.schema.json")


def test_schema_file_is_the_generated_one():
    assert json.loads(SCHEMA.read_text()) == mf.schema(), \
        "regenerate it: python -m edgedec.manifest > edgedec/bundle.schema.json"


def test_default_bundle_validates_against_the_schema(int4_bundle):
    jsonschema = pytest.importorskip("jsonschema")
    data = json.loads((int4_bundle / "edgedec.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(data)
    assert mf.read(int4_bundle).to_dict() == data            # nothing lost reading and writing


def test_schema_rejects_what_the_reader_rejects(int4_bundle):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    data = json.loads((int4_bundle / "edgedec.json").read_text())
    data["segments"][1]["end"] = "12"
    assert not validator.is_valid(data)


@pytest.fixture
def bundle_copy(tmp_path, int4_bundle):
    dst = tmp_path / "bundle"
    shutil.copytree(int4_bundle, dst)
    return dst


def edit_manifest(bundle, change):
    path = bundle / "edgedec.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def one_line(proc):
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("change, words", [
    (lambda d: d["segments"][1].update(end="12"), ["'segments[1].end' should be an integer", '"12"', "export"]),
    (lambda d: d["quant"].pop("mode"), ["'quant.mode' is missing", "export"]),
    (lambda d: d["tokenizer"].update(eos_ids=2), ["'tokenizer.eos_ids' should be a list", "export"]),
    (lambda d: d["config"].update(n_layers=True), ["'config.n_layers' should be an integer", "boolean"]),
    (lambda d: d.update(version=0), ["version 0", "older", "export it again"]),
])
def test_bad_manifest_gets_one_line_naming_the_field(bundle_copy, change, words):
    edit_manifest(bundle_copy, change)
    line = one_line(run_cli("info", bundle_copy))
    for w in words:
        assert w in line, line


def test_tuned_defaults_are_written_through_the_manifest(bundle_copy):
    import edgedec
    model = edgedec.load(bundle_copy)
    model.bundle.save_defaults(self_spec=mf.SelfSpecDefaults(exit_layer=12, k_max=3, threshold=0.1))
    spec = edgedec.load(bundle_copy).default_config("self-spec")
    assert (spec.exit_layer, spec.k_max, spec.threshold) == (12, 3, 0.1)
    assert json.loads((bundle_copy / "edgedec.json").read_text())["defaults"]["self-spec"]["k_max"] == 3
