"""Pure parsers: settings (§6.3), plugin versions (App. C), steps import (§6.7, App. C),
the plain JSON framing (§3.1, App. D)."""

from __future__ import annotations

from typing import Any

import pytest

from relay.codecs.base import BadFrame, Incoming
from relay.codecs.plain import PlainCodec
from relay.core.settings_parser import parse_files_to_ignore
from relay.core.steps_import import (
    MAX_TASK_BYTES,
    AllowedBase,
    ImportFailure,
    markdown_to_tasks,
    notion_blocks_to_tasks,
    notion_page_id,
    parse_allowed_bases,
    validate_tasks,
)
from relay.core.versions import is_outdated, parse_plugin_version

PRE = '<pre class="ql-syntax">'

# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def test_settings_protocol_example() -> None:
    text = "# output\nbuild/\n/dist\n/a/b/\n*.pyc\n.env\n*.pyc\nfoo bar\n~tmp"
    assert parse_files_to_ignore(text) == {
        "names": [".env", "foo bar"],
        "dirs": ["build", "dist"],
        "extensions": ["pyc"],
    }


def test_settings_empty() -> None:
    assert parse_files_to_ignore("") == {"names": [], "dirs": [], "extensions": []}


def test_settings_hash_anywhere_drops_line_and_lines_are_trimmed() -> None:
    text = "  keep.txt  \nfoo # comment\n\t*.log\r\n"
    assert parse_files_to_ignore(text) == {
        "names": ["keep.txt"],
        "dirs": [],
        "extensions": ["log"],
    }


def test_settings_first_character_rules() -> None:
    allowed = ["Abc", "zed", "9lives", "*x", ".hidden", "_u", "[ab]", "-dash", "$var"]
    rejected = ["~tmp", "!neg", "@at", "é-accent", "٣digit", "%p"]
    result = parse_files_to_ignore("\n".join(allowed + rejected))
    assert result["names"] == allowed
    assert result["dirs"] == [] and result["extensions"] == []


def test_settings_slash_and_star_dollar_rules() -> None:
    text = "a/b\n/a/b\nx/y/\nfoo*$\nfoo$\nbuild*/\n*/out/\n"
    # "a/b" has one slash and neither starts nor ends with it: a name.
    assert parse_files_to_ignore(text) == {
        "names": ["a/b", "foo$"],
        "dirs": ["build"],
        "extensions": [],
    }


def test_settings_classification_and_dedupe() -> None:
    text = "/\n*.\nnode_modules/\n/node_modules\n*.tar.gz\nsrc*.bak\n*.PY\n*.py\n.env\n.env"
    assert parse_files_to_ignore(text) == {
        "names": [".env"],
        # "/" and "*." become empty after removal and are dropped.
        "dirs": ["node_modules"],
        "extensions": ["tar.gz", "srcbak", "PY", "py"],
    }


def test_settings_order_is_first_appearance() -> None:
    assert parse_files_to_ignore("b\na\nc\na\nb")["names"] == ["b", "a", "c"]


# --------------------------------------------------------------------------------------------
# Plugin versions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.15", (1, 2, 15)),
        ("1.2.15-beta", (1, 2, 15)),
        ("v1.2.9", (1, 2, 9)),
        ("V2", (2,)),
        ("1.2.", (1, 2)),
        ("1..2", (1,)),
        ("10.0.1rc1", (10, 0, 1)),
        ("007.1", (7, 1)),
        ("abc", None),
        ("", None),
        ("v", None),
        ("vv1.2", None),
        (" 1.2", None),
        ("-1.2", None),
        ("٣.1", None),
    ],
)
def test_parse_plugin_version(text: str, expected: tuple[int, ...] | None) -> None:
    assert parse_plugin_version(text) == expected


