import pytest

from pienode.errors import ConfigError
from pienode.runtime.config import NodeConfig, load_config


@pytest.fixture
def home(tmp_path):
    (tmp_path / "node.toml").write_text(NodeConfig(node_id="hospital-1", home=tmp_path).to_toml())
    return tmp_path


def test_layers_defaults_file_env_flags(home):
    text = (home / "node.toml").read_text().replace("port = 8700", "port = 9100")
    (home / "node.toml").write_text(text)
    assert load_config(home, env={}).api.port == 9100
    assert load_config(home, env={"PIE_API_PORT": "9200"}).api.port == 9200
    cfg = load_config(home, env={"PIE_API_PORT": "9200"}, overrides={"api": {"port": 9300}})
    assert cfg.api.port == 9300 and cfg.peer.port == 8701


@pytest.mark.parametrize(
    "extra, env, match",
    [
        ("colour = 'blue'\n", {}, "unknown config key 'colour'"),
        ("", {"PIE_API_PROT": "1"}, "prot"),
        ("", {"PIE_BOGUS_X": "1"}, "PIE_BOGUS_X"),
        ("", {"PIE_API_PORT": "eighty"}, "api.port"),
    ],
)
def test_unknown_keys_and_bad_values_are_refused_by_name(home, extra, env, match):
    path = home / "node.toml"
    path.write_text(extra + path.read_text())
    with pytest.raises(ConfigError, match=match):
        load_config(home, env=env)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no node.toml"):
        load_config(tmp_path, env={})
