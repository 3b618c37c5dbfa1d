"""Launch configuration: flag > environment > config file > AWS profile, and how a gap is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bincounter.aws.config import (
    CONFIG_ENV,
    AwsConfig,
    parse_s3_uri,
    resolve_config,
)
from bincounter.errors import LaunchConfigError

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"


@pytest.fixture(autouse=True)
def no_ambient_settings(monkeypatch, tmp_path):
    """No ~/.config/bincounter/aws.toml and no AWS profile region but what a test writes."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws_config"))
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", CONFIG_ENV):
        monkeypatch.delenv(name, raising=False)


def _file(tmp_path: Path, text: str, name: str = "aws.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _profile_region(tmp_path: Path, region: str) -> None:
    (tmp_path / "aws_config").write_text(f"[default]\nregion = {region}\n")


@pytest.mark.parametrize(
    ("flag", "env", "file", "profile", "expected"),
    [
        ("eu-west-1", "eu-west-2", "eu-west-3", "eu-north-1", "eu-west-1"),
        (None, "eu-west-2", "eu-west-3", "eu-north-1", "eu-west-2"),
        ("", "eu-west-2", "eu-west-3", "eu-north-1", "eu-west-2"),  # an empty flag is unset
        (None, None, "eu-west-3", "eu-north-1", "eu-west-3"),
        (None, None, None, "eu-north-1", "eu-north-1"),
        (None, None, None, None, None),
    ],
)
def test_region_resolution_order(tmp_path, flag, env, file, profile, expected):
    if profile:
        _profile_region(tmp_path, profile)
    path = _file(tmp_path, f'region = "{file}"\n' if file else "")
    config = resolve_config(
        {"region": flag}, env={"BINCOUNTER_REGION": env} if env else {}, config_file=path
    )
    assert config.region == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"BINCOUNTER_REGION": "a-1", "AWS_REGION": "b-1", "AWS_DEFAULT_REGION": "c-1"}, "a-1"),
        ({"AWS_REGION": "b-1", "AWS_DEFAULT_REGION": "c-1"}, "b-1"),
        ({"AWS_DEFAULT_REGION": "c-1"}, "c-1"),
        ({"BINCOUNTER_REGION": "", "AWS_REGION": "b-1"}, "b-1"),
    ],
)
def test_environment_variables_in_order(env, expected):
    assert resolve_config({}, env=env).region == expected


@pytest.mark.parametrize(
    ("name", "env_var", "value"),
    [
        ("role", "BINCOUNTER_ROLE_ARN", ROLE),
        ("role", "SAGEMAKER_ROLE_ARN", ROLE),
        ("bucket", "BINCOUNTER_BUCKET", "env-bucket"),
        ("image", "BINCOUNTER_IMAGE_URI", "env/image:1"),
        ("prefix", "BINCOUNTER_S3_PREFIX", "env-prefix"),
    ],
)
def test_every_setting_flag_over_env_over_file(tmp_path, name, env_var, value):
    path = _file(tmp_path, f'{name} = "from-file"\nregion = "r-1"\n')  # region: no profile read
    assert getattr(resolve_config({}, env={}, config_file=path), name) == "from-file"
    assert getattr(resolve_config({}, env={env_var: value}, config_file=path), name) == value
    flags = {name: "from-flag"}
    assert (
        getattr(resolve_config(flags, env={env_var: value}, config_file=path), name) == "from-flag"
    )


def test_config_file_found_by_environment_variable_and_json_by_suffix(tmp_path):
    path = _file(tmp_path, '{"bucket": "json-bucket", "region": "us-west-2"}', "aws.json")
    config = resolve_config({}, env={CONFIG_ENV: str(path)})
    assert (config.bucket, config.region, config.config_file) == ("json-bucket", "us-west-2", path)


def test_default_config_file_in_home(tmp_path):
    default = tmp_path / "home" / ".config" / "bincounter" / "aws.toml"
    default.parent.mkdir(parents=True)
    default.write_text('bucket = "home-bucket"\nprefix = "p"\n')
    config = resolve_config({}, env={})
    assert (config.bucket, config.prefix, config.config_file) == ("home-bucket", "p", default)


def test_defaults_when_nothing_is_set():
    assert resolve_config({}, env={}) == AwsConfig()
    assert AwsConfig().prefix == "bincounter"


