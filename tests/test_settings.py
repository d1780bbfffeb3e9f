"""The one validator of settings: nested tables merge over defaults, unknown keys and wrong types
are one-line errors naming file, table and key."""

import re
from pathlib import Path

import pytest

from lorein.methods.baselines.lrt import LrtConfig
from lorein.methods.baselines.summit import SummitConfig
from lorein.methods.lorein.config import HashEncodingConfig, LoreinConfig
from lorein.methods.registry import METHODS
from lorein.run import load_config
from lorein.settings import merge, typed


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_partial_encoding_table_merges_over_the_default(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", "[lorein]\nbasis_encoding = { log2_table = 16 }\n")
    config = load_config(METHODS["lorein"], path)
    default = LoreinConfig().basis_encoding
    assert config.basis_encoding == HashEncodingConfig(
        n_levels=default.n_levels, log2_table=16, n_min=default.n_min, growth="auto"
    )
    assert config.map_encoding == default
    # the same in Python: a dict names only what it changes
    assert LoreinConfig(coil_encoding={"n_levels": 3}).coil_encoding == HashEncodingConfig(
        n_levels=3, log2_table=4, n_min=1, growth=1.5
    )


def test_unknown_nested_key_names_file_table_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", "[lorein]\nmap_encoding = { n_levle = 4 }\n")
    with pytest.raises(ValueError) as err:
        load_config(METHODS["lorein"], path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path} [lorein].map_encoding: unknown key(s) n_levle; valid:")
    assert "n_levels" in message


def test_wrong_nested_type_names_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", '[summit]\nmap_encoding = { growth = "fast" }\n')
    with pytest.raises(ValueError, match=r"\[summit\]\.map_encoding: growth = 'fast': expected a "):
        load_config(METHODS["summit"], path)


def test_scalar_types_and_choices() -> None:
    assert typed(3, float, "lr") == 3.0 and isinstance(typed(3, float, "lr"), float)
    assert typed(None, int | None, "coil_compression") is None
    with pytest.raises(ValueError, match="coil_compression = 'x': expected an integer"):
        typed("x", int | None, "coil_compression")
    with pytest.raises(ValueError, match="iterations = True: expected an integer"):
        LrtConfig(iterations=True)
    with pytest.raises(ValueError, match="wnnm_maps.T1 = 'a': expected a number"):
        LoreinConfig(wnnm_maps={"T1": "a"})


def test_merge_keeps_what_the_table_does_not_name() -> None:
    base = SummitConfig(iterations=7)
    merged = merge(base, {"lr": 1}, "here")
    assert (merged.iterations, merged.lr) == (7, 1.0)
    assert base.lr != 1.0  # the original is unchanged
    with pytest.raises(ValueError, match="here: unknown key"):
        merge(base, {"pretrain": 3}, "here")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"lr": -1}, "lr = -1.0: expected a finite number above 0"),
        ({"lr": 0.0}, "lr = 0.0: expected a finite number above 0"),
        ({"lr": float("nan")}, "lr = nan: expected a finite number above 0"),
        ({"dc1": -0.5}, "dc1 = -0.5: expected a finite number at least 0"),
        ({"iterations": -1}, "iterations = -1: expected at least 0"),
        ({"decay_every": 0}, "decay_every = 0: expected at least 1"),
        ({"coil_compression": 0}, "coil_compression = 0: expected at least 1"),
        ({"wnnm_maps": {"T1": -2.0}}, "wnnm_maps.T1 = -2.0: expected a finite number at least 0"),
        ({"map_encoding": {"growth": 0.5}}, "growth = 0.5: expected a finite number at least 1"),
        (
            {"average_fraction": 1.0},
            "average_fraction = 1.0: expected a finite number at least 0 and below 1",
        ),
        (
            {"average_fraction": -0.1},
            "average_fraction = -0.1: expected a finite number at least 0 and below 1",
        ),
    ],
)
def test_ranges_are_checked_where_the_configuration_is_read(
    tmp_path: Path, table: dict, message: str
) -> None:
    where = f"{tmp_path / 'c.toml'} [lorein]"
    with pytest.raises(ValueError, match="^" + re.escape(where)) as caught:
        merge(LoreinConfig(), table, where)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    edges = {
        "lr": 1e-9,
        "dc1": 0.0,
        "iterations": 0,
        "decay_every": 1,
        "coil_compression": 1,
        "average_fraction": 0.0,
    }
    assert merge(LoreinConfig(), edges, where).iterations == 0  # the bounds themselves pass


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"rank": 0}, "rank = 0: expected at least 1"),
        ({"average_fraction": 1}, "average_fraction = 1.0: expected a finite number at least 0"),
    ],
)
def test_summit_settings_carry_lorein_ranges(table: dict, message: str) -> None:
    with pytest.raises(ValueError, match="^here: ") as caught:
        merge(SummitConfig(), table, "here")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert merge(SummitConfig(), {"rank": 1, "average_fraction": 0.99}, "here").rank == 1
