import logging

from cryptography.fernet import Fernet

from mlx_platform.core.secrets import (
    REDACTOR,
    SecretBox,
    mask,
    redact_value,
    remember_url_credentials,
)


def test_sealed_configuration_hides_and_restores_secrets() -> None:
    box = SecretBox(Fernet.generate_key().decode())
    sealed = box.seal({"password": "pa55word-xyz", "user": "bob"}, {"password"})
    assert "pa55word-xyz" not in str(sealed)
    assert sealed["user"] == "bob"
    assert box.open(sealed) == {"password": "pa55word-xyz", "user": "bob"}
    assert mask(sealed, {"password"}) == {"password": "********", "user": "bob"}


def test_log_filter_masks_known_secret(caplog) -> None:
    REDACTOR.remember("tops3cret-value")
    logger = logging.getLogger("test.redaction")
    logger.addFilter(REDACTOR)
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        logger.info("connecting with %s", "tops3cret-value")
    assert "tops3cret-value" not in caplog.text
    assert "********" in caplog.text


def test_redact_value_walks_nested_structures() -> None:
    REDACTOR.remember("nested-secret-42")
    out = redact_value({"a": ["x nested-secret-42 y", {"b": "nested-secret-42"}], "n": 3})
    assert "nested-secret-42" not in str(out)
    assert out["n"] == 3


def test_a_url_password_is_masked_as_written_decoded_and_encoded_again() -> None:
    """An index or git remote URL with credentials: its password masked in the URL and in
    what is made of it (an HTTP client percent-encodes what the setting wrote plainly), the
    user name and the rest kept; a URL without a password, or no URL, remembers nothing."""
    remember_url_credentials("https://deploy:url-p%40ss-%C3%A9t%C3%A9@index.example/simple/")
    remember_url_credentials("https://deploy:plain-é-pw@git.example/repo.git")
    for text, shown in [
        (
            "https://deploy:url-p%40ss-%C3%A9t%C3%A9@index.example/simple/x/",
            "https://deploy:********@index.example/simple/x/",
        ),
        ("password url-p@ss-été refused", "password ******** refused"),
        (
            "https://deploy:plain-%C3%A9-pw@git.example/repo.git",
            "https://deploy:********@git.example/repo.git",
        ),
        ("https://deploy:plain-é-pw@git.example/", "https://deploy:********@git.example/"),
    ]:
        assert REDACTOR.redact(text) == shown
    for no_password in (
        "https://deploy@git.example/",
        "git@host:org/repo.git",
        "ssh://a-long-ssh-user-name-here@host/org/repo.git",
        "http://[::1",
    ):
        remember_url_credentials(no_password)
    kept = "deploy git.example host org a-long-ssh-user-name-here"
    assert REDACTOR.redact(kept) == kept


def test_a_token_given_as_an_https_user_name_is_masked() -> None:
    """`https://<token>@host/repo.git` (how GitHub takes a token): with no password, a user
    name of 16 characters or more is the credential, and is masked wherever it shows."""
    token = "ghp_T0kenAsUserName0123456789abcdef"
    remember_url_credentials(f"https://{token}@git.example/org/repo.git")
    assert REDACTOR.redact(f"git https://{token}@git.example/org/repo.git: 403") == (
        "git https://********@git.example/org/repo.git: 403"
    )
    assert token not in REDACTOR.redact(f"fetch failed for {token}")
