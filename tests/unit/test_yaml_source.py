"""The one door for operator YAML: a refusal names the file, the line, the item and the field."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, field_validator

from selfheal.core.yaml_source import Problem, load_yaml, parse_yaml, read_yaml
from selfheal.domain import ConfigError


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    count: int = 0
    tags: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _plain(cls, value: str) -> str:
        if " " in value:
            raise ValueError("no spaces in a name")
        return value


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = "untitled"
    items: list[Item] = Field(default_factory=list)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refusal(path: Path, **options: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_yaml(path, Doc, **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


def unique_names(doc: Doc) -> Iterator[Problem]:
    seen: set[str] = set()
    for index, item in enumerate(doc.items):
        if item.name in seen:
            yield Problem(("items", index, "name"), f"{item.name!r} is used twice")
        seen.add(item.name)


def test_a_valid_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "title: t\nitems:\n  - {name: a, count: 2}\n  - name: b\n")
    doc = load_yaml(path, Doc)
    assert doc.title == "t"
    assert [(i.name, i.count) for i in doc.items] == [("a", 2), ("b", 0)]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_file_is_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_yaml(write(tmp_path, text), Doc) == Doc()


def test_a_duplicate_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        items:
          - name: a
            count: 1
            count: 2
        """,
    )
    assert refusal(path) == f"{path}:4: not valid YAML: key 'count' appears twice"


def test_a_duplicate_top_level_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "title: a\nitems: []\ntitle: b\n")
    assert refusal(path) == f"{path}:3: not valid YAML: key 'title' appears twice"


def test_merge_keys_still_merge_and_a_key_given_beside_them_wins() -> None:
    document = parse_yaml("base: &b {x: 1, y: 1}\nother:\n  <<: *b\n  y: 2\n", "t.yaml")
    assert document.data["other"] == {"x": 1, "y": 2}


def test_an_unhashable_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^t\.yaml:1: not valid YAML: found unhashable key"):
        parse_yaml("? [a]\n: 1\n", "t.yaml")


def test_invalid_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "title: t\nitems:\n  - name: [unclosed\n")
    assert refusal(path).startswith(f"{path}:4: not valid YAML: ")


def test_python_tags_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^t\.yaml:1: not valid YAML: could not determine"):
        parse_yaml("title: !!python/object/apply:os.system [true]\n", "t.yaml")


