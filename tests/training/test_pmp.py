"""PMP importers on the real Stack Exchange and UKPConvArg1 files, and a Reddit fixture."""

import json
from html import escape

import pytest

from tests.data import STACKEXCHANGE_SITES as SE_SITES
from tests.data import UKP
from training.pmp import (
    PMPFormatError,
    as_pairs,
    dense_ranks,
    html_to_text,
    import_reddit,
    import_stackexchange,
    import_ukpconvarg,
    ukp_topic,
)


def import_all_sites(**kwargs):
    total = None
    for path in sorted(SE_SITES.glob("*/Posts.xml")):
        one = import_stackexchange(path, **kwargs)
        total = one if total is None else total.extend(one)
    return total


@pytest.mark.shared_data
def test_stackexchange_pairs_match_the_readme_count():
    # The README's 9,799: same-question answer pairs with different scores.
    by_score = import_all_sites(accepted_breaks_ties=False)
    assert by_score.counts["questions"] == 3217 and by_score.counts["answers"] == 6988
    assert by_score.pairs == 9799
    # With the accepted answer above others of equal score, 128 tied pairs become pairs.
    ranked = import_all_sites()
    assert ranked.pairs == 9927
    assert len(ranked.rankings) == ranked.counts["rankings"] == 1675
    ranking = max(ranked.rankings, key=lambda r: len(r.responses))
    assert ranking.context[0]["role"] == "user" and "<p>" not in ranking.context[0]["content"]
    assert ranking.ranks[0] == 0 and ranking.ranks == sorted(ranking.ranks)
    # Pairs from the rankings are the binary PMP data, the same count.
    assert len(as_pairs(ranked.rankings)) == 9927


@pytest.mark.shared_data
def test_stackexchange_binary_and_cap_on_one_site():
    path = SE_SITES / "beer" / "Posts.xml"
    pairs = import_stackexchange(path, binary=True)
    assert len(pairs.rankings) == pairs.pairs == 2235
    assert all(r.ranks == [0, 1] and len(r.responses) == 2 for r in pairs.rankings)
    capped = import_stackexchange(path, max_responses=2)
    assert all(len(r.responses) == 2 for r in capped.rankings)
    assert capped.counts["responses_capped"] > 0 and capped.pairs < pairs.pairs


def se_row(**attrs) -> str:
    # Attribute values escaped as the dumps escape them (newlines as &#xA;).
    return (
        "  <row "
        + " ".join(f'{k}="{escape(v)}"'.replace("\n", "&#xA;") for k, v in attrs.items())
        + " />\n"
    )


def test_stackexchange_ranks_by_score_accepted_first_and_names_bad_lines(tmp_path):
    body = "<p>Use <code>x = 1</code>:</p><pre><code>if x:\n    y()\n</code></pre>"
    posts = tmp_path / "site" / "Posts.xml"
    posts.parent.mkdir()
    posts.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n'
        + se_row(Id="1", PostTypeId="1", AcceptedAnswerId="3", Score="5", Title="How?", Body=body)
        + se_row(Id="2", PostTypeId="2", ParentId="1", Score="4", Body="<p>four</p>")
        + se_row(Id="3", PostTypeId="2", ParentId="1", Score="4", Body="<p>accepted</p>")
        + se_row(Id="4", PostTypeId="2", ParentId="1", Score="-1", Body="<p>bad</p>")
        + se_row(Id="5", PostTypeId="2", ParentId="9", Score="1", Body="<p>orphan</p>")
        + "</posts>\n"
    )
    result = import_stackexchange(posts)
    (ranking,) = result.rankings
    assert ranking.responses == ["accepted", "four", "bad"] and ranking.ranks == [0, 1, 2]
    assert ranking.context[0]["content"] == "How?\n\nUse x = 1:\n\nif x:\n    y()"
    assert result.counts["answers_without_question"] == 1
    assert import_stackexchange(posts, accepted_breaks_ties=False).rankings[0].ranks == [0, 0, 1]

    posts.write_text(posts.read_text().replace('Score="-1"', 'Score="many"'))
    with pytest.raises(PMPFormatError, match=r"Posts.xml:6: bad <row>"):
        import_stackexchange(posts)
    posts.write_text("<posts>\n<row Id='1'\n</posts>\n")
    with pytest.raises(PMPFormatError, match=r"Posts.xml:3: not well-formed"):
        import_stackexchange(posts)


