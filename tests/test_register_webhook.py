"""``athm register_webhook``: what reaches ATH Móvil (a fake one on 127.0.0.1), what is printed, and what
is refused before anything is sent."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time

import pytest
from django.core.management import CommandError, call_command

from athm_core.ath import client
from athm_core.management.commands.register_webhook import mask_listener_url
from tests.conftest import ROOT
from tests.fake_athm import fake_athm_fixture  # noqa: F401
from tests.test_local import athm_command

PATH = "/transactions/webhook/post"
PUBLIC = "pub-5a0c9e1d7b3f4e2a8c6d"
PRIVATE = "priv-DO-NOT-PRINT-3b7e19c4f2a6d8e0"
URL_SECRET = "k3JdQm9vX2pL7sTn4wYz8bRcHf6uEa1G"
LISTENER = f"https://abc123.execute-api.us-east-1.amazonaws.com/webhook/{URL_SECRET}"
SHOWN = "https://abc123.execute-api.us-east-1.amazonaws.com/webhook/k3Jd…"
ALL_EVENTS = {
    "ecommercePaymentReceivedEvent": True,
    "ecommercePaymentCancelledEvent": True,
    "ecommercePaymentExpiredEvent": True,
    "refundSentEvent": True,
    "paymentReceivedEvent": True,
    "donationReceivedEvent": True,
}


@pytest.fixture
def ath(fake_athm, settings, monkeypatch):
    """The fake ATH Móvil answering the subscription with success, and both tokens set."""
    fake_athm.answer(PATH, 200, {"status": "success"})
    settings.ATHM_PUBLIC_TOKEN = PUBLIC
    settings.ATHM_PRIVATE_TOKEN = PRIVATE
    # Not a terminal, whatever pytest was started from: nothing may wait for a prompt.
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    return fake_athm


def register(*args: str) -> tuple[str, str]:
    """Run the command in this process; its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    call_command("register_webhook", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refused(*args: str) -> str:
    """Run the command expecting a CommandError; its message."""
    with pytest.raises(CommandError) as raised:
        register(*args)
    return str(raised.value)


def assert_nothing_leaked(text: str) -> None:
    assert PRIVATE not in text
    assert URL_SECRET not in text
    assert URL_SECRET[:5] not in text  # no more of the secret than the four characters that name it


# --- what ATH Móvil receives --------------------------------------------------------------------------


def test_by_default_all_six_events_are_registered_for_the_url(ath):
    out, err = register(LISTENER)

    [request] = ath.requests
    assert (request.method, request.path) == ("POST", PATH)
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "publicToken": PUBLIC,
        "privateToken": PRIVATE,
        "listenerURL": LISTENER,
        **ALL_EVENTS,
    }
    assert out.splitlines() == [
        f"registered {SHOWN} with ATH Móvil",
        "  subscribed: ecommerce_completed, ecommerce_cancelled, ecommerce_expired, refund_sent, "
        "payment_received, donation_received",
    ]
    assert err == ""
    assert_nothing_leaked(out)


def test_a_subset_subscribes_those_events_and_unsubscribes_the_rest(ath):
    out, _ = register(
        LISTENER, "--events", "ecommerce_completed, refund_sent", "--events", "ECOMMERCE_CANCELLED"
    )

    assert ath.requests[0].json == {
        "publicToken": PUBLIC,
        "privateToken": PRIVATE,
        "listenerURL": LISTENER,
        "ecommercePaymentReceivedEvent": True,
        "ecommercePaymentCancelledEvent": True,
        "ecommercePaymentExpiredEvent": False,
        "refundSentEvent": True,
        "paymentReceivedEvent": False,
        "donationReceivedEvent": False,
    }
    assert "  subscribed: ecommerce_completed, ecommerce_cancelled, refund_sent" in out.splitlines()
    assert "  not subscribed: ecommerce_expired, payment_received, donation_received" in out.splitlines()


