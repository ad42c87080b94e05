"""The rule of a caller's DTMF keys (clients/sip/key_answers.py): when the agent is asked to answer them."""
from __future__ import annotations

from clients.sip.key_answers import KeyAnswers


def test_keys_are_answered_once_after_the_pause_that_follows_the_last_one() -> None:
    keys = KeyAnswers()
    for _ in range(3):
        keys.key_pressed()
    assert keys.pausing
    assert keys.pause_ended(replying=False)
    assert not keys.pausing
    assert not keys.reply_done("resp_keys", said_nothing=False)  # the reply to them asks for nothing more


def test_a_pause_that_ends_during_a_reply_asks_at_the_end_of_that_reply() -> None:
    keys = KeyAnswers()
    keys.key_pressed()
    assert not keys.pause_ended(replying=True)
    assert keys.reply_done("resp_under_way", said_nothing=False)


def test_speech_after_the_keys_leaves_them_to_its_reply() -> None:
    keys = KeyAnswers()
    keys.key_pressed()
    keys.caller_speaks()
    assert not keys.pausing  # the pause timer is stopped
    keys.reply_started("resp_speech")
    assert not keys.reply_done("resp_speech", said_nothing=False)


def test_a_reply_that_took_the_keys_and_said_nothing_gets_them_asked_for_once() -> None:
    keys = KeyAnswers()
    keys.key_pressed()
    keys.caller_speaks()  # a cough: the turn's reply says nothing
    keys.reply_started("resp_cough")
    assert keys.reply_done("resp_cough", said_nothing=True)
    keys.reply_started("resp_asked")
    assert not keys.reply_done("resp_asked", said_nothing=True)  # not asked again


def test_an_empty_reply_that_did_not_take_keys_asks_for_nothing() -> None:
    keys = KeyAnswers()
    keys.reply_started("resp_other")
    assert not keys.reply_done("resp_other", said_nothing=True)
