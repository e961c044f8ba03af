import subprocess
import sys

import pytest

from raystore.exceptions import InvalidTag
from raystore.tag import VERSION_LENGTH, Tag, new_version


@pytest.mark.parametrize(
    "text, name, version",
    [
        ("iris_clf", "iris_clf", None),
        ("iris_clf:latest", "iris_clf", "latest"),
        ("iris-clf.v2:1m89jf14gkr0zn4z", "iris-clf.v2", "1m89jf14gkr0zn4z"),
        ("a", "a", None),
        ("a" * 63 + ":" + "0" * 63, "a" * 63, "0" * 63),
    ],
)
def test_parse_valid(text, name, version):
    tag = Tag.from_str(text)
    assert (tag.name, tag.version) == (name, version)
    assert str(tag) == text
    assert Tag.from_str(str(tag)) == tag


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("name:", "empty version"),
        (":v1", "empty"),
        ("a:b:c", "more than one"),
        ("Iris", "did you mean 'iris'"),
        ("../etc", "'..'"),
        ("a..b", "'..'"),
        ("a/b", "not allowed"),
        ("-abc", "not allowed"),
        ("abc_", "not allowed"),
        ("a b", "not allowed"),
        ("a" * 64, "64 characters"),
        ("ok:" + "v" * 64, "64 characters"),
        ("ok:v/../x", "'..'"),
        ("iris\n", "not allowed"),
        ("iris:v1\n", "not allowed"),
    ],
)
def test_parse_invalid_names_the_rule(text, words):
    with pytest.raises(InvalidTag) as err:
        Tag.from_str(text)
    message = str(err.value)
    assert words in message
    assert "lowercase letters" in message or "':'" in message or "string" in message


def test_non_string_tag():
    with pytest.raises(InvalidTag, match="must be a string"):
        Tag.from_str(42)


def test_latest_and_equality():
    assert Tag("m").is_latest and Tag("m", "latest").is_latest
    assert not Tag("m", "abc").is_latest
    assert Tag("m", "abc") == "m:abc"
    assert Tag("m", "abc") != "m:abd"
    assert {Tag("m", "a"), Tag.from_str("m:a")} == {Tag("m", "a")}
    assert repr(Tag("m", "a")) == 'Tag("m:a")'


def test_new_versions_are_valid_ordered_and_unique():
    versions = [new_version() for _ in range(5000)]
    assert all(len(v) == VERSION_LENGTH for v in versions)
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    for v in versions[:10]:
        Tag("m", v)  # valid


def test_new_versions_unique_across_processes():
    code = "from raystore.tag import new_version\nprint('\\n'.join(new_version() for _ in range(2000)))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate()[0].split() for p in procs]
    assert all(len(o) == 2000 for o in outputs)
    every = [v for o in outputs for v in o]
    assert len(set(every)) == len(every)
