"""params.yaml's one check (pipeline/paramcheck.py): what the type rules accept and refuse,
and that each error names the line, the key and what to do (issue 16)."""

from __future__ import annotations

import logging

import pytest

from mlops_nb.errors import ConfigError
from mlops_nb.pipeline.paramcheck import check_parsed, parse_text

DECLARED = {"nb": {"N": "100", "RATE": "0.5", "FLAG": "True", "NAME": "'x'", "ANY": "None",
                   "COLS": "['a', 'b']", "PAIR": "(1, 2)", "OPTS": "{'k': 1}"}}
GOOD = ("nb:\n  N: 100\n  RATE: 0.5\n  FLAG: true\n  NAME: x\n  ANY: [1]\n  COLS: [c]\n"
        "  PAIR: [3, 4]\n  OPTS: {k: 2}\n")


def checked(text: str, declared: dict = DECLARED) -> dict:
    return check_parsed(parse_text(text), declared)


def with_value(key: str, value: str) -> str:
    return "\n".join(f"  {key}: {value}" if line.startswith(f"  {key}:") else line
                     for line in GOOD.splitlines()) + "\n"


def test_values_of_the_declared_types_pass():
    assert checked(GOOD)["nb"]["N"] == 100


@pytest.mark.parametrize("key, value", [
    ("RATE", "1"),          # an int where a float is declared
    ("ANY", "'text'"),      # None declared: anything
    ("ANY", "null"),
    ("RATE", ".inf"),
])
def test_accepted(key, value):
    checked(with_value(key, value))


@pytest.mark.parametrize("key, value, line, expected, hint", [
    ("N", '"100"', 2, "(an integer)", "write 100 without quotes"),
    ("N", "true", 2, "(an integer)", "write an integer there"),      # a bool is no int
    ("N", "100.0", 2, "(an integer)", "write an integer there"),
    ("RATE", "yes", 3, "(a number)", "write a number there"),
    ("RATE", "'0.5'", 3, "(a number)", "write 0.5 without quotes"),
    ("FLAG", "1", 4, "(a boolean)", "write a boolean there"),
    ("FLAG", "'true'", 4, "(a boolean)", "write true without quotes"),
    ("NAME", "1.0", 5, "(a string)", "write a string there"),
    ("NAME", "2024-01-01", 5, "(a string)", "write a string there"),  # YAML reads a date
    ("COLS", "a", 7, "(a list)", "write a list there"),
    ("PAIR", "{a: 1}", 8, "(a list)", "write a list there"),
    ("OPTS", "[1]", 9, "(a mapping)", "write a mapping there"),
    ("N", "null", 2, "(an integer)", "write an integer there"),
])
def test_refused_with_line_key_and_expected_type(key, value, line, expected, hint):
    with pytest.raises(ConfigError) as err:
        checked(with_value(key, value))
    message = str(err.value)
    assert message.startswith(f"params.yaml:{line}:{len(key) + 5}: nb.{key} is "), message
    assert f"but notebook 'nb' declares {key} = {DECLARED['nb'][key]} {expected}" in message
    assert hint in message
    assert err.value.exit_code == 3


def test_a_value_the_merge_took_from_the_notebook_is_not_the_files():
    check_parsed(parse_text(with_value("N", '"100"')), DECLARED, skip={("nb", "N")})


@pytest.mark.parametrize("text", ["", "\n\n", "# tuned values\n# more\n", "null\n", "~\n"])
def test_an_empty_file_is_an_error_saying_what_to_do(text):
    with pytest.raises(ConfigError, match=r"^params.yaml: is empty .*git checkout -- params"
                                          r".yaml.*delete it and run `mlops-nb compile`"):
        parse_text(text)


def test_a_duplicate_key_names_line_key_and_the_first_line():
    with pytest.raises(ConfigError, match=r"^params.yaml:4:3: duplicate key 'nb.N' \(first on"
                                          r" line 2\)"):
        parse_text("nb:\n  N: 1\n  RATE: 2\n  N: 3\n")
    with pytest.raises(ConfigError, match=r"^params.yaml:3:1: duplicate key 'nb'"):
        parse_text("nb: {N: 1}\nother: 2\nnb: {N: 2}\n")
    with pytest.raises(ConfigError, match=r"^params.yaml:2:16: duplicate key 'nb.OPTS.k'"):
        parse_text("nb:\n  OPTS: {k: 1, k: 2}\n")


def test_options_of_mlops_nb(caplog):
    with caplog.at_level(logging.WARNING):
        checked(GOOD + "mlops_nb:\n  ploomber_job: 2\n")
    assert "params.yaml:11: mlops_nb.ploomber_job is not an option of mlops_nb (did you mean" \
           " 'ploomber_jobs'?)" in caplog.text
    assert checked(GOOD + "mlops_nb:\n  ploomber_jobs: 2\n")["mlops_nb"]["ploomber_jobs"] == 2
    for bad in ('"2"', "0", "1.5", "true", "[2]"):
        with pytest.raises(ConfigError, match=r"^params.yaml:11:18: mlops_nb.ploomber_jobs"
                                              r" must be a whole number of at least 1"):
            checked(GOOD + f"mlops_nb:\n  ploomber_jobs: {bad}\n")
    with pytest.raises(ConfigError, match=r"^params.yaml:10:11: 'mlops_nb' must be a mapping"):
        checked(GOOD + "mlops_nb: 4\n")


def test_deploy_limits(caplog):
    good = GOOD + "mlops_nb:\n  deploy:\n    max_p99_ms: 250\n    load_test_seconds: 1.5\n"
    assert checked(good)["mlops_nb"]["deploy"] == {"max_p99_ms": 250, "load_test_seconds": 1.5}
    with caplog.at_level(logging.WARNING):
        checked(GOOD + "mlops_nb:\n  deploy:\n    max_p99: 250\n")
    assert "params.yaml:12: mlops_nb.deploy.max_p99 is not a limit of deploy (did you mean" \
           " 'max_p99_ms'?)" in caplog.text
    for bad in ('"250"', "0", "-1", "true", "[2]", ".nan", ".inf", "'a\\nb'"):
        with pytest.raises(ConfigError, match=r"^params.yaml:12:17: mlops_nb.deploy.max_p99_ms"
                                              r" must be a positive number, not"):
            checked(GOOD + f"mlops_nb:\n  deploy:\n    max_p99_ms: {bad}\n")
    for bad in ("1.5", "65"):
        with pytest.raises(ConfigError, match="load_test_clients must be a whole number of at"
                                              " most 64"):
            checked(GOOD + f"mlops_nb:\n  deploy:\n    load_test_clients: {bad}\n")
    with pytest.raises(ConfigError, match=r"^params.yaml:11:11: mlops_nb.deploy must be a"
                                          r" mapping of limits"):
        checked(GOOD + "mlops_nb:\n  deploy: 4\n")


def test_a_group_that_is_no_mapping_is_named():
    with pytest.raises(ConfigError, match=r"^params.yaml:1:5: 'nb' must be a mapping"):
        checked("nb: 5\n")
    checked("nb:\n")  # empty: compile fills it, a runner names what is missing
