"""config.yaml is validated in one place; every mistake names the file, the key and the choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.config import ServiceConfig, load_config
from engines.errors import HiveTTSError
from engines.names import EngineName, QualityTier, SelectionStrategy
from engines.validation import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = REPO_ROOT / "config.yaml"


def write(tmp_path: Path, body: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.code == "config_error"
    assert isinstance(caught.value, HiveTTSError)
    message = caught.value.message
    assert str(path) in message
    return message


def test_no_file_means_the_defaults() -> None:
    assert load_config(None) == ServiceConfig()


def test_the_shipped_config_loads_and_states_the_defaults() -> None:
    config = load_config(SHIPPED)
    defaults = ServiceConfig()
    assert config.engines == defaults.engines
    assert config.limits == defaults.limits
    assert config.disabled_engines == defaults.disabled_engines
    assert config.models_dir == REPO_ROOT / "models"
    assert config.voices_file == REPO_ROOT / "voices.yaml"
    assert config.voices_file.is_file()


def test_defaults_match_the_design() -> None:
    engines = ServiceConfig().engines
    assert engines.selection_strategy is SelectionStrategy.AUTO
    assert engines.default_engine is EngineName.PIPER
    assert engines.default_quality is QualityTier.STANDARD
    assert engines.auto_selection.ttft_threshold_ms == 250
    assert engines.auto_selection.quality_threshold == 3.0
    assert engines.auto_selection.fallback_chain == (
        EngineName.PIPER,
        EngineName.SPEECHT5,
        EngineName.EDGE,
    )
    assert ServiceConfig().limits.max_text_chars == 10_000


@pytest.mark.parametrize("body", ["", "# nothing but a comment\n", "{}\n", "engines: {}\n"])
def test_an_empty_file_or_section_means_the_defaults(tmp_path: Path, body: str) -> None:
    config = load_config(write(tmp_path, body))
    assert config.engines == ServiceConfig().engines
    assert config.limits == ServiceConfig().limits


def test_values_in_the_file_override_the_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "engines:\n"
        "  selection_strategy: speed_first\n"
        "  auto_selection:\n"
        "    ttft_threshold_ms: 120\n"
        "    fallback_chain: [kokoro, espeak-ng]\n"
        "limits: {max_text_chars: 500}\n"
        "disabled_engines: [xtts]\n",
    )
    config = load_config(path)
    assert config.engines.selection_strategy is SelectionStrategy.SPEED_FIRST
    assert config.engines.auto_selection.ttft_threshold_ms == 120
    assert config.engines.auto_selection.fallback_chain == (EngineName.KOKORO, EngineName.ESPEAK)
    assert config.engines.auto_selection.quality_threshold == 3.0
    assert config.limits.max_text_chars == 500
    assert config.disabled_engines == (EngineName.XTTS,)


def test_bad_selection_strategy_names_the_key_and_the_allowed_values(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "engines:\n  selection_strategy: random\n"))
    assert "engines.selection_strategy" in message
    for allowed in ("auto", "manual", "quality_first", "speed_first"):
        assert allowed in message


def test_unknown_engine_in_the_fallback_chain_names_the_key_and_the_engines(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "engines:\n  auto_selection:\n    fallback_chain: [piper, festival]\n")
    message = config_error(path)
    assert "engines.auto_selection.fallback_chain" in message
    for engine in EngineName:
        assert engine.value in message


def test_bad_quality_tier_names_the_allowed_tiers(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "engines:\n  default_quality: ultra\n"))
    assert "engines.default_quality" in message
    for tier in QualityTier:
        assert tier.value in message


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("colour: blue\n", "colour"),
        ("engines:\n  selection: auto\n", "engines.selection"),
        ("engines:\n  auto_selection:\n    ttft_ms: 100\n", "engines.auto_selection.ttft_ms"),
        ("limits:\n  max_chars: 10\n", "limits.max_chars"),
    ],
)
def test_unknown_key_is_refused_by_name(tmp_path: Path, body: str, key: str) -> None:
    message = config_error(write(tmp_path, body))
    assert f"'{key}'" in message
    assert "not permitted" in message


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("engines:\n  auto_selection:\n    ttft_threshold_ms: -5\n", "ttft_threshold_ms"),
        ("engines:\n  auto_selection:\n    ttft_threshold_ms: 0\n", "ttft_threshold_ms"),
        ("engines:\n  auto_selection:\n    quality_threshold: 9\n", "quality_threshold"),
        ("engines:\n  health:\n    failures_before_cooldown: 0\n", "failures_before_cooldown"),
        ("engines:\n  piper: {workers: 0}\n", "piper.workers"),
        ("limits:\n  max_text_chars: 0\n", "limits.max_text_chars"),
        ("limits:\n  max_text_chars: lots\n", "limits.max_text_chars"),
    ],
)
def test_out_of_range_value_names_the_key(tmp_path: Path, body: str, key: str) -> None:
    message = config_error(write(tmp_path, body))
    assert key in message


def test_negative_ttft_threshold_says_it_must_be_positive(tmp_path: Path) -> None:
    path = write(tmp_path, "engines:\n  auto_selection:\n    ttft_threshold_ms: -5\n")
    message = config_error(path)
    assert "engines.auto_selection.ttft_threshold_ms" in message
    assert "greater than 0" in message


def test_every_mistake_in_the_file_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "engines:\n  selection_strategy: random\nlimits: {max_text_chars: -1}\n")
    message = config_error(path)
    assert "engines.selection_strategy" in message
    assert "limits.max_text_chars" in message


@pytest.mark.parametrize("body", ["engines: [\n", "engines:\n  a: b\n c: d\n", "key: 'open\n"])
def test_invalid_yaml_is_a_config_error_naming_the_file(tmp_path: Path, body: str) -> None:
    message = config_error(write(tmp_path, body))
    assert "not valid YAML" in message


def test_a_section_that_is_not_a_mapping_names_the_section(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "engines: 3\n"))
    assert "'engines'" in message


def test_a_top_level_list_is_refused_with_a_well_formed_message(tmp_path: Path) -> None:
    path = write(tmp_path, "- piper\n- kokoro\n")
    message = config_error(path)
    assert "must be a mapping" in message and str(path) in message
    assert ": :" not in message


def test_a_missing_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    message = config_error(tmp_path / "nowhere.yaml")
    assert "cannot read" in message


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config_dir = tmp_path / "etc" / "hive"
    config_dir.mkdir(parents=True)
    path = write(config_dir, "models_dir: my-models\nvoices_file: lib/voices.yaml\n")
    config = load_config(path)
    assert config.models_dir == config_dir / "my-models"
    assert config.voices_file == config_dir / "lib" / "voices.yaml"


def test_default_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.models_dir == tmp_path / "models"
    assert config.voices_file == tmp_path / "voices.yaml"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    models = tmp_path / "elsewhere" / "models"
    voices = tmp_path / "elsewhere" / "voices.yaml"
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    path = write(config_dir, f"models_dir: {models}\nvoices_file: {voices}\n")
    config = load_config(path)
    assert config.models_dir == models
    assert config.voices_file == voices


def test_the_configuration_is_immutable() -> None:
    config = ServiceConfig()
    with pytest.raises(ValueError):
        config.limits.max_text_chars = 5
