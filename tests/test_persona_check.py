"""`persona check`: every mistake an admin can make is pinned to the exact file and line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.config import REPO_ROOT
from bot.faq.analyzer import TextAnalyzer
from bot.persona import PersonaError, check_persona, load_persona

REPO = Path(__file__).resolve().parents[1]

# Line numbers below are counted in this text (line 1 = "name: 小棉").
PERSONA_YAML = """\
name: 小棉
greetings:
  default: 你好，我是{{ persona.name }}
lines:
  fallback: 这个我还不会，回复「转人工」找真人帮你
  handoff: 已经帮你转人工啦
  clarify: 你想问的是：{{ options | join("，还是") }}？
  group_invite: 长按二维码进群
  coupon: 新人券已发放
  survey_thanks: 记下啦：{{ tag }}
"""


@pytest.fixture(scope="module")
def analyzer() -> TextAnalyzer:
    return TextAnalyzer()


def write_persona(folder: Path, **files: str) -> Path:
    """persona.yaml defaults to a valid one; pass faq=..., tags=..., synonyms=... or persona=..."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "persona.yaml").write_text(files.pop("persona", PERSONA_YAML), encoding="utf-8")
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return folder


def issue_lines(issues: list) -> list[str]:
    return [str(issue) for issue in issues]


