"""Settings of `serve`: layering and refusal of invalid values."""

from pathlib import Path

import pytest

from virtpolicy.config import load_serve_settings
from virtpolicy.errors import ConfigError


def test_layers_file_then_environment_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TOML file overrides defaults, the environment the file, flags everything."""
    conf = tmp_path / "vp.toml"
    conf.write_text('connect = "test:///default"\nmode = "report"\nreconcile-interval = 10\n')
    monkeypatch.setenv("VIRTPOLICY_RECONCILE_INTERVAL", "20")
    monkeypatch.delenv("VIRTPOLICY_MODE", raising=False)
    settings = load_serve_settings(str(conf), {"mode": "enforce", "connect": None})
    assert settings.connect == "test:///default"
    assert settings.reconcile_interval == 20.0
    assert settings.mode == "enforce"


@pytest.mark.parametrize(
    ("toml", "flags", "message"),
    [
        ('mode = "loud"\n', {}, "mode: 'loud' is not valid (from {conf})"),
        (
            "",
            {"reconcile_interval": 0.1},
            "reconcile_interval: 0.1 is not valid (from command line)",
        ),
        ("colour = 1\n", {}, "colour: unknown setting (from {conf})"),
        ("mode = \n", {}, "config: {conf} is not valid TOML"),
        (
            '[migration]\nstream = "ftp://x"\n',
            {},
            "migration.stream: 'ftp://x' is not valid (from {conf})",
        ),
    ],
)
def test_invalid_settings_name_key_value_and_source(
    tmp_path: Path, toml: str, flags: dict[str, object], message: str
) -> None:
    """An invalid setting is refused with its key, its value and where it came from."""
    conf = tmp_path / "vp.toml"
    conf.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_serve_settings(str(conf), flags)
    assert str(info.value).startswith(message.format(conf=conf))


def test_missing_config_file() -> None:
    """A config file that cannot be read is named."""
    with pytest.raises(ConfigError, match=r"config: cannot read /nonexistent\.toml"):
        load_serve_settings("/nonexistent.toml", {})


@pytest.mark.parametrize(
    ("db", "heartbeat", "expected"),
    [
        ("/var/lib/virtpolicy/policies.db", None, 60.0),
        ("postgresql+psycopg://vp@/virtpolicy?host=/run/postgresql", None, 2.0),
        ("postgresql://vp@db.example.net/virtpolicy", None, 2.0),
        ("sqlite:////tmp/p.db", None, 60.0),
        ("/tmp/postgresql.db", None, 60.0),
        ("postgresql+psycopg://vp@/virtpolicy", 7.0, 7.0),
    ],
)
def test_heartbeat_default_follows_the_store(
    db: str, heartbeat: float | None, expected: float
) -> None:
    """Unset, the heartbeat is 2 s on a shared PostgreSQL store and 60 s on SQLite;
    a value given wins."""
    settings = load_serve_settings(None, {"db": db, "heartbeat": heartbeat})
    assert settings.heartbeat_s == expected
