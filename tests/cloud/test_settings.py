"""Cloud settings: the example file is complete and loads; bad values are named."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from cloud.errors import ConfigError
from cloud.settings import CloudSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "cloud.toml"


def test_example_documents_every_setting_and_loads() -> None:
    text = EXAMPLE.read_text()
    mentioned = set(re.findall(r"^#? ?([a-z0-9_]+) = ", text, re.MULTILINE))
    fields = {f.name for f in dataclasses.fields(CloudSettings)}
    assert fields - mentioned == set()
    settings = load_settings(EXAMPLE)
    defaults = CloudSettings()
    for name in ("db_url", "broker_port", "command_ttl_s", "stale_after_s", "restart_limit"):
        assert getattr(settings, name) == getattr(defaults, name), name


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("nonsense = 1\n", "nonsense"),
        ('db_url = "mysql://x"\n', "db_url"),
        ("broker_port = 0\n", "broker_port"),
        ("command_ttl_s = 0\n", "command_ttl_s"),
        ("restart_limit = 0\n", "restart_limit"),
        ('ingest_group = "a/b"\n', "ingest_group"),
        ("q_ar = 0.6\n", "q_ar"),
        ("invite_min = 11\n", "invite_min"),
        ("invite_fraction = 0\n", "invite_fraction"),
        ("radius_km = 0\n", "radius_km"),
        ("verify_normal_s = -1\n", "verify_normal_s"),
        ("shortlist_size = 0\n", "shortlist_size"),
        ("newcomer_slots = -1\n", "newcomer_slots"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "cloud.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert error.value.key == key


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("db_url = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_overrides_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOILERTWIN_DB", "sqlite:///from-env.db")
    settings = load_settings(None, broker_port=1999, api_port=None)
    assert settings.db_url == "sqlite:///from-env.db" and settings.broker_port == 1999
    assert settings.api_port == CloudSettings().api_port
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    assert settings.replace(mqtt_password_file=password).mqtt_password() == "s3cret"
