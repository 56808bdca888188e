import io
import json
from pathlib import Path

import pytest

from bot.faq.analyzer import TextAnalyzer
from bot.faq.evaluate import run_eval


TINY_KB = """\
- id: shipping
  question: 下单后多久发货？
  answer: 付款后48小时内发货。
  examples: [什么时候能发出来？]
- id: coupon
  question: 优惠券怎么领？
  answer: 在「我的-优惠券」领取。
  examples: [券在哪里领？]
- id: invoice
  question: 可以开发票吗？
  answer: 确认收货后在订单详情申请开票。
"""

# 3 in-scope rows (2 answerable, 1 deliberately unanswerable: 保价 is in no entry)
# and 2 out-of-scope rows (both should be rejected).
TINY_QUESTIONS = """\
question\tfaq_id
啥时候发货呀\tshipping
yhq在哪领\tcoupon
买完降价了能保价吗\tinvoice
世界上最高的山是哪座\tnone
帮我写篇作文\tnone
"""


@pytest.fixture(scope="module")
def analyzer() -> TextAnalyzer:
    return TextAnalyzer()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(kb: Path, questions: Path, analyzer: TextAnalyzer) -> tuple[int, str]:
    out = io.StringIO()
    code = run_eval(kb, questions, out, analyzer=analyzer)
    return code, out.getvalue()


def test_tiny_labelled_set_figures(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    kb = _write(tmp_path, "kb.yaml", TINY_KB)
    questions = _write(tmp_path, "q.tsv", TINY_QUESTIONS)
    code, output = _run(kb, questions, analyzer)
    assert code == 0
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary == {"n": 5, "in_scope": round(2 / 3, 4), "rejects": 1.0, "overall": 0.8}
    assert "invoice" in output and "买完降价了能保价吗" in output  # listed among the misses


def test_shared_dev_set_reaches_target(analyzer: TextAnalyzer, shared_eval: Path) -> None:
    kb, questions = shared_eval / "faq_kb.yaml", shared_eval / "faq_dev.tsv"
    assert kb.exists() and questions.exists(), f"shared eval files belong beside the repo: {shared_eval}"
    code, output = _run(kb, questions, analyzer)
    assert code == 0
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["overall"] >= 0.90, output


@pytest.mark.parametrize(
    ("kb_text", "questions_text", "message"),
    [
        ("- [not, a, mapping]\n", "q\tshipping\n", "not a mapping"),
        ("key: [unclosed\n", "q\tshipping\n", "not valid YAML"),
        ("- id: x\n  question: ''\n  answer: a\n", "q\tx\n", "invalid"),
        (TINY_KB, "啥时候发货\tshipping\textra\n", "column"),
        (TINY_KB, "啥时候发货\tno_such_entry\n", "not in the KB"),
        (TINY_KB, "question\tfaq_id\n", "no questions"),
        ("", "q\tshipping\n", "non-empty"),
    ],
)
def test_bad_files_give_a_clear_error_and_exit_code_2(
    tmp_path: Path, analyzer: TextAnalyzer, kb_text: str, questions_text: str, message: str
) -> None:
    kb = _write(tmp_path, "kb.yaml", kb_text)
    questions = _write(tmp_path, "q.tsv", questions_text)
    code, output = _run(kb, questions, analyzer)
    assert code == 2
    assert output.startswith("error:") and message in output
    assert "Traceback" not in output


def test_missing_and_binary_files_are_reported(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    kb = _write(tmp_path, "kb.yaml", TINY_KB)
    code, output = _run(kb, tmp_path / "missing.tsv", analyzer)
    assert code == 2 and "does not exist" in output
    binary = tmp_path / "q.tsv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    code, output = _run(kb, binary, analyzer)
    assert code == 2 and "not UTF-8" in output
