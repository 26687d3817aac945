import logging

from cryptography.fernet import Fernet

from mlx_platform.core.secrets import REDACTOR, SecretBox, mask, redact_value


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
