"""Subscription tokens (a namespace with subscribe-token: required) and user channels
(user-channel: "notify:{sub}") against a real node."""
import time

import jwt as pyjwt
import pytest

from conftest import Client, publish, wait_until

SECRET = "subscription-token-secret-0123456789abcdef"

CONFIG = """
namespaces:
  - name: private
    pattern: "private:*"
    subscribe-token: required
  - name: notify
    pattern: "notify:*"
    user-channel: "notify:{sub}"
"""


def token(sub, exp_in=600, **claims):
    return pyjwt.encode({"sub": sub, "exp": int(time.time()) + exp_in, **claims}, SECRET, algorithm="HS256")


@pytest.fixture
def node(herald_factory, tmp_path):
    path = tmp_path / "herald.yaml"
    path.write_text(CONFIG)
    return herald_factory(extra=["--config", str(path), "--token-secret", SECRET, "--token-leeway", "0"]).start()


def connect(node, sub, channels=("*",)):
    c = Client(node.ws_url(f"token={token(sub, channels=list(channels))}"))
    assert c.recv()["type"] == "authenticated"
    return c


def test_a_subscription_token_is_required_checked_and_its_expiry_ends_only_that_subscription(node, exchange):
    ann = connect(node, "ann")                      # her connection token covers every channel...
    ann.send({"op": "subscribe", "channel": "private:1"})
    e = ann.recv()                                  # ...but this namespace wants a subscription token
    assert (e["type"], e["code"], e["channel"]) == ("error", "subscription_token_required", "private:1")
    ann.send({"op": "subscribe", "channel": "private:1", "token": token("bob", channel="private:1")})
    e = ann.recv()
    assert (e["code"], e["channel"]) == ("bad_subscription_token", "private:1") and "sub is not the connection's" in e["message"]
    ann.send({"op": "subscribe", "channel": "private:1", "token": token("ann", exp_in=-60, channel="private:1")})
    assert "expired" in ann.recv()["message"]
    publish(exchange, "private:1", [b"before"])
    ann.send({"op": "subscribe", "channel": "private:1", "token": token("ann", exp_in=3, channel="private:1")})
    ann.send({"op": "subscribe", "channel": "open:1"})
    frames = [ann.recv() for _ in range(3)]
    assert sorted((f["type"], f["channel"]) for f in frames) == [("message", "private:1"), ("subscribed", "open:1"), ("subscribed", "private:1")]
    assert [(f["replay"]) for f in frames if f["channel"] == "private:1" and f["type"] == "subscribed"] == [1]
    assert [f["data"] for f in frames if f["type"] == "message"] == ["before"]
    # The subscription token runs out: that subscription ends, the connection and open:1 stay.
    frame = ann.recv(timeout=10)
    assert frame == {"type": "unsubscribed", "channel": "private:1", "reason": "token_expired"}
    publish(exchange, "open:1", [b"still connected"])
    publish(exchange, "private:1", [b"not for you any more"])
    msgs, others = ann.recv_messages("open:1", 1)
    assert msgs[0]["data"] == "still connected" and others == []
    ann.assert_nothing_follows()
    assert node.metrics()["herald_subscription_tokens_refused_total"] == 2


def test_a_refresh_keeps_the_subscription(node, exchange):
    ann = connect(node, "ann")
    old_exp = int(time.time()) + 2
    ann.send({"op": "subscribe", "channel": "private:2", "token": pyjwt.encode({"sub": "ann", "exp": old_exp, "channel": "private:*"},
                                                                               SECRET, algorithm="HS256")})
    assert ann.recv()["type"] == "subscribed"
    fresh_exp = int(time.time()) + 600
    ann.send({"op": "refresh", "channel": "private:2", "token": pyjwt.encode({"sub": "ann", "exp": fresh_exp, "channel": "private:2"},
                                                                             SECRET, algorithm="HS256")})
    assert ann.recv() == {"type": "refreshed", "channel": "private:2", "exp": fresh_exp}
    # The old token's deadline passes (nothing marks it but the clock): the subscription stays.
    wait_until(lambda: time.time() > old_exp + 1, 10, what="the first token's exp to pass")
    publish(exchange, "private:2", [b"m1"])
    msgs, others = ann.recv_messages("private:2", 1)
    assert msgs[0]["data"] == "m1" and others == []


def test_user_channels_are_readable_by_their_user_alone(node, exchange):
    ann = connect(node, "ann", channels=())
    bob = connect(node, "bob", channels=())
    ann.send({"op": "subscribe", "channel": "notify:ann"})
    assert ann.recv()["type"] == "subscribed"
    bob.send({"op": "subscribe", "channel": "notify:ann"})
    e = bob.recv()
    assert (e["type"], e["code"]) == ("error", "forbidden")
    publish(exchange, "notify:ann", [b"for ann"])
    msgs, _ = ann.recv_messages("notify:ann", 1)
    assert msgs[0]["data"] == "for ann"
    bob.assert_nothing_follows(0.3)
