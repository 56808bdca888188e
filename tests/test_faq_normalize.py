from bot.faq.normalize import normalize_text


def test_full_width_letters_digits_and_punctuation_fold_to_plain_text() -> None:
    assert normalize_text("ＶＩＰ会员１２３，有优惠吗？") == "vip会员123 有优惠吗"


def test_emoji_and_chat_punctuation_are_stripped_but_chinese_kept() -> None:
    assert normalize_text("亲～在吗？？😭😭 快递到哪了！！🙏") == "亲 在吗 快递到哪了"


def test_mixed_scripts_and_whitespace_collapse() -> None:
    assert normalize_text("  L码\t\n适合  20斤 的宝宝吗 ") == "l码 适合 20斤 的宝宝吗"


def test_hostile_inputs_give_empty_text_without_error() -> None:
    assert normalize_text("") == ""
    assert normalize_text("😀" * 5000) == ""
    assert normalize_text("？！。，…—～【】《》") == ""
    assert normalize_text("\x00\u200b\ufe0f") == ""
