"""Start-up costs the analyzer keeps off the path: checked in a fresh interpreter."""

import subprocess
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_first_analyzer_imports_jieba_without_pkg_resources() -> None:
    out = _run(
        "import sys\n"
        "from bot.faq.analyzer import TextAnalyzer\n"
        "tokens = TextAnalyzer().analyze('纸尿裤怎么退货')\n"
        "print(tokens, 'pkg_resources' in sys.modules)\n"
    )
    assert out == "['纸尿裤', '怎么', '退货'] False"


def test_jieba_without_pkg_resources_still_builds_its_dictionary_from_its_files(tmp_path: Path) -> None:
    # No cache file: jieba reads dict.txt through its open() fallback.
    out = _run(
        "import sys\n"
        "from bot.faq.analyzer import TextAnalyzer, _default_tokenizer\n"
        "_default_tokenizer()\n"
        "import jieba\n"
        f"tokenizer = jieba.Tokenizer()\ntokenizer.tmp_dir = {str(tmp_path)!r}\n"
        "print(TextAnalyzer(tokenizer=tokenizer).analyze('纸尿裤怎么退货'), 'pkg_resources' in sys.modules)\n"
    )
    assert out == "['纸尿裤', '怎么', '退货'] False"