@pytest.mark.parametrize(
    ("client", "newest", "outdated"),
    [
        ("1.2.9", "1.2.15", True),
        ("v1.2.9", "1.2.15", True),
        ("1.2.15", "1.2.15", False),
        ("1.2.15-beta", "1.2.15", False),
        ("1.2.16", "1.2.15", False),
        ("1.10", "1.9", False),
        ("1.2", "1.2.0", True),  # lists compare lexicographically: a prefix is smaller
        ("2", "1.99.99", False),
        ("abc", "1.2.15", False),
        ("", "1.2.15", False),
        ("0.0.1", "", False),
        ("0.0.1", "garbage", False),
    ],
)
def test_is_outdated(client: str, newest: str, outdated: bool) -> None:
    assert is_outdated(client, newest) is outdated


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def test_markdown_protocol_example() -> None:
    assert markdown_to_tasks("# Task A\nDo X\n---\nB & C") == [
        "<h3>Task A</h3>Do X<br>",
        "B &amp; C<br>",
    ]


def test_markdown_empty_inputs() -> None:
    assert markdown_to_tasks("") == []
    assert markdown_to_tasks("\n  \n---\n\t\n-----\n") == []


def test_markdown_fenced_code() -> None:
    md = "Intro\n```python\ndef f(x):  \n    return x < 1 and 'a' & \"b\"\n\n---\n```\nAfter"
    assert markdown_to_tasks(md) == [
        "Intro<br>"
        + PRE
        + "def f(x):  \n    return x &lt; 1 and &#x27;a&#x27; &amp; &quot;b&quot;\n\n---"
        + "</pre>After<br>"
    ]


def test_markdown_open_fence_runs_to_end() -> None:
    assert markdown_to_tasks("A\n  ```\ncode\n---\n# not heading") == [
        "A<br>" + PRE + "code\n---\n# not heading</pre>"
    ]


def test_markdown_fence_line_with_trailing_text_closes() -> None:
    assert markdown_to_tasks("```js\nx\n```ignored\ny") == [PRE + "x</pre>y<br>"]


def test_markdown_empty_code_block_task_is_kept() -> None:
    assert markdown_to_tasks("```\n```\n---\n\n```\n```\n\n") == [
        PRE + "</pre>",
        PRE + "</pre>",
    ]


def test_markdown_headings() -> None:
    md = "\n".join(
        [
            "# One #",
            "  ## Two ##   ",
            "###### Six",
            "####### Seven",
            "#NoSpace",
            "#\tTab",
            "### Spaced   text  # # ",
            "# <b>",
            "## #",
        ]
    )
    assert markdown_to_tasks(md) == [
        "<h3>One</h3>"
        "<h3>Two</h3>"
        "<h3>Six</h3>"
        "####### Seven<br>"
        "#NoSpace<br>"
        "#\tTab<br>"
        "<h3>Spaced   text</h3>"
        "<h3>&lt;b&gt;</h3>"
        "<h3></h3>"
    ]


def test_markdown_crlf_and_cr_line_endings() -> None:
    assert markdown_to_tasks("# A\r\nline  \r\n---\r\nB\rC\r\n") == [
        "<h3>A</h3>line<br>",
        "B<br>C<br>",
    ]


def test_markdown_separators() -> None:
    md = "a\n---\nb\n  ------  \nc\n--\nd\n- - -\n--- x"
    assert markdown_to_tasks(md) == [
        "a<br>",
        "b<br>",
        "c<br>--<br>d<br>- - -<br>--- x<br>",
    ]


def test_markdown_blank_lines() -> None:
    md = "\n \n a  \n\n\t\nb\n\n\n---\n\n"
    # Leading/trailing blank lines are dropped; inner ones become <br>; leading spaces stay.
    assert markdown_to_tasks(md) == [" a<br><br><br>b<br>"]


def test_markdown_escaping_and_no_inline_markup() -> None:
    assert markdown_to_tasks("**bold** <i>x</i> & 'q' \"d\" `c`") == [
        "**bold** &lt;i&gt;x&lt;/i&gt; &amp; &#x27;q&#x27; &quot;d&quot; `c`<br>"
    ]


def test_markdown_code_block_between_blank_lines() -> None:
    assert markdown_to_tasks("\n```\n\n```\n\n") == [PRE + "</pre>"]


# --------------------------------------------------------------------------------------------
# Notion URL and allowlist
# --------------------------------------------------------------------------------------------

DEFAULT_BASES = ["https://notion.so", "https://www.notion.so", "https://*.notion.site"]
HEX = "0123456789abcdef0123456789ABCDEF"
UUID = "01234567-89ab-cdef-0123-456789abcdef"


