"""params.yaml validation: unknown keys and bad values fail early, naming the key path."""

from pathlib import Path

import pytest
import yaml

from supportlm.config import load_params, parse_params
from supportlm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def base() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_and_profiles_validate():
    p = load_params(ROOT / "params.yaml")
    assert p.ingest.sources[0].type == "synthetic"
    for profile in (ROOT / "profiles").glob("*.yaml"):
        assert yaml.safe_load(profile.read_text()), profile


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("clean", "dedup", "near_threshold"), 1.5, "`clean.dedup.near_threshold`: Input should be less than or equal to 1"),
        (("clean", "labels", "action"), "delete", "`clean.labels.action`: Input should be 'flag', 'drop' or 'relabel'"),
        (("split", "train"), 0.9, "split.train + split.val + split.test must be 1.0"),
        (("clean", "max_tokens"), -3, "`clean.max_tokens`: Input should be greater than or equal to 16"),
        (("split", "seed"), "seven", "`split.seed`: Input should be a valid integer"),
    ],
)
def test_bad_value_names_key_and_given(path, value, expected):
    raw = base()
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as exc:
        parse_params(raw)
    assert expected in str(exc.value)
    assert "Given:" in str(exc.value)


def test_unknown_key_is_rejected_with_path():
    raw = base()
    raw["clean"]["dedup"]["treshold"] = 0.8  # typo
    with pytest.raises(ConfigError, match=r"`clean\.dedup\.treshold`: unknown key"):
        parse_params(raw)


def test_unknown_source_type_and_duplicate_names():
    raw = base()
    raw["ingest"]["sources"] = [{"name": "x", "type": "parquet", "path": "a"}]
    with pytest.raises(ConfigError, match=r"ingest\.sources\.0"):
        parse_params(raw)
    raw["ingest"]["sources"] = [{"name": "s", "type": "synthetic"}, {"name": "s", "type": "synthetic"}]
    with pytest.raises(ConfigError, match="source names must be unique"):
        parse_params(raw)


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("clean: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
