"""`--storage` and the `[storage]` table: a bucket behind the cache directory, or the directory
itself, with the AWS variables over the file and every mistake named at start-up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mirror.config import ConfigError, S3Settings, load_settings


def test_unset_or_a_directory_keeps_the_cache_directory_as_the_store(tmp_path: Path) -> None:
    """No --storage, a path or a file:// URL: no bucket; the path is the cache directory."""
    assert load_settings(None, {}, environ={}).storage is None
    for value in (str(tmp_path / "c"), f"file://{tmp_path}/c"):
        settings = load_settings(None, {"storage": value}, environ={})
        assert settings.storage is None
        assert settings.cache_dir == tmp_path / "c"


def test_s3_url_flag_and_aws_variables(tmp_path: Path) -> None:
    """`--storage s3://BUCKET/PREFIX` with endpoint, region and keys from the AWS variables."""
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:8333",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    settings = load_settings(None, {"storage": "s3://mirror-cache/site/a/"}, environ=env)
    assert settings.storage == S3Settings(
        bucket="mirror-cache",
        prefix="site/a",
        endpoint="http://127.0.0.1:8333",
        region="eu-west-1",
        access_key_id="id",
        secret_access_key="secret",
    )
    assert "secret" not in repr(settings)


def test_storage_table_with_secret_file_under_the_environment(tmp_path: Path) -> None:
    """The `[storage]` table's keys, a secret read from a file, and AWS_* over the file."""
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    config = tmp_path / "mirror.toml"
    config.write_text(
        '[storage]\nurl = "s3://bucket-a"\nendpoint = "http://file.example"\n'
        f'access_key_id = "file-id"\nsecret_access_key_file = "{secret}"\nredirect = true\n'
        'max_size = "3GiB"\nkeep_local = false\n'
    )
    env = {"AWS_ENDPOINT_URL": "http://env.example"}
    storage = load_settings(str(config), {}, environ=env).storage
    assert storage is not None
    assert (storage.bucket, storage.prefix, storage.endpoint) == (
        "bucket-a",
        "",
        env["AWS_ENDPOINT_URL"],
    )
    assert (storage.access_key_id, storage.secret_access_key) == ("file-id", "from-file")
    assert storage.redirect
    assert storage.max_size == 3 << 30
    assert not storage.keep_local
    # The flag beats the file's url; the table's other keys still apply.
    flagged = load_settings(str(config), {"storage": "s3://bucket-b/p"}, environ={}).storage
    assert flagged is not None
    assert (flagged.bucket, flagged.prefix, flagged.endpoint) == (
        "bucket-b",
        "p",
        "http://file.example",
    )


def test_top_level_storage_key_in_the_file(tmp_path: Path) -> None:
    """`storage = "s3://…"` at the top level of the file works as well as the table."""
    config = tmp_path / "mirror.toml"
    config.write_text('storage = "s3://bucket-c/x"\n')
    storage = load_settings(str(config), {}, environ={}).storage
    assert storage is not None and (storage.bucket, storage.prefix) == ("bucket-c", "x")


@pytest.mark.parametrize(
    ("flags", "table", "message"),
    [
        ({"storage": "s3://"}, "", "--storage: 's3://' names no valid bucket"),
        ({"storage": "s3://Bucket/x"}, "", "names no valid bucket"),
        ({"storage": "s3://bucket/a/../b"}, "", "has an empty or dot component"),
        ({"storage": "ftp://x"}, "", "is neither s3://BUCKET/PREFIX nor a directory"),
        ({}, '[storage]\nregion = "x"\n', "storage: the [storage] keys need an s3://"),
        ({}, '[storage]\nurl = "s3://bkt"\nsecret = "x"\n', "storage.secret: unknown option"),
        ({}, '[storage]\nurl = "s3://bkt"\naccess_key_id = "x"\n', "go together"),
        ({}, '[storage]\nurl = "s3://bkt"\nendpoint = "s3.example"\n', "not an http(s) URL"),
        ({}, '[storage]\nurl = "s3://bkt"\nsecret_access_key_file = "/no/such"\n', "cannot read"),
        ({}, '[storage]\nurl = "s3://bkt"\nredirect = "perhaps"\n', "storage.redirect"),
        ({}, '[storage]\nurl = "s3://bkt"\nmax_size = "80%"\n', "a size, not a share"),
        ({}, '[storage]\nurl = "s3://bkt"\nkeep_local = "sometimes"\n', "storage.keep_local"),
        ({}, '[storage]\nurl = "s3://bkt"\nmax_size = "lots"\n', "storage.max_size: 'lots'"),
    ],
)
def test_bad_storage_settings_stop_start_up_naming_the_key(
    tmp_path: Path, flags: dict[str, str], table: str, message: str
) -> None:
    """Each mistake is one ConfigError that says which setting is wrong."""
    config = tmp_path / "mirror.toml"
    config.write_text(table)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(str(config), flags, environ={})


def test_storage_directory_must_agree_with_cache_dir(tmp_path: Path) -> None:
    """A --storage path that is not the --cache-dir is a contradiction, refused."""
    with pytest.raises(ConfigError, match="--storage: names another directory"):
        load_settings(None, {"storage": "/a", "cache_dir": "/b"}, environ={})
