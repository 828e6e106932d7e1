"""Settings from the environment: types, conventional names, tokens, overrides."""

from __future__ import annotations

import pytest

from server.settings import ROLES, Settings, SettingsError, generated_tokens, load_settings

TOKENS = "admin:adm-12345678,calltaker:ct-12345678,center:ctr-12345678,wall:wall-12345678"


def test_defaults_from_an_empty_env() -> None:
    s = load_settings(env={})
    assert s.redis_url is None and s.database_url is None and s.config_path is None
    assert s.offer_window_s == 60.0 and s.max_frame_bytes == 4096


def test_an_explicit_env_is_used_instead_of_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://from-os-environ:6379/0")
    monkeypatch.setenv("DISPATCH_OFFER_WINDOW_S", "5")
    s = load_settings(env={})
    assert s.redis_url is None and s.offer_window_s == 60.0


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://from-os-environ:6379/0")
    monkeypatch.setenv("DISPATCH_OFFER_WINDOW_S", "5")
    monkeypatch.setenv("DISPATCH_TOKENS", TOKENS)
    s = load_settings()
    assert s.redis_url == "redis://from-os-environ:6379/0" and s.offer_window_s == 5.0


def test_env_values_are_typed() -> None:
    s = load_settings(
        env={
            "DISPATCH_OFFER_WINDOW_S": "45.5",
            "DISPATCH_MAX_FRAME_BYTES": "8192",
            "DISPATCH_ARRIVAL_RADIUS_M": "200",
            "DISPATCH_DEMO": "true",
        }
    )
    assert s.offer_window_s == 45.5 and type(s.offer_window_s) is float
    assert s.max_frame_bytes == 8192 and type(s.max_frame_bytes) is int
    assert s.arrival_radius_m == 200.0 and type(s.arrival_radius_m) is float
    assert s.demo is True


def test_connection_settings_use_conventional_names() -> None:
    s = load_settings(
        env={
            "REDIS_URL": "redis://localhost:6380/2",
            "DATABASE_URL": "postgresql+asyncpg://u:p@db/dispatch",
            "DISPATCH_CONFIG": "/etc/dispatch/city.toml",
            "DISPATCH_TOKENS": TOKENS,
            # The prefixed spellings are not the names these settings are read from.
            "DISPATCH_REDIS_URL": "redis://wrong:1/0",
            "DISPATCH_CONFIG_PATH": "/wrong.toml",
        }
    )
    assert s.redis_url == "redis://localhost:6380/2"
    assert s.database_url == "postgresql+asyncpg://u:p@db/dispatch"
    assert s.config_path == "/etc/dispatch/city.toml"
    assert s.tokens == TOKENS


def test_empty_value_means_default() -> None:
    s = load_settings(env={"REDIS_URL": "", "DISPATCH_OFFER_WINDOW_S": ""})
    assert s.redis_url is None and s.offer_window_s == 60.0


@pytest.mark.parametrize("value", ["soon", "60s", "1,5"])
def test_non_numeric_offer_window_names_the_field(value: str) -> None:
    with pytest.raises(SettingsError, match="offer_window_s"):
        load_settings(env={"DISPATCH_OFFER_WINDOW_S": value})


def test_non_integer_frame_limit_names_the_field() -> None:
    with pytest.raises(SettingsError, match="max_frame_bytes"):
        load_settings(env={"DISPATCH_MAX_FRAME_BYTES": "lots"})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# ---- tokens --------------------------------------------------------------------------------


def test_without_tokens_every_role_gets_a_generated_one() -> None:
    s = load_settings(env={})
    assert s.tokens
    mapping = s.role_tokens()
    assert sorted(mapping.values()) == sorted(ROLES) == ["admin", "calltaker", "center", "wall"]
    assert all(len(token) >= 16 for token in mapping)
    # Generated anew each time, not a fixed default.
    assert set(load_settings(env={}).role_tokens()).isdisjoint(mapping)


def test_generated_tokens_parse() -> None:
    mapping = Settings(tokens=generated_tokens()).role_tokens()
    assert set(mapping.values()) == set(ROLES) and len(mapping) == 4


def test_role_tokens_maps_token_to_role() -> None:
    s = load_settings(env={"DISPATCH_TOKENS": TOKENS})
    assert s.role_tokens() == {
        "adm-12345678": "admin",
        "ct-12345678": "calltaker",
        "ctr-12345678": "center",
        "wall-12345678": "wall",
    }


def test_role_tokens_tolerates_spaces_and_empty_entries() -> None:
    s = load_settings(env={"DISPATCH_TOKENS": " admin:adm-12345678 , ,wall:wall-12345678,"})
    assert s.role_tokens() == {"adm-12345678": "admin", "wall-12345678": "wall"}


def test_a_role_may_have_several_tokens() -> None:
    s = load_settings(env={"DISPATCH_TOKENS": "center:ctr-aaaaaaaa,center:ctr-bbbbbbbb"})
    assert s.role_tokens() == {"ctr-aaaaaaaa": "center", "ctr-bbbbbbbb": "center"}


@pytest.mark.parametrize(
    "tokens",
    [
        "root:abcdefghijkl",  # unknown role
        "Admin:abcdefghijkl",  # roles are lower case
        "admin:short",  # token under 8 characters
        "admin:1234567",  # 7 characters
        "admin:",  # empty token
        "adminabcdefghijkl",  # missing colon
        "admin:abcdefghijkl,wall",  # second entry missing colon
    ],
)
def test_malformed_tokens_raise_at_load(tokens: str) -> None:
    with pytest.raises(SettingsError, match="DISPATCH_TOKENS"):
        load_settings(env={"DISPATCH_TOKENS": tokens})


def test_token_of_exactly_eight_characters_is_accepted() -> None:
    assert load_settings(env={"DISPATCH_TOKENS": "wall:12345678"}).role_tokens() == {
        "12345678": "wall"
    }


# ---- overrides -------------------------------------------------------------------------------


def test_overrides_win_over_env() -> None:
    s = load_settings(
        env={
            "DISPATCH_OFFER_WINDOW_S": "30",
            "REDIS_URL": "redis://env:6379/0",
            "DISPATCH_TOKENS": TOKENS,
        },
        offer_window_s=5.0,
        redis_url="redis://override:6379/1",
        tokens="admin:override-token",
    )
    assert s.offer_window_s == 5.0
    assert s.redis_url == "redis://override:6379/1"
    assert s.role_tokens() == {"override-token": "admin"}


def test_overrides_are_validated_too() -> None:
    with pytest.raises(SettingsError, match="offer_window_s"):
        load_settings(env={}, offer_window_s="never")
    with pytest.raises(SettingsError, match="DISPATCH_TOKENS"):
        load_settings(env={}, tokens="nobody:abcdefghij")


def test_env_settings_not_overridden_are_kept() -> None:
    s = load_settings(env={"DISPATCH_MAX_FRAME_BYTES": "1024"}, offer_window_s=7.0)
    assert s.max_frame_bytes == 1024 and s.offer_window_s == 7.0