def test_parse_allowed_bases() -> None:
    assert parse_allowed_bases(
        ["https://Notion.SO", "http://127.0.0.1:8080", "https://*.notion.site:443/", "http://[::1]"]
    ) == [
        AllowedBase("https", "notion.so", 443),
        AllowedBase("http", "127.0.0.1", 8080),
        AllowedBase("https", "notion.site", 443, wildcard=True),
        AllowedBase("http", "::1", 80),
    ]


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "notion.so",
        "ftp://notion.so",
        "https://",
        "https://user@notion.so",
        "https://notion.so/path",
        "https://notion.so?x=1",
        "https://notion.so#f",
        "https://notion.so:0",
        "https://notion.so:99999",
        "https://notion.so:abc",
        "https://*.*.notion.so",
        "https://a*.notion.so",
        "https://*",
        "https://exa mple.com",
        "https://bad_host.com",
    ],
)
def test_parse_allowed_bases_rejects(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_allowed_bases([entry])


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        (f"https://www.notion.so/My-Page-{HEX}", "https://www.notion.so"),
        (f"https://notion.so/{HEX}", "https://notion.so"),
        (f"HTTPS://WWW.Notion.SO/workspace/Title-{HEX}/", "https://www.notion.so"),
        (f"https://www.notion.so:443/{HEX}?v=1&p={'f' * 32}#x", "https://www.notion.so"),
        (f"https://team.notion.site/{HEX}", "https://team.notion.site"),
        (f"https://a.b.notion.site/x/{HEX}", "https://a.b.notion.site"),
        (f"https://www.notion.so//{HEX}//", "https://www.notion.so"),
    ],
)
def test_notion_page_id_ok(url: str, origin: str) -> None:
    assert notion_page_id(url, DEFAULT_BASES) == (origin, UUID)


def test_notion_page_id_non_default_port_and_http() -> None:
    bases = ["http://127.0.0.1:8123"]
    assert notion_page_id(f"http://127.0.0.1:8123/p/{HEX}", bases) == (
        "http://127.0.0.1:8123",
        UUID,
    )
    assert notion_page_id(f"http://localhost/{HEX}", ["http://LOCALHOST:80"]) == (
        "http://localhost",
        UUID,
    )


def test_wildcard_never_matches_an_ip_literal() -> None:
    with pytest.raises(ImportFailure):
        notion_page_id(f"http://127.0.0.1/{HEX}", ["http://*.0.0.1"])
    assert notion_page_id(f"http://x.0.0.1/{HEX}", ["http://*.0.0.1"])[0] == "http://x.0.0.1"


def test_notion_page_id_accepts_parsed_bases() -> None:
    bases = parse_allowed_bases(DEFAULT_BASES)
    assert notion_page_id(f"https://notion.so/{HEX}", bases)[1] == UUID


@pytest.mark.parametrize(
    "url",
    [
        f"https://notion.site/{HEX}",  # wildcard does not match the bare domain
        f"https://evilnotion.site/{HEX}",
        f"https://notion.site.evil.com/{HEX}",
        f"http://www.notion.so/{HEX}",  # scheme must match
        f"https://www.notion.so:8443/{HEX}",  # port must match
        f"https://notion.so.evil.com/{HEX}",
        f"https://sub.notion.so/{HEX}",  # no wildcard for notion.so
        f"ftp://www.notion.so/{HEX}",
        f"file://www.notion.so/{HEX}",
    ],
)
def test_notion_page_id_not_allowed(url: str) -> None:
    with pytest.raises(ImportFailure) as info:
        notion_page_id(url, DEFAULT_BASES)
    assert info.value.message == "The URL is not an allowed Notion address"


@pytest.mark.parametrize(
    "url",
    [
        f"https://user@www.notion.so/{HEX}",
        f"https://user:pw@www.notion.so/{HEX}",
        f"https://evil.com@www.notion.so/{HEX}",
        f"https://www.notion.so@evil.com/{HEX}",
        f"https://:@www.notion.so/{HEX}",
    ],
)
def test_notion_page_id_rejects_userinfo(url: str) -> None:
    with pytest.raises(ImportFailure) as info:
        notion_page_id(url, DEFAULT_BASES)
    assert "user name or password" in info.value.message