def test_a_wrong_field_is_located_at_its_line_with_the_item_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        items:
          - name: a
          - name: b
            count: many
        """,
    )
    assert refusal(path) == (
        f"{path}:4: items[1] (b): count: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_a_nested_list_error_names_the_item_and_the_path_within_it(tmp_path: Path) -> None:
    path = write(tmp_path, "items:\n  - name: a\n    tags:\n      - x\n      - [y]\n")
    assert refusal(path) == f"{path}:5: items[0] (a): tags.1: Input should be a valid string"


def test_an_item_without_a_name_is_named_by_its_index(tmp_path: Path) -> None:
    path = write(tmp_path, "title: t\nitems:\n  - count: 1\n")
    assert refusal(path) == f"{path}:3: items[0]: name: Field required"


def test_an_unknown_key_is_located_and_a_validator_message_is_kept_plain(tmp_path: Path) -> None:
    path = write(tmp_path, "items:\n  - name: a b\n    colour: red\n")
    assert refusal(path) == (
        f"{path}:2: items[0] (a b): name: no spaces in a name; "
        f"{path}:3: items[0] (a b): colour: Extra inputs are not permitted"
    )


def test_a_top_level_field_is_named_without_an_item(tmp_path: Path) -> None:
    path = write(tmp_path, "title: [t]\n")
    assert refusal(path) == f"{path}:1: title: Input should be a valid string"


def test_a_checks_problem_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "items:\n  - name: a\n  - name: b\n  - name: a\n")
    assert (
        refusal(path, checks=[unique_names]) == f"{path}:4: items[2] (a): name: 'a' is used twice"
    )


def test_a_problem_about_the_whole_file_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "title: t\n")

    def needs_items(doc: Doc) -> Iterator[Problem]:
        if not doc.items:
            yield Problem((), "give at least one item")

    assert refusal(path, checks=[needs_items]) == f"{path}:1: (file): give at least one item"


def test_checks_run_only_on_a_valid_model(tmp_path: Path) -> None:
    path = write(tmp_path, "items:\n  - name: a\n  - name: a\n    count: x\n")
    assert "used twice" not in refusal(path, checks=[unique_names])


def test_many_problems_are_cut_short(tmp_path: Path) -> None:
    path = write(
        tmp_path, "items:\n" + "".join(f"  - {{name: i{n}, count: x}}\n" for n in range(7))
    )
    message = refusal(path)
    assert message.count(f"{path}:") == 5
    assert message.endswith(" (and 2 more)")


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n", "list"), ("just text\n", "str"), ("3\n", "int")]
)
def test_a_document_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    assert refusal(path, expected="a mapping with 'items'") == (
        f"{path}:1: expected a mapping with 'items', got {kind}"
    )


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=rf"^{missing}: cannot read the widget list: "):
        load_yaml(missing, Doc, what="widget list")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"title: \xff\xfe\n")
    with pytest.raises(ConfigError, match=rf"^{binary}: cannot read the file: "):
        read_yaml(binary)


def test_an_error_filter_rewrites_or_drops_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "title: [t]\nitems:\n  - {name: a, count: x}\n")

    def only_items(error: dict[str, Any]) -> dict[str, Any] | None:
        if error["loc"][0] != "items":
            return None
        return {**error, "msg": "a count is a whole number"}

    assert refusal(path, error_filter=only_items) == (
        f"{path}:3: items[0] (a): count: a count is a whole number"
    )
    # a filter that drops every error must not hide the problem
    assert refusal(path, error_filter=lambda error: None).startswith(f"{path}:1: title: ")


def test_parse_yaml_names_its_source_and_validates_like_a_file() -> None:
    with pytest.raises(ConfigError, match=r"^inline:2: items\[0\] \(a\): count: "):
        parse_yaml("items:\n  - {name: a, count: x}\n", "inline").validate(Doc)


def test_read_yaml_lets_a_caller_look_before_validating(tmp_path: Path) -> None:
    document = read_yaml(write(tmp_path, "items:\n  - name: a\n    count: 3\n"))
    assert document.data == {"items": [{"name": "a", "count": 3}]}
    assert document.line(("items", 0, "count")) == 3
    assert document.validate(Doc).items[0].count == 3


@given(
    names=st.lists(
        st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), min_size=1, max_size=8, unique=True
    ),
    data=st.data(),
)
def test_a_wrong_count_is_located_whatever_the_layout(
    names: list[str], data: st.DataObject
) -> None:
    """Items spread over one to three lines each: the error points at the bad count's line."""
    bad = data.draw(st.integers(0, len(names) - 1))
    lines = ["title: t", "items:"]
    bad_line = 0
    for index, name in enumerate(names):
        count = "oops" if index == bad else str(index)
        layout = data.draw(st.sampled_from(["flow", "block", "blank-line"]))
        if layout == "flow":
            lines.append(f"  - {{name: '{name}', count: {count}}}")
            line = len(lines)
        else:
            lines.append(f"  - name: '{name}'")
            if layout == "blank-line":
                lines.append("")
            lines.append(f"    count: {count}")
            line = len(lines)
        if index == bad:
            bad_line = line
    with pytest.raises(ConfigError) as caught:
        parse_yaml("\n".join(lines) + "\n", "g.yaml").validate(Doc)
    assert str(caught.value).startswith(f"g.yaml:{bad_line}: items[{bad}] ({names[bad]}): count: ")
