"""Every copy of a password is masked, whatever form it takes in a message or traceback.

A traceback often holds the same secret several times (the URL in the call's arguments,
again in the driver's message, again in a chained exception), so masking only the first
copy would still print it.
"""

from __future__ import annotations

import traceback

import pytest

from nvmlab.masking import MASK, mask_passwords

SECRET = "hunter2-Zq"


def test_every_copy_in_urls_is_masked() -> None:
    url = f"postgresql+psycopg://lab:{SECRET}@db.example:5432/nvm"
    text = f"open {url} failed\n  retry {url}\n  (last URL: '{url}')"
    masked = mask_passwords(text)
    assert SECRET not in masked
    assert masked.count(f"lab:{MASK}@db.example") == 3


def test_every_literal_copy_of_a_known_password_is_masked() -> None:
    text = f"auth {SECRET} refused; {SECRET} again; user said {SECRET}{SECRET}"
    masked = mask_passwords(text, [SECRET])
    assert SECRET not in masked
    assert masked.count(MASK) == 4


@pytest.mark.parametrize(
    "form",
    [
        "password={pw}",
        "password = {pw}",
        "PASSWORD='{pw}'",
        'password="{pw}"',
        "passwd={pw}",
        "?user=lab&password={pw}&sslmode=require",
    ],
)
def test_every_password_key_value_is_masked_without_being_told_the_password(form: str) -> None:
    """libpq connection strings and query strings carry ``password=...``; the top-level CLI
    masks tracebacks without knowing the password, so the form itself must be masked."""
    field = form.format(pw=SECRET)
    text = f"connect({field} host=h) failed: {field}\nfrom connect host=h {field} port=1"
    masked = mask_passwords(text)
    assert SECRET not in masked, masked
    assert masked.count(MASK) == 3


def test_a_chained_traceback_holding_the_secret_many_times_is_masked() -> None:
    url = f"postgresql+psycopg://lab:{SECRET}@127.0.0.1:1/nvm"

    def connect(u: str) -> None:
        raise ConnectionError(f"could not connect to {u} (password={SECRET})")

    try:
        try:
            connect(url)
        except ConnectionError as exc:
            raise RuntimeError(f"open {url} failed") from exc
    except RuntimeError as exc:
        trace = "".join(traceback.format_exception(exc))
    assert trace.count(SECRET) >= 3
    assert SECRET not in mask_passwords(trace)
    assert SECRET not in mask_passwords(trace, [SECRET])


def test_a_known_password_is_masked_in_its_percent_encoded_form_too() -> None:
    """A URL carries ``p@ss w0rd`` as ``p%40ss%20w0rd``; a driver may echo either form."""
    text = "dsn user=lab pass p%40ss%20w0rd; then p@ss w0rd; then p%40ss%20w0rd"
    masked = mask_passwords(text, ["p@ss w0rd"])
    assert "w0rd" not in masked
    assert masked.count(MASK) == 3