def test_public_token_option_wins_over_the_setting(ath):
    register(LISTENER, "--public-token", "  pub-from-option  ")
    assert ath.requests[0].json["publicToken"] == "pub-from-option"


def test_in_a_terminal_the_private_token_is_asked_for_hidden(ath, settings, monkeypatch):
    settings.ATHM_PRIVATE_TOKEN = ""
    prompts = []

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or f" {PRIVATE}\n")

    out, _ = register(LISTENER)
    assert prompts == ["ATH Móvil private token (input hidden): "]
    assert ath.requests[0].json["privateToken"] == PRIVATE
    assert_nothing_leaked(out)


def test_the_athm_command_registers_from_a_shell(ath, child_env):
    env = {**child_env, "ATHM_API_BASE_URL": ath.base_url, "ATHM_PUBLIC_TOKEN": PUBLIC}
    env["ATHM_PRIVATE_TOKEN"] = PRIVATE
    command = [*athm_command(), "register_webhook", LISTENER, "--events", "ecommerce_completed,refund_sent"]
    result = subprocess.run(
        command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert ath.requests[0].json == {
        "publicToken": PUBLIC,
        "privateToken": PRIVATE,
        "listenerURL": LISTENER,
        **dict.fromkeys(ALL_EVENTS, False),
        "ecommercePaymentReceivedEvent": True,
        "refundSentEvent": True,
    }
    assert f"registered {SHOWN} with ATH Móvil" in result.stdout
    assert_nothing_leaked(result.stdout + result.stderr)

    # An error from ATH Móvil: a non-zero exit with its message, still nothing leaked.
    ath.answer(PATH, 401, {"status": "error", "message": "Invalid credentials", "errorcode": "BTRA_0017"})
    failed = subprocess.run(
        command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1
    assert "Invalid credentials (HTTP 401, BTRA_0017)" in failed.stderr
    assert_nothing_leaked(failed.stdout + failed.stderr)
    assert len(ath.requests) == 2


def test_a_private_token_option_does_not_exist_so_it_never_reaches_shell_history(ath, child_env):
    env = {**child_env, "ATHM_API_BASE_URL": ath.base_url, "ATHM_PUBLIC_TOKEN": PUBLIC}
    result = subprocess.run(
        [*athm_command(), "register_webhook", LISTENER, "--private-token", PRIVATE],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "unrecognized arguments" in result.stderr
    assert ath.requests == []


# --- dry run --------------------------------------------------------------------------------------------


def test_dry_run_prints_the_request_with_the_private_token_masked_and_sends_nothing(ath):
    out, _ = register(LISTENER, "--dry-run", "--events", "refund_sent")

    lines = out.splitlines()
    assert lines[0] == f"would POST {ath.base_url}{PATH}"
    assert lines[-1] == "dry run: nothing was sent"
    assert json.loads("\n".join(lines[1:-1])) == {
        "publicToken": PUBLIC,
        "privateToken": "********",
        "listenerURL": SHOWN,
        **dict.fromkeys(ALL_EVENTS, False),
        "refundSentEvent": True,
    }
    assert_nothing_leaked(out)
    assert ath.requests == []


# --- refused before anything is sent --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["http://abc.example.com/webhook/" + URL_SECRET], "only to HTTPS listeners"),
        (["ftp://abc.example.com/webhook/x"], "only to HTTPS listeners"),
        (["abc.example.com/webhook/x"], "only to HTTPS listeners"),
        (["https:///webhook/" + URL_SECRET], "has no host"),
        (["https://"], "has no host"),
        (["https://abc.example.com:port/webhook/x"], "invalid port"),
        (["https://abc.example.com/webhook/a b"], "spaces or control characters"),
        ([LISTENER, "--events", "ecommerce_completed,refund"], "unknown event refund; valid events: "),
        ([LISTENER, "--events", " , "], "--events names no event"),
    ],
)
def test_bad_urls_and_events_are_refused_before_anything_is_sent(ath, args, message):
    error = refused(*args)
    assert message in error
    assert_nothing_leaked(error)
    assert ath.requests == []


def test_an_unknown_event_error_lists_the_valid_names(ath):
    error = refused(LISTENER, "--events", "completed")
    assert error == (
        "unknown event completed; valid events: ecommerce_completed, ecommerce_cancelled, "
        "ecommerce_expired, refund_sent, payment_received, donation_received"
    )


def test_a_missing_public_token_is_named(ath, settings):
    settings.ATHM_PUBLIC_TOKEN = ""
    assert "public token is missing: set ATHM_PUBLIC_TOKEN or pass --public-token" in refused(LISTENER)
    assert ath.requests == []


def test_a_missing_private_token_is_named_and_never_asked_for_without_a_terminal(ath, settings, monkeypatch):
    settings.ATHM_PRIVATE_TOKEN = ""
    monkeypatch.setattr("getpass.getpass", lambda prompt: pytest.fail("asked for a token without a terminal"))
    error = refused(LISTENER)
    assert "private token is missing: set ATHM_PRIVATE_TOKEN" in error
    assert "not accepted as an option" in error
    assert ath.requests == []


def test_a_plain_http_api_base_url_off_this_machine_is_refused(ath, settings):
    # The tokens would cross the network in clear text.
    settings.ATHM_API_BASE_URL = "http://athm.example.com"
    assert "ATH Móvil's API must be reached over https://" in refused(LISTENER)
    assert ath.requests == []


# --- ATH Móvil's errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "answer", "expected"),
    [
        (
            401,
            {"status": "error", "message": "Invalid token", "errorcode": "BTRA_0017", "data": None},
            "ATH Móvil: Invalid token (HTTP 401, BTRA_0017)",
        ),
        (
            400,
            {"errorCode": "BTRA_0001", "description": "Bad request"},
            "ATH Móvil: Bad request (HTTP 400, BTRA_0001)",
        ),
        # An error answered with 200.
        (
            200,
            {"status": "error", "message": "The listener URL is not valid"},
            "ATH Móvil: The listener URL is not valid (HTTP 200)",
        ),
        (200, {"success": False, "errorMessage": "Not allowed"}, "ATH Móvil: Not allowed (HTTP 200)"),
        (
            500,
            b"<html><body>Internal Server Error</body></html>",
            "ATH Móvil: an error answer: '<html><body>Internal Server Error</body></html>' (HTTP 500)",
        ),
        (503, b"", "ATH Móvil: an error answer without a body (HTTP 503)"),
        (200, b'{"status": "succ', 'ATH Móvil: the answer is not JSON: \'{"status": "succ\' (HTTP 200)'),
        (200, b"<html>maintenance</html>", "ATH Móvil: the answer is not JSON: '<html>maintenance</html>'"),
    ],
)
def test_ath_errors_exit_with_aths_message(ath, status, answer, expected):
    if isinstance(answer, bytes):
        ath.answer(PATH, status, raw=answer)
    else:
        ath.answer(PATH, status, answer)

    error = refused(LISTENER)
    assert error.startswith(f"could not register {SHOWN}: ")
    assert expected in error
    assert len(ath.requests) == 1