@pytest.mark.parametrize(
    ("name", "require", "flag", "env_var"),
    [
        ("region", "require_region", "--region", "BINCOUNTER_REGION or AWS_REGION"),
        ("role", "require_role", "--role", "BINCOUNTER_ROLE_ARN or SAGEMAKER_ROLE_ARN"),
        ("bucket", "require_bucket", "--bucket", "BINCOUNTER_BUCKET"),
        ("image", "require_image", "--image", "BINCOUNTER_IMAGE_URI"),
    ],
)
def test_missing_value_names_flag_environment_and_file(tmp_path, name, require, flag, env_var):
    path = _file(tmp_path, "")
    config = resolve_config({}, env={}, config_file=path)
    with pytest.raises(LaunchConfigError) as info:
        getattr(config, require)()
    reason = info.value.reason
    assert f"pass {flag} " in reason
    assert f"set {env_var}," in reason
    assert f'add {name} = "' in reason and f"to {path}" in reason
    assert CONFIG_ENV in reason


def test_missing_value_names_the_default_file_when_none_is_used():
    with pytest.raises(LaunchConfigError) as info:
        AwsConfig().require_bucket()
    assert "~/.config/bincounter/aws.toml" in info.value.reason


@pytest.mark.parametrize(
    "role",
    [
        "SageMakerExecution",
        "arn:aws:iam::123:role/x",
        "arn:aws:iam::123456789012:user/x",
        "arn:aws:s3:::bucket",
    ],
)
def test_role_must_be_an_iam_role_arn(role):
    with pytest.raises(LaunchConfigError) as info:
        AwsConfig(role=role).require_role()
    assert f"role {role!r} is not an IAM role ARN" in info.value.reason


@pytest.mark.parametrize("role", [ROLE, "arn:aws-cn:iam::123456789012:role/path/to/Role+x=y,z.@-"])
def test_role_arns_accepted(role):
    assert AwsConfig(role=role).require_role() == role


@pytest.mark.parametrize(
    ("text", "suffix", "fragment"),
    [
        ('colour = "blue"\n', ".toml", "unknown setting(s) ['colour']"),
        ("region = \n", ".toml", "is not valid"),
        ("{", ".json", "is not valid"),
        ('["region"]', ".json", "must hold a table/object of settings"),
    ],
)
def test_bad_config_file_is_named(tmp_path, text, suffix, fragment):
    path = _file(tmp_path, text, f"aws{suffix}")
    with pytest.raises(LaunchConfigError) as info:
        resolve_config({}, env={}, config_file=path)
    assert str(path) in info.value.reason and fragment in info.value.reason


def test_missing_explicit_config_file(tmp_path):
    with pytest.raises(LaunchConfigError, match="does not exist"):
        resolve_config({}, env={CONFIG_ENV: str(tmp_path / "nope.toml")})


def test_empty_values_in_file_are_unset(tmp_path):
    path = _file(tmp_path, 'bucket = ""\nregion = "r-1"\n')
    config = resolve_config({}, env={}, config_file=path)
    assert (config.bucket, config.region) == (None, "r-1")


@pytest.mark.parametrize(
    ("prefix", "parts", "expected"),
    [
        ("bincounter", ("data",), "s3://b/bincounter/data"),
        ("/bc/", ("/output/", "job"), "s3://b/bc/output/job"),
        ("", ("data",), "s3://b/data"),
        ("bc", ("", "x"), "s3://b/bc/x"),
    ],
)
def test_s3_uri_joins_prefix_and_parts(prefix, parts, expected):
    assert AwsConfig(bucket="b", prefix=prefix).s3_uri(*parts) == expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/key/prefix", ("bucket", "key/prefix")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/a/b/", ("bucket", "a/b/")),
    ],
)
def test_parse_s3_uri(uri, expected):
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("bucket/key", "is not an s3:// URI"),
        ("S3://bucket/key", "is not an s3:// URI"),
        ("https://bucket.s3.amazonaws.com/key", "is not an s3:// URI"),
        ("s3:///key", "has no bucket"),
        ("s3://", "has no bucket"),
    ],
)
def test_parse_s3_uri_rejects(uri, fragment):
    with pytest.raises(LaunchConfigError) as info:
        parse_s3_uri(uri)
    assert info.value.reason == f"{uri!r} {fragment}"