@pytest.mark.parametrize(
    "url",
    [
        "",
        HEX,
        f"/{HEX}",
        f"//www.notion.so/{HEX}",
        f"www.notion.so/{HEX}",
        f"https:/www.notion.so/{HEX}",
        f"https://www.notion.so:abc/{HEX}",
        f"https://www.notion.so:99999/{HEX}",
        f"https://www.notion.so /{HEX}",
        f"https://www.notion.so/\t{HEX}",
        f"https://www.notion.so\\evil.com/{HEX}",
        f"https://[::1/{HEX}",
        f"https://www.notion.so./{HEX}",
    ],
)
def test_notion_page_id_malformed(url: str) -> None:
    with pytest.raises(ImportFailure) as info:
        notion_page_id(url, DEFAULT_BASES)
    assert info.value.message in (
        "The URL is malformed",
        "The URL is not an allowed Notion address",
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://www.notion.so",
        "https://www.notion.so/",
        "https://www.notion.so/short",
        f"https://www.notion.so/{HEX[:-1]}",
        f"https://www.notion.so/{HEX[:-1]}g",
        f"https://www.notion.so/{UUID}",  # hyphenated ids are not 32 hex characters
        f"https://www.notion.so/{HEX}/child",  # the *last* segment counts
        f"https://www.notion.so/page?id={HEX}",  # the query is excluded
        f"https://www.notion.so/page#{HEX}",  # the fragment is excluded
    ],
)
def test_notion_page_id_without_page_id(url: str) -> None:
    with pytest.raises(ImportFailure) as info:
        notion_page_id(url, DEFAULT_BASES)
    assert info.value.message == "The URL does not contain a Notion page id"


def test_import_failure_has_message() -> None:
    failure = ImportFailure("boom")
    assert failure.message == "boom" and str(failure) == "boom"


# --------------------------------------------------------------------------------------------
# Notion blocks
# --------------------------------------------------------------------------------------------

PAGE = "page-0"