def test_an_error_that_quotes_the_private_token_or_the_url_back_does_not_print_them(ath):
    ath.answer(
        PATH,
        400,
        {"status": "error", "message": f"privateToken {PRIVATE} cannot post to {LISTENER} or {URL_SECRET}"},
    )
    error = refused(LISTENER)
    assert_nothing_leaked(error)
    assert f"privateToken ******** cannot post to {SHOWN} or …" in error


def test_the_api_error_carries_status_and_code(fake_athm):
    fake_athm.answer(PATH, 401, {"status": "error", "message": "Invalid token", "errorcode": "BTRA_0017"})
    with pytest.raises(client.AthmApiError) as raised:
        client.register_webhook(LISTENER, events=["refund_sent"], public_token=PUBLIC, private_token=PRIVATE)
    assert (raised.value.status, raised.value.code, raised.value.message) == (
        401,
        "BTRA_0017",
        "Invalid token",
    )


@pytest.mark.parametrize(
    ("status", "answer", "returned"),
    [
        (200, {"status": "success"}, {"status": "success"}),
        (
            200,
            {"status": "success", "data": {"listenerURL": "x"}},
            {"status": "success", "data": {"listenerURL": "x"}},
        ),
        # The success body is not documented: any 2xx without an error in it is a success.
        (201, b"", {}),
        (200, b"[]", []),
        (200, {"message": "Webhook saved"}, {"message": "Webhook saved"}),
    ],
)
def test_any_2xx_without_an_error_is_a_success_and_the_answer_is_returned(
    fake_athm, status, answer, returned
):
    if isinstance(answer, bytes):
        fake_athm.answer(PATH, status, raw=answer)
    else:
        fake_athm.answer(PATH, status, answer)
    result = client.register_webhook(
        LISTENER, events=client.WEBHOOK_EVENTS, public_token=PUBLIC, private_token=PRIVATE
    )
    assert result == returned


