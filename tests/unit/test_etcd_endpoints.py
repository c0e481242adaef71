"""etcd client URLs: every member parsed, one scheme for all, and the gRPC target naming them."""

from __future__ import annotations

import pytest

from fleetd.etcdclient import Endpoints, Member, channel_target, parse_endpoints


def test_a_comma_list_and_a_list_name_the_same_members() -> None:
    expected = Endpoints((Member("10.0.0.1", 2379), Member("etcd-b", 4001)), secure=False)
    assert parse_endpoints("http://10.0.0.1:2379, http://etcd-b:4001") == expected
    assert parse_endpoints(["http://10.0.0.1:2379", "http://etcd-b:4001"]) == expected


@pytest.mark.parametrize(
    ("url", "member", "secure"),
    [
        ("http://10.0.0.1", Member("10.0.0.1", 2379), False),
        ("10.0.0.1:4001", Member("10.0.0.1", 4001), False),
        ("https://etcd.example:2379", Member("etcd.example", 2379), True),
        ("http://[fd00::1]:2379", Member("fd00::1", 2379), False),
    ],
)
def test_one_endpoint(url: str, member: Member, secure: bool) -> None:
    assert parse_endpoints(url) == Endpoints((member,), secure)


def test_a_member_listed_twice_is_used_once() -> None:
    endpoints = parse_endpoints("http://a:2379,http://b:2379,http://a:2379")
    assert endpoints.members == (Member("a", 2379), Member("b", 2379))


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ("http://a:2379,https://b:2379", "mix http:// and https://"),
        ("unix:///run/etcd.sock", "expected http(s)://HOST:PORT"),
        ("http://a:notaport", "expected http(s)://HOST:PORT"),
        (" , ", "no etcd endpoint"),
    ],
)
def test_endpoints_fleetd_cannot_use_are_refused(urls: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_endpoints(urls)


def test_the_target_lists_every_address_in_order() -> None:
    addresses = [("10.0.0.2", 2379), ("10.0.0.1", 2379)]
    assert channel_target(addresses) == "ipv4:10.0.0.2:2379,10.0.0.1:2379"


def test_ipv4_and_ipv6_share_one_target_as_ipv6() -> None:
    addresses = [("fd00::1", 2379), ("10.0.0.1", 4001)]
    assert channel_target(addresses) == "ipv6:[fd00::1]:2379,[::ffff:10.0.0.1]:4001"
