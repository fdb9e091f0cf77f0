"""The answer-leak guard and the number reader it rests on."""

from decimal import Decimal

import pytest

from services.guided.leak import check_leak, known_answer, text_overlap
from services.guided.numbers import last_number, numbers_in, parse_answer


@pytest.mark.parametrize("reply", [
    "The answer is 18.",
    "So she has $18 left.",
    "That gives 18.00 dollars in total.",
    "6 + 12 = 18",
    "x=18",
    "(3*6)=18, done",
    "She ends up with eighteen apples.",
    "Eighteen is the total.",
    "答案是18个。",
    "一共是十八个苹果。",
    "Total: 18kg",
    "The result is -18 plus 36, i.e. 18",
])
def test_numeric_answer_leaks_in_every_form(reply):
    assert check_leak(reply, known_answer("18")).leaked


@pytest.mark.parametrize("reply,answer", [
    ("It costs $1,250 in all.", "1250"),
    ("It costs 1250 in all.", "$1,250"),
    ("two hundred and five people came", "205"),
    ("twenty-five minutes", "25"),
    ("twenty five minutes", "25"),
    ("一百零五人", "105"),
    ("0.5 of the cake", ".5"),
    ("3/4 of the class", "0.75"),
    ("It is 2,500,000 dollars", "2500000"),
])
def test_numeric_leaks_with_commas_words_and_fractions(reply, answer):
    assert check_leak(reply, known_answer(answer)).leaked


@pytest.mark.parametrize("reply", [
    "What does the question ask for? List the quantities you know.",
    "Try 12 + 3 first. What do you get?",
    "In 2018 she had 180 apples and 1.8 kg of pears.",  # 18 inside longer numbers is not 18
    "Think about step one, then step two.",
    "第一步：先算出一共有多少个。",
])
def test_no_false_alarm_on_other_numbers(reply):
    assert not check_leak(reply, known_answer("18")).leaked


def test_target_sentence_leaks_by_containment_or_overlap():
    target = known_answer("Schools should ban phones in class because they distract students from learning.")
    assert target.text and target.number is None
    assert check_leak("Try this: schools should ban phones in class because they distract students from learning!",
                      target).leaked
    assert check_leak("Maybe: Schools should ban phones in class because they distract students.", target).leaked
    assert not check_leak("What position do you take on phones, and what is your main reason?", target).leaked


def test_chinese_target_text():
    target = known_answer("学校应当禁止学生在课堂上使用手机，因为手机会分散注意力。")
    assert check_leak("你可以写：学校应当禁止学生在课堂上使用手机，因为手机会分散注意力。", target).leaked
    assert not check_leak("你的立场是什么？理由是什么？", target).leaked
    assert text_overlap("学校应当禁止手机", "完全不同的句子") == 0.0


def test_no_known_answer_never_leaks():
    assert not check_leak("The answer is 18", None).leaked
    assert known_answer("  ") is None


def test_numbers_reader():
    assert numbers_in("$1,250.50 and 3") == [Decimal("1250.50"), Decimal("3")]
    assert last_number("12 + 3 = 15 spoons.") == 15
    assert last_number("is it twenty five?") == 25
    assert last_number("答案是十八") == 18
    assert last_number("no numbers here") is None


def test_mathdial_answer_parsing():
    assert parse_answer("12+3=15 spoons.\n15-5=10 spoons.\n 10") == 10
    assert parse_answer("blah\\n 1,000") == 1000
    assert parse_answer("steps #### 42") == 42