def test_a_redirect_is_an_error_not_a_body_lost_on_the_way(ath):
    ath.answer(PATH, 302, {}, headers={"Location": "https://www.athmovil.com/login"})
    error = refused(LISTENER)
    assert "redirects to https://www.athmovil.com/login (HTTP 302)" in error
    assert len(ath.requests) == 1


# --- ATH Móvil slow or away -----------------------------------------------------------------------------


def test_a_server_slower_than_the_timeout_is_an_error_in_time(ath, monkeypatch):
    monkeypatch.setattr(client, "TIMEOUT", 0.3)
    ath.answer(PATH, 200, {"status": "success"}, delay=30)
    started = time.monotonic()
    error = refused(LISTENER)
    assert time.monotonic() - started < 5
    assert error == f"could not register {SHOWN}: ATH Móvil: {ath.base_url}{PATH} did not answer within 0.3 s"
    assert len(ath.requests) == 1


def test_a_connection_closed_without_an_answer_is_an_error(ath):
    ath.answer(PATH, close=True)
    assert "closed the connection without an answer" in refused(LISTENER)
    assert len(ath.requests) == 1


def test_an_unreachable_server_is_an_error(ath, settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now.
    settings.ATHM_API_BASE_URL = f"http://127.0.0.1:{port}"
    error = refused(LISTENER)
    assert f"cannot reach http://127.0.0.1:{port}{PATH}" in error
    assert "refused" in error.lower()
    assert_nothing_leaked(error)


# --- the URL as printed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (LISTENER, SHOWN),
        ("https://api.example.com/prod/webhook/short-secret", "https://api.example.com/prod/webhook/…"),
        (
            f"https://user:pw@api.example.com/webhook/{URL_SECRET}?a=b",
            "https://api.example.com/webhook/k3Jd…?…",
        ),
        ("https://api.example.com/hooks/athm", "https://api.example.com/hooks/athm"),
        # A view of the merchant's own at a secret path of its own.
        (f"https://shop.example/athm/hook/{URL_SECRET}/", "https://shop.example/athm/hook/k3Jd…"),
    ],
)
def test_the_printed_url_hides_the_secret(url, shown):
    assert mask_listener_url(url) == shown


def test_a_url_without_a_webhook_secret_is_registered_with_a_warning(ath):
    out, err = register("https://api.example.com/hooks/athm")
    assert "would get 404" in err
    assert ath.requests[0].json["listenerURL"] == "https://api.example.com/hooks/athm"
    assert out.startswith("registered https://api.example.com/hooks/athm with ATH Móvil")
