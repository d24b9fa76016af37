"""Each slice rule on hand-written reviews it must catch and must not catch."""

import pytest

from peftsent.slices import is_contrast, is_mixed, is_negation, is_sarcasm, sarcasm_cues, slice_flags

CASES = {
    is_mixed: (
        ["The acting was brilliant and moving, but the script is a dreadful, boring mess.",
         "I loved the music. I hated the ending. Wonderful cast, terrible pacing."],
        ["A wonderful, warm and funny film; I loved every minute.",
         "Dull, ugly and far too long. A waste of time.",
         "The film runs two hours and was shot in Canada."],
    ),
    is_contrast: (
        ["The cast is wonderful, but the plot is a boring mess.",
         "Although the effects are impressive, the story is dull and stupid.",
         "The first hour is great fun. However, the ending is awful.",
         "It looks cheap and ugly, yet I loved it."],
        ["The cast is wonderful and the plot is clever.",
         "The cast is wonderful, but the plot is even better.",  # same polarity on both sides
         "It is bad, but the sequel is worse.",
         "Although it was released in 1999, it was filmed in 1997."],  # no polarity on either side
    ),
    is_negation: (
        ["This is not a good movie.",
         "I didn't enjoy a single scene.",
         "Never funny, never clever.",
         "It wasn't really that great<br />at all."],
        ["This is a good movie.",
         "Not once did the camera move during the long opening scene of the good movie.",  # 'not' is 9 words away
         "I have nothing to add.",  # negation, but no sentiment word after it
         "A great and beautiful film."],
    ),
    is_sarcasm: (
        ['The "brilliant" screenplay has the hero explain the plot three times.',
         "Oh great, another two hours of car chases.",
         "Yeah right, because that makes perfect sense.",
         "Best movie ever /s"],
        ["A brilliant screenplay and great car chases.",
         'Michael Mann\'s "Heat" is a crime classic.',  # a quoted title, not a positive word
         'I rented "Perfect Crime" and "silly love songs" last week.',  # titles: capitalised or several words
         "The title of the film is in quotes in the credits.",
         "Oh, the ending made me cry."],
    ),
}


@pytest.mark.parametrize("rule", list(CASES), ids=lambda r: r.__name__)
def test_rule_catches_what_it_must(rule):
    for text in CASES[rule][0]:
        assert rule(text), f"{rule.__name__} should catch: {text}"


@pytest.mark.parametrize("rule", list(CASES), ids=lambda r: r.__name__)
def test_rule_leaves_what_it_must_not_catch(rule):
    for text in CASES[rule][1]:
        assert not rule(text), f"{rule.__name__} should not catch: {text}"


def test_sarcasm_cues_are_named():
    assert sarcasm_cues('Oh great, a "masterpiece".') == ["ironic phrase", "scare quotes"]


def test_slice_flags_cover_every_review():
    texts = ["The cast is wonderful, but the plot is a boring mess.", "A film."]
    flags = slice_flags(texts)
    assert set(flags) == {"mixed", "contrast", "negation", "sarcasm"}
    assert flags["contrast"].tolist() == [True, False] and all(len(v) == 2 for v in flags.values())
