"""`redact_value` over whatever a plugin may return: keys, bytes, sets, dataclasses; and the
longest secret masked whole."""

from dataclasses import dataclass

from mlx_platform.core.secrets import REDACTOR, redact_value

MASK = "********"


def test_keys_bytes_and_containers_are_masked() -> None:
    REDACTOR.remember("key-7f3a9c")
    out = redact_value(
        {
            "key-7f3a9c": "as a key",
            b"raw": b"bytes key-7f3a9c bytes",
            "t": ("key-7f3a9c", 1, None, True),
            "s": {"x-key-7f3a9c"},
            "deep": [[{"k": ["key-7f3a9c"]}]],
        }
    )
    assert "key-7f3a9c" not in repr(out)
    assert out[MASK] == "as a key"
    assert out[b"raw"] == b"bytes " + MASK.encode() + b" bytes"
    assert out["t"] == [MASK, 1, None, True]
    assert out["s"] == [f"x-{MASK}"]


@dataclass
class Answer:
    token: str
    count: int


class Opaque:
    def __str__(self) -> str:
        return "opaque holding key-7f3a9c"


def test_objects_are_masked_through_their_fields_or_text() -> None:
    REDACTOR.remember("key-7f3a9c")
    assert redact_value(Answer("key-7f3a9c", 2)) == {"token": MASK, "count": 2}
    assert redact_value([Opaque()]) == [f"opaque holding {MASK}"]


def test_a_secret_containing_another_is_masked_whole() -> None:
    REDACTOR.remember("abc-secret")
    REDACTOR.remember("abc-secret-longer")
    assert REDACTOR.redact("x abc-secret-longer y abc-secret") == f"x {MASK} y {MASK}"