def test_unknown_key_names_the_line_and_suggests_the_closest_key(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    folder = write_persona(tmp_path / "p", persona=PERSONA_YAML + "signatrue: —— 小棉\n")
    [issue] = check_persona(folder, analyzer=analyzer)
    assert issue.file == folder / "persona.yaml"
    assert issue.line == 11
    assert "unknown key 'signatrue'" in issue.message
    assert "did you mean 'signature'?" in issue.message
    assert str(issue).startswith(f"{folder / 'persona.yaml'}:11: unknown key 'signatrue'; allowed keys: name, ")


def test_unknown_key_inside_a_faq_entry(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    faq = "- id: ship\n  question: 多久发货？\n  answer: 48小时内发货\n  exmaples: [几天发货]\n"
    folder = write_persona(tmp_path / "p", faq=faq)
    assert issue_lines(check_persona(folder, analyzer=analyzer)) == [
        f"{folder / 'faq.yaml'}:4: unknown key 'exmaples'; allowed keys: id, question, answer, examples, keywords, "
        "synonyms, tags, priority, channels, scope (did you mean 'examples'?)"
    ]


def test_duplicate_faq_id_points_at_the_second_and_names_the_first(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    faq = (
        "- id: ship\n  question: 多久发货？\n  answer: 48小时内发货\n"
        "- id: fee\n  question: 运费多少？\n  answer: 满69包邮\n"
        "- id: ship\n  question: 用什么快递？\n  answer: 韵达\n"
    )
    folder = write_persona(tmp_path / "p", faq=faq)
    assert issue_lines(check_persona(folder, analyzer=analyzer)) == [
        f"{folder / 'faq.yaml'}:7: duplicate FAQ id 'ship' (first on line 1): ids must be unique"
    ]


@pytest.mark.parametrize("answer", ['""', "", "'   '"])
def test_empty_answer(tmp_path: Path, analyzer: TextAnalyzer, answer: str) -> None:
    faq = f"- id: ship\n  question: 多久发货？\n  answer: {answer}\n"
    folder = write_persona(tmp_path / "p", faq=faq)
    assert issue_lines(check_persona(folder, analyzer=analyzer)) == [
        f"{folder / 'faq.yaml'}:3: 'answer' is empty: fill it in"
    ]


def test_missing_required_line(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    folder = write_persona(tmp_path / "p", persona=PERSONA_YAML.replace("  handoff: 已经帮你转人工啦\n", ""))
    assert issue_lines(check_persona(folder, analyzer=analyzer)) == [
        f"{folder / 'persona.yaml'}:4: missing required key 'handoff'"
    ]


def test_template_syntax_error(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    broken = PERSONA_YAML.replace("已经帮你转人工啦", "'{% if contact %}已经帮你转人工啦'")
    folder = write_persona(tmp_path / "p", persona=broken)
    [issue] = check_persona(folder, analyzer=analyzer)
    assert (issue.file.name, issue.line) == ("persona.yaml", 6)
    assert issue.message.startswith("template syntax error: ")


def test_template_reaching_python_internals_is_refused(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    hostile = PERSONA_YAML.replace("长按二维码进群", "\"{{ ''.__class__.__mro__ }}\"")
    folder = write_persona(tmp_path / "p", persona=hostile)
    [issue] = check_persona(folder, analyzer=analyzer)
    assert (issue.file.name, issue.line) == ("persona.yaml", 8)
    assert "reaches Python internals ('__class__', '__mro__')" in issue.message


def test_sandbox_blocks_internals_reached_through_a_filter_at_trial_render(
    tmp_path: Path, analyzer: TextAnalyzer
) -> None:
    # No "_" attribute in the syntax: only rendering in the sandbox can catch this one.
    hostile = PERSONA_YAML.replace("新人券已发放", "\"{{ persona | attr('__class__') }}\"")
    folder = write_persona(tmp_path / "p", persona=hostile)
    [issue] = check_persona(folder, analyzer=analyzer)
    assert (issue.file.name, issue.line) == ("persona.yaml", 9)
    assert issue.message.startswith("template was blocked by the sandbox: access to attribute '__class__'")


def test_template_using_a_variable_the_line_does_not_get(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    # `tag` exists only for survey_thanks; `options` only for clarify.
    wrong = PERSONA_YAML.replace("这个我还不会，回复「转人工」找真人帮你", "'{{ tag }}这个我还不会'")
    folder = write_persona(tmp_path / "p", persona=wrong)
    assert issue_lines(check_persona(folder, analyzer=analyzer)) == [
        f"{folder / 'persona.yaml'}:5: unknown template variable 'tag'; available here: contact, persona, source"
    ]


def test_unguarded_contact_field_is_reported(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    wrong = PERSONA_YAML.replace("你好，我是{{ persona.name }}", "'{{ contact.name }}你好'")
    folder = write_persona(tmp_path / "p", persona=wrong)
    [issue] = check_persona(folder, analyzer=analyzer)
    assert issue.line == 3
    assert "guard contact fields with {% if contact %}" in issue.message


def test_yaml_bomb_is_refused_quickly(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    bomb = "a: &a [哈, 哈, 哈, 哈, 哈, 哈, 哈, 哈, 哈]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    folder = write_persona(tmp_path / "p", synonyms=bomb)
    started = time.monotonic()
    issues = check_persona(folder, analyzer=analyzer)
    assert time.monotonic() - started < 5
    assert issue_lines(issues) == [
        f"{folder / 'synonyms.yaml'}:2: YAML error: YAML aliases (*a) are not allowed in persona files: "
        "write the value out in full"
    ]


def test_hostile_structure_and_runaway_templates_are_reported_not_crashed_on(
    tmp_path: Path, analyzer: TextAnalyzer
) -> None:
    runaway = '"{% for i in range(900) %}{% for j in range(900) %}好{% endfor %}{% endfor %}"'
    folder = write_persona(
        tmp_path / "p",
        persona=PERSONA_YAML.replace("长按二维码进群", runaway),
        faq="[" * 100_000,
        synonyms="纸尿裤: [尿不湿]\n---\n奶粉: [配方奶]\n",
        tags="kind: keywords\n",
    )
    assert [(issue.file.name, issue.line, issue.message) for issue in check_persona(folder, analyzer=analyzer)] == [
        ("persona.yaml", 8, "template was blocked by the sandbox: template does too much work (over 20000 loop steps, calls and operations)"),
        ("faq.yaml", 1, "YAML is nested too deeply: flatten the structure"),
        ("synonyms.yaml", 2, "YAML error: expected a single document in the stream, but found another document"),
        ("tags.yaml", 1, "tags.yaml must be a list of tag rules ('- id: ...')"),
    ]


def test_oversized_file_is_refused(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    folder = write_persona(tmp_path / "p", faq="# " + "很长" * 1_200_000 + "\n")
    assert issue_lines(check_persona(folder, analyzer=analyzer)) == [
        f"{folder / 'faq.yaml'}:0: file is 6.9 MB, over the 2 MB limit: trim it or split the content"
    ]


def test_unquoted_template_gets_a_quoting_hint(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    # YAML reads a value starting with "{" as a mapping: the most common template mistake.
    folder = write_persona(tmp_path / "p", persona=PERSONA_YAML.replace("已经帮你转人工啦", "{{ persona.name }}帮你转人工"))
    [issue] = check_persona(folder, analyzer=analyzer)
    assert (issue.file.name, issue.line) == ("persona.yaml", 6)
    assert issue.message.endswith("a value starting with '{' must be quoted: '{{ ... }}'")


def test_yaml_syntax_error_and_bad_encoding(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    folder = write_persona(tmp_path / "p", faq="- id: ship\n  question: [多久发货？\n  answer: 48小时\n")
    (folder / "synonyms.yaml").write_bytes("纸尿裤: [尿不湿]\n".encode("gbk"))
    issues = check_persona(folder, analyzer=analyzer)
    assert [(issue.file.name, issue.line) for issue in issues] == [("faq.yaml", 3), ("synonyms.yaml", 1)]
    assert issues[0].message.startswith("YAML error: ")
    assert issues[1].message == "file is not valid UTF-8: save it as UTF-8 text"


def test_missing_persona_yaml_is_an_error_but_optional_files_may_be_absent(
    tmp_path: Path, analyzer: TextAnalyzer
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    [issue] = check_persona(empty, analyzer=analyzer)
    assert (issue.file, issue.line) == (empty / "persona.yaml", 0)
    assert "missing persona.yaml" in issue.message

    (empty / "persona.yaml").write_text("# 还没写\n", encoding="utf-8")
    assert issue_lines(check_persona(empty, analyzer=analyzer)) == [
        f"{empty / 'persona.yaml'}:1: persona.yaml is empty: it needs name, greetings and lines"
    ]

    only_persona = write_persona(tmp_path / "minimal")
    persona = load_persona(only_persona, analyzer=analyzer)
    assert persona.faq_entries == () and persona.tag_rules == ()


TAGS_YAML = """\
- id: emoji_only
  kind: keywords
  tag: 关注纸尿裤
  any: [纸尿裤, "！！🍼"]
- id: empty_regex
  kind: regex
  tag: 孕期
  pattern: ^$
- id: everything
  kind: regex
  tag: 孕期
  pattern: (怀孕)?
- id: age
  kind: survey
  ask: 宝宝多大了？1) 0-6个月 2) 6-12个月
  options:
    - tag: 宝宝0-6月
      answers: [半岁以内]
    - tag: 宝宝0-6月
      answers: [半岁以内]
- id: flash
  kind: faq_topic
  tag: 价格敏感
  faq: [flash_sal]
- id: emoji_only
  kind: keywords
  tag: 关注奶粉
  any: [奶粉]
"""


def test_tag_rules_that_can_never_match(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    faq = "- id: flash_sale\n  question: 每周秒杀是什么时候？\n  answer: 每周三晚8点\n"
    folder = write_persona(tmp_path / "p", faq=faq, tags=TAGS_YAML)
    tags = folder / "tags.yaml"
    assert issue_lines(check_persona(folder, analyzer=analyzer)) == [
        f"{tags}:4: keyword '！！🍼' has no letters or digits once normalized, so it can never match: use real words",
        f"{tags}:8: pattern '^$' can only match empty text, so it never matches a message: "
        "describe the words to look for",
        f"{tags}:12: pattern '(怀孕)?' matches every message (it also matches empty text), "
        "so it would tag everyone with '孕期': make it require at least one character",
        f"{tags}:19: survey option 2 repeats tag '宝宝0-6月' (first on line 17): each option needs its own tag",
        f"{tags}:20: survey answer '半岁以内' is already listed on line 18, so it can never pick this option: "
        "remove one",
        f"{tags}:24: FAQ id 'flash_sal' is not in faq.yaml, so this rule can never count it "
        "(did you mean 'flash_sale'?)",
        f"{tags}:25: duplicate rule id 'emoji_only' (first on line 1): give each rule its own id",
    ]


def test_unknown_rule_kind_points_at_kind(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    folder = write_persona(tmp_path / "p", tags="- id: a\n  kind: keyword\n  tag: 关注奶粉\n  any: [奶粉]\n")
    [issue] = check_persona(folder, analyzer=analyzer)
    assert (issue.file.name, issue.line) == ("tags.yaml", 2)
    assert issue.message.startswith("'kind' must be one of 'keywords', 'regex', 'survey', 'faq_topic'")


def test_unknown_key_in_a_survey_option_suggests_the_key(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    tags = "- id: age\n  kind: survey\n  ask: 宝宝多大？\n  options:\n    - tag: 小\n    - tag: 大\n      anwsers: [两岁]\n"
    folder = write_persona(tmp_path / "p", tags=tags)
    [issue] = check_persona(folder, analyzer=analyzer)
    assert str(issue).startswith(f"{folder / 'tags.yaml'}:7: unknown key 'anwsers'; allowed keys: tag, ")
    assert issue.message.endswith("(did you mean 'answers'?)")


def test_load_raises_with_every_issue(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    folder = write_persona(tmp_path / "p", persona=PERSONA_YAML + "tone: 亲\nfoo: 1\n")
    with pytest.raises(PersonaError) as caught:
        load_persona(folder, analyzer=analyzer)
    assert [issue.line for issue in caught.value.issues] == [11, 12]
    assert f"{folder / 'persona.yaml'}:12: unknown key 'foo'" in str(caught.value)


@pytest.mark.parametrize("name", ["demo", "demo_wecom"])
def test_shipped_personas_check_clean(name: str, analyzer: TextAnalyzer) -> None:
    assert check_persona(REPO / "persona" / name, analyzer=analyzer) == []


def test_libyaml_fast_path_reads_files_exactly_as_the_python_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Persona files are read with libyaml when they can be; the nodes, marks and issues must not change."""
    import yaml

    from bot.persona import yaml_source

    def shape(node: yaml.Node | None) -> object:
        if node is None:
            return None
        marks = (node.start_mark.line, node.start_mark.column, node.end_mark.line, node.end_mark.column)
        if isinstance(node, yaml.ScalarNode):
            return (node.tag, node.value, marks)
        if isinstance(node, yaml.MappingNode):
            return (node.tag, marks, [(shape(k), shape(v)) for k, v in node.value])
        return (node.tag, marks, [shape(v) for v in node.value])

    for file in [*REPO_ROOT.glob("persona/*/*.yaml"), *(REPO_ROOT / "bot" / "faq" / "data" / "lexicon").glob("*.yaml")]:
        raw = file.read_bytes()
        assert yaml_source._parse_with_libyaml(raw.decode("utf-8-sig")) is not None, file
        fast, fast_issues = yaml_source.parse_yaml(file, raw)
        with monkeypatch.context() as patch:
            patch.setattr(yaml_source, "_parse_with_libyaml", lambda text: None)
            slow, slow_issues = yaml_source.parse_yaml(file, raw)
        assert fast.data == slow.data and fast_issues == slow_issues and shape(fast.root) == shape(slow.root), file