@pytest.mark.shared_data
def test_ukpconvarg_gives_11650_pairs_with_the_topic_as_context():
    result = import_ukpconvarg(UKP)
    assert result.counts["files"] == 32
    assert len(result.rankings) == result.pairs == 11650
    first = result.rankings[0]
    assert first.ranks == [0, 1]
    assert first.context[0]["content"].startswith("Which argument is more convincing on: ")
    assert "<br/>" not in "".join(r.responses[0] + r.responses[1] for r in result.rankings)


def test_ukpconvarg_label_picks_the_better_argument_and_errors_name_the_line(tmp_path):
    path = tmp_path / "tv-is-better-than-books_tv.csv"
    path.write_text("#id\tlabel\ta1\ta2\nx_y\ta2\tweak<br/>one\tstrong one\nz_w\ta1\tA\tB\n")
    assert ukp_topic(path) == "tv is better than books (tv)"
    result = import_ukpconvarg(path)
    assert [r.responses for r in result.rankings] == [["strong one", "weak\none"], ["A", "B"]]
    path.write_text("#id\tlabel\ta1\ta2\nx_y\ta3\tA\tB\n")
    with pytest.raises(PMPFormatError, match=r"tv-is-better-than-books_tv.csv:2:"):
        import_ukpconvarg(path)


REDDIT = [
    {
        "id": "s1",
        "title": "Best way to learn to cook?",
        "selftext": "I burn everything.",
        "score": 50,
    },
    {"id": "c1", "parent_id": "t3_s1", "link_id": "t3_s1", "body": "Start with eggs.", "score": 10},
    {"id": "c2", "parent_id": "t3_s1", "link_id": "t3_s1", "body": "Order takeout.", "score": 5},
    {"id": "c3", "parent_id": "t3_s1", "link_id": "t3_s1", "body": "Watch videos.", "score": 5},
    {"id": "c4", "parent_id": "t3_s1", "link_id": "t3_s1", "body": "[deleted]", "score": 30},
    {"id": "r1", "parent_id": "t1_c1", "link_id": "t3_s1", "body": "Eggs are hard.", "score": 3},
    {"id": "r2", "parent_id": "t1_c1", "link_id": "t3_s1", "body": "Scrambled first!", "score": 7},
    {"id": "o1", "parent_id": "t1_gone", "link_id": "t3_s1", "body": "Orphan.", "score": 1},
    {"id": "o2", "parent_id": "t1_gone", "link_id": "t3_s1", "body": "Orphan 2.", "score": 2},
]


def test_reddit_ranks_sibling_replies_by_score_with_the_thread_as_context(tmp_path):
    path = tmp_path / "comments.jsonl"
    path.write_text("\n".join(json.dumps(item) for item in REDDIT) + "\n")
    result = import_reddit(path)
    by_parent = {r.source.rsplit("=", 1)[1]: r for r in result.rankings}
    assert set(by_parent) == {"s1", "c1"}
    top = by_parent["s1"]
    assert top.responses == ["Start with eggs.", "Order takeout.", "Watch videos."]
    assert top.ranks == [0, 1, 1]  # the tie stays a tie: it makes no pair
    assert top.context == [
        {"role": "user", "content": "Best way to learn to cook?\n\nI burn everything."}
    ]
    nested = by_parent["c1"]
    assert nested.responses == ["Scrambled first!", "Eggs are hard."]
    assert [m["role"] for m in nested.context] == ["assistant", "user"]  # the parent is "Human"
    assert nested.context[-1]["content"] == "Start with eggs."
    assert result.counts["deleted_comments"] == 1 and result.counts["replies_without_parent"] == 2
    assert result.pairs == 2 + 1

    pairs = import_reddit(path, binary=True)
    assert len(pairs.rankings) == 3 and pairs.counts["tied_pairs_dropped"] == 1

    path.write_text(json.dumps(REDDIT[0]) + "\n{not json\n")
    with pytest.raises(PMPFormatError, match=r"comments.jsonl:2: not JSON"):
        import_reddit(path)
    path.write_text(json.dumps({"id": "c9", "parent_id": "t3_s1", "body": "x"}) + "\n")
    with pytest.raises(PMPFormatError, match=r"comments.jsonl:1: bad comment"):
        import_reddit(path)


def test_dense_ranks_and_html_to_text():
    assert dense_ranks([(5, False), (7, False), (5, True), (5, False)]) == [2, 0, 1, 2]
    html = "<p>Hello <b>world</b>.</p>\n<ul><li>one</li><li>two &amp; three</li></ul>"
    assert html_to_text(html) == "Hello world.\n\n- one\n\n- two & three"