def rec(
    block_type: str | None,
    title: Any = None,
    content: list[Any] | None = None,
    wrap: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    value: dict[str, Any] = dict(extra)
    if block_type is not None:
        value["type"] = block_type
    if title is not None:
        value["properties"] = {"title": title}
    if content is not None:
        value["content"] = content
    return {"role": "reader", "value": {"value": value, "role": "reader"} if wrap else value}


def page(*children: str) -> dict[str, Any]:
    return {PAGE: rec("page", [["Page title"]], list(children))}


def test_blocks_basic_mapping_and_dividers() -> None:
    blocks = page("h", "t", "c", "d1", "t2", "d2", "d3", "sub")
    blocks |= {
        "h": rec("header", [["Task <1>"]]),
        "t": rec("text", [["Say "], ['"hi"', [["b"]]], " & 'bye'"]),
        "c": rec("code", [["print(1 < 2)"]]),
        "d1": rec("divider"),
        "t2": rec("bulleted_list", [["Second"]]),
        "d2": rec("divider"),
        "d3": rec("divider"),  # empty task between two dividers is dropped
        "sub": rec("sub_sub_header", [["Third"]]),
    }
    assert notion_blocks_to_tasks(PAGE, blocks) == [
        "<h3>Task &lt;1&gt;</h3>"
        "Say &quot;hi&quot; &amp; &#x27;bye&#x27;<br>" + PRE + "print(1 &lt; 2)</pre>",
        "Second<br>",
        "<h3>Third</h3>",
    ]


def test_blocks_nested_content_preorder() -> None:
    blocks = page("a", "b")
    blocks |= {
        "a": rec("toggle", [["A"]], ["a1", "a2"]),
        "a1": rec("text", [["A1"]], ["a1x"]),
        "a1x": rec("text", [["A1x"]]),
        "a2": rec("column_list", None, ["a2x"]),  # no title: ignored, but still entered
        "a2x": rec("text", [["A2x"]]),
        "b": rec("text", [["B"]]),
    }
    assert notion_blocks_to_tasks(PAGE, blocks) == ["A<br>A1<br>A1x<br>A2x<br>B<br>"]


def test_blocks_page_blocks_skipped_and_not_entered() -> None:
    blocks = page("sub", "x")
    blocks |= {
        "sub": rec("page", [["Sub page"]], ["inside"]),
        "inside": rec("text", [["hidden"]]),
        "x": rec("text", [["shown"]]),
    }
    assert notion_blocks_to_tasks(PAGE, blocks) == ["shown<br>"]


def test_blocks_value_value_wrapping() -> None:
    blocks = {PAGE: rec("page", None, ["a", "b"], wrap=True)}
    blocks |= {
        "a": rec("header", [["Wrapped"]], wrap=True),
        "b": rec("text", [["plain"]]),
    }
    assert notion_blocks_to_tasks(PAGE, blocks) == ["<h3>Wrapped</h3>plain<br>"]


def test_blocks_unknown_and_malformed_records_skipped() -> None:
    blocks = page("missing", "bad1", "bad2", "bad3", "ok")
    blocks["p2"] = {"value": "nope"}
    blocks["bad1"] = "not a record"
    blocks["bad2"] = {"value": None}
    blocks["bad3"] = {"value": {"value": 3}}
    blocks["ok"] = rec("text", [["ok"]])
    blocks[PAGE]["value"]["content"].extend([None, 7, ["ok"]])
    assert notion_blocks_to_tasks(PAGE, blocks) == ["ok<br>"]


def test_blocks_title_runs() -> None:
    blocks = page("a", "b", "c", "d", "e", "f", "g")
    blocks |= {
        "a": rec("text", [["x"], [], [5, "y"], None, 3, {"t": 1}, "z", [["nested"]]]),
        "b": rec("text", []),  # empty array: no text, but the block has a title
        "c": rec("header", []),
        "d": rec("code", [["line1\nline2"], ["\n&"]]),
        "e": rec("text", None),  # no properties at all: ignored
        "f": rec("image", None, source="x.png"),
        "g": {"value": {"type": "text", "properties": {"title": "not a list"}}},
    }
    assert notion_blocks_to_tasks(PAGE, blocks) == [
        "xz<br><br><h3></h3>" + PRE + "line1\nline2\n&amp;</pre>"
    ]


def test_blocks_header_and_code_without_title() -> None:
    blocks = page("h", "c")
    blocks |= {"h": rec("sub_header"), "c": rec("code")}
    assert notion_blocks_to_tasks(PAGE, blocks) == ["<h3></h3>" + PRE + "</pre>"]


def test_blocks_non_string_type_is_an_ordinary_block() -> None:
    blocks = page("a")
    blocks["a"] = {"value": {"type": ["header"], "properties": {"title": [["odd"]]}}}
    assert notion_blocks_to_tasks(PAGE, blocks) == ["odd<br>"]


def test_blocks_cycles_and_shared_children_visited_once() -> None:
    blocks = page("a", "b")
    blocks |= {
        "a": rec("text", [["A"]], ["b", PAGE, "a"]),
        "b": rec("text", [["B"]], ["a"]),
    }
    assert notion_blocks_to_tasks(PAGE, blocks) == ["A<br>B<br>"]


def test_blocks_deep_nesting_does_not_recurse() -> None:
    depth = 5000
    blocks = page("n0")
    for i in range(depth):
        blocks[f"n{i}"] = rec("text", [[str(i)]], [f"n{i + 1}"])
    tasks = notion_blocks_to_tasks(PAGE, blocks)
    assert tasks == ["".join(f"{i}<br>" for i in range(depth))]


def test_blocks_missing_page_or_empty() -> None:
    assert notion_blocks_to_tasks(PAGE, {}) == []
    assert notion_blocks_to_tasks(PAGE, page()) == []
    only_dividers = page("d1", "d2")
    only_dividers |= {"d1": rec("divider"), "d2": rec("divider")}
    assert notion_blocks_to_tasks(PAGE, only_dividers) == []


# --------------------------------------------------------------------------------------------
# Task validation
# --------------------------------------------------------------------------------------------


def test_validate_tasks_numbering() -> None:
    assert validate_tasks(["a<br>", "<h3>b</h3>"]) == [
        {"name": "1", "content": "a<br>", "language": "html", "type": "exercise"},
        {"name": "2", "content": "<h3>b</h3>", "language": "html", "type": "exercise"},
    ]


def test_validate_tasks_limits() -> None:
    with pytest.raises(ImportFailure) as info:
        validate_tasks([])
    assert info.value.message == "No tasks were found"

    assert len(validate_tasks(["x"] * 100)) == 100
    with pytest.raises(ImportFailure) as info:
        validate_tasks(["x"] * 101)
    assert "more than 100" in info.value.message

    assert validate_tasks(["a" * MAX_TASK_BYTES])[0]["content"] == "a" * MAX_TASK_BYTES
    with pytest.raises(ImportFailure) as info:
        validate_tasks(["ok", "a" * (MAX_TASK_BYTES + 1)])
    assert info.value.message == "Task 2 is larger than 256 KiB"
    # The limit counts UTF-8 bytes, not characters.
    with pytest.raises(ImportFailure):
        validate_tasks(["é" * (MAX_TASK_BYTES // 2 + 1)])


def test_markdown_task_limit_end_to_end() -> None:
    md = "\n---\n".join(f"task {i}" for i in range(101))
    tasks = markdown_to_tasks(md)
    assert len(tasks) == 101
    with pytest.raises(ImportFailure):
        validate_tasks(tasks)


# --------------------------------------------------------------------------------------------
# Plain JSON framing (§3.1): totality and the decisions of Appendix D

DEEP = "[" * 1000 + "]" * 1000
TOO_DEEP = BadFrame("bad_json", "JSON nested too deeply")


@pytest.mark.parametrize("frame", [
    DEEP, '{"event":"x","data":' + DEEP + "}", '{"event":"x","ref":' + DEEP + "}",
    '{"a":' * 1000 + "1" + "}" * 1000, "[" * 100_000, '{"event":"x","data":' + "[" * 5000,
])
def test_plain_deep_nesting_is_bad_json(frame: str) -> None:
    """msgspec raises RecursionError (not a DecodeError) here; it once ended the process."""
    assert PlainCodec().decode(frame) == [TOO_DEEP]
    assert PlainCodec().peek(frame) == (None, None)  # the rate-limited path


@pytest.mark.parametrize(("ref", "ok"), [
    (2**53 - 1, True), (-(2**53 - 1), True), (0, True), (2**53, False), (-(2**53), False),
    (10**400, False), (-(10**400), False),
])
def test_plain_integer_ref_range(ref: int, ok: bool) -> None:
    [item] = PlainCodec().decode(f'{{"event":"x","ref":{ref}}}')
    if ok:
        assert item == Incoming("x", {}, ref)
        assert PlainCodec().peek(f'{{"event":"x","ref":{ref}}}') == ("x", ref)
    else:
        assert isinstance(item, BadFrame)
        assert (item.code, item.event, item.ref) == ("bad_frame", "x", None)
        assert PlainCodec().peek(f'{{"event":"x","ref":{ref}}}') == ("x", None)


@pytest.mark.parametrize("ref", ["1.0", "1e3", "true", "false", "[]", '""', '"' + "r" * 65 + '"'])
def test_plain_refs_that_are_not_refs(ref: str) -> None:
    [item] = PlainCodec().decode('{"event":"x","ref":' + ref + "}")
    assert isinstance(item, BadFrame)
    assert (item.code, item.event, item.ref) == ("bad_frame", "x", None)


@pytest.mark.parametrize("frame", [
    '{"event":"x","data":NaN}', '{"event":"x","data":-Infinity}', '{"event":"x","data":1e400}',
    '{"event":"x","data":' + "9" * 5000 + "}", '{"event":"\\ud800"}', '{"event":"x"}\ud800',
])
def test_plain_not_json(frame: str) -> None:
    [item] = PlainCodec().decode(frame)
    assert isinstance(item, BadFrame) and item.code == "bad_json"
    assert item.message == "the frame is not valid JSON"


def test_plain_duplicate_keys_last_one_wins_and_big_numbers_are_kept() -> None:
    big = -(10**300)
    frame = f'{{"event":"a","ref":1,"data":1,"event":"b","data":[{big},1e-400],"ref":"r"}}'
    assert PlainCodec().decode(frame) == [Incoming("b", [big, 0.0], "r")]
