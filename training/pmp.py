"""Importers of public ranked data for preference-model pre-training (PMP, Askell et al. 2021).

Each turns one public format into `Ranking`s plus counts: Stack Exchange data-dump `Posts.xml`
(answers to one question ranked by score), Reddit comments as JSON lines (sibling replies ranked
by score) and UKPConvArg1 TSVs (which of two arguments is more convincing). `binary=True` gives
the paper's binary PMP variant: pairs of two responses with different scores instead of whole
rankings. This is PMP data only: the HH held-out split never passes through here.

Errors name the file and line. Plain Python, no Django.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from html.parser import HTMLParser
from pathlib import Path

from training.data import Ranking

UKP_HEADER = ["#id", "label", "a1", "a2"]
REDDIT_GONE = {"", "[deleted]", "[removed]"}


@dataclass
class PMPImport:
    """Rankings read from one or more files, and what was read, kept and dropped."""

    rankings: list[Ranking] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    @property
    def pairs(self) -> int:
        """Ordered pairs with different ranks over all rankings (what the loss compares)."""
        return sum(_pair_count(r.ranks) for r in self.rankings)

    def counted(self) -> PMPImport:
        """Itself, with the rankings and pairs it holds added to its counts."""
        self.counts["rankings"] = len(self.rankings)
        self.counts["pairs"] = self.pairs
        return self

    def extend(self, other: PMPImport) -> PMPImport:
        self.rankings += other.rankings
        self.counts.update(other.counts)
        return self


class PMPFormatError(ValueError):
    """A file that does not have the expected format; the message starts with `path:line:`."""


# --- ranking by score --------------------------------------------------------------------------


def _pair_count(ranks: Sequence[int]) -> int:
    return sum(1 for a, b in itertools.combinations(ranks, 2) if a != b)


def dense_ranks(keys: Sequence) -> list[int]:
    """0 for the highest key, 1 for the next distinct one, …; equal keys share a rank (a tie)."""
    distinct = sorted(set(keys), reverse=True)
    place = {key: i for i, key in enumerate(distinct)}
    return [place[key] for key in keys]


def _rankings_for(
    context: list[dict],
    responses: list[tuple[str, tuple]],
    *,
    binary: bool,
    max_responses: int | None,
    source: str,
    counts: Counter,
) -> list[Ranking]:
    """Responses (text, sort key) → one ranking, or all pairs with different keys; ties dropped."""
    responses = sorted(responses, key=lambda item: item[1], reverse=True)
    if max_responses is not None:
        # The top ones by score: low scores on a busy question are mostly unread, not bad.
        counts["responses_capped"] += max(0, len(responses) - max_responses)
        responses = responses[:max_responses]
    ranks = dense_ranks([key for _, key in responses])
    if len(set(ranks)) < 2:
        counts["groups_all_tied"] += 1
        return []
    if not binary:
        return [Ranking([text for text, _ in responses], ranks, context=context, source=source)]
    pairs = []
    for (a, rank_a), (b, rank_b) in itertools.combinations(
        zip([text for text, _ in responses], ranks, strict=True), 2
    ):
        if rank_a == rank_b:
            counts["tied_pairs_dropped"] += 1
            continue
        # Sorted best first, so `a` is the better one.
        pairs.append(Ranking([a, b], [0, 1], context=context, source=source))
    return pairs


def as_pairs(rankings: Iterable[Ranking]) -> list[Ranking]:
    """Split rankings into pairs of two responses with different ranks (binary PMP)."""
    pairs = []
    for ranking in rankings:
        for i, j in itertools.combinations(range(len(ranking.responses)), 2):
            if ranking.ranks[i] == ranking.ranks[j]:
                continue
            better, worse = (i, j) if ranking.ranks[i] < ranking.ranks[j] else (j, i)
            pairs.append(
                Ranking(
                    [ranking.responses[better], ranking.responses[worse]],
                    [0, 1],
                    context=ranking.context,
                    context_text=ranking.context_text,
                    source=ranking.source,
                )
            )
    return pairs


# --- HTML → text -------------------------------------------------------------------------------


class _TextExtractor(HTMLParser):
    BLOCKS = {"p", "div", "li", "ul", "ol", "pre", "blockquote", "tr", "hr", "table"}
    BLOCKS |= {f"h{i}" for i in range(1, 7)}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCKS or tag == "br":  # <br> is a line break, not a paragraph
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")
        if tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.parts.append(f"[{alt}]")

    def handle_endtag(self, tag):
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.pre:  # code keeps its whitespace
            self.parts.append(data)
            return
        # Prose collapses runs of whitespace, and a line does not start with a space.
        text = re.sub(r"\s+", " ", data)
        if not self.parts or self.parts[-1].endswith("\n"):
            text = text.lstrip()
        self.parts.append(text)


def html_to_text(html: str) -> str:
    """Stack Exchange post HTML → plain text: paragraphs on their own lines, code kept verbatim."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [line.rstrip() for line in "".join(parser.parts).split("\n")]
    text, blank = [], False
    for line in lines:
        if line.strip():
            text.append(line)
            blank = False
        elif not blank and text:
            text.append("")
            blank = True
    return "\n".join(text).strip()


# --- Stack Exchange ----------------------------------------------------------------------------


def import_stackexchange(
    path: str | os.PathLike,
    *,
    binary: bool = False,
    max_responses: int | None = None,
    accepted_breaks_ties: bool = True,
) -> PMPImport:
    """A data-dump `Posts.xml` → one ranking of answers per question (or pairs when `binary`).

    Answers are ranked by score; the accepted answer counts as higher than others with the same
    score (`accepted_breaks_ties`). The question's Title + Body is the human message. The file is
    read line by line with a pull parser, each <row> dropped once read, so parsing takes constant
    memory whatever the dump's size.
    """
    path = Path(path)
    site = path.parent.name
    questions: dict[str, tuple[str, str | None]] = {}  # Id → (text, AcceptedAnswerId)
    answers: dict[str, list[tuple[str, str, int]]] = defaultdict(list)  # ParentId → answers
    counts: Counter = Counter()
    for lineno, row in _xml_rows(path):
        kind = row.get("PostTypeId")
        try:
            if kind == "1":
                counts["questions"] += 1
                title = row.get("Title", "")
                body = html_to_text(row.get("Body", ""))
                text = f"{title}\n\n{body}".strip()
                questions[row.attrib["Id"]] = (text, row.get("AcceptedAnswerId"))
            elif kind == "2":
                counts["answers"] += 1
                answers[row.attrib["ParentId"]].append(
                    (row.attrib["Id"], html_to_text(row.get("Body", "")), int(row.attrib["Score"]))
                )
            else:
                counts["other_posts"] += 1
        except (KeyError, ValueError) as error:
            raise PMPFormatError(f"{path}:{lineno}: bad <row>: {error!r}") from error

    result = PMPImport(counts=counts)
    rankings_for = partial(_rankings_for, binary=binary, max_responses=max_responses, counts=counts)
    for question_id, replies in answers.items():
        if question_id not in questions:
            counts["answers_without_question"] += len(replies)
            continue
        text, accepted = questions[question_id]
        replies = [r for r in replies if r[1]]
        counts["empty_answers"] += len(answers[question_id]) - len(replies)
        scored = [
            (body, (score, accepted_breaks_ties and answer_id == accepted))
            for answer_id, body, score in replies
        ]
        source = f"stackexchange:{site}#Id={question_id}"
        result.rankings += rankings_for([{"role": "user", "content": text}], scored, source=source)
    return result.counted()


def _xml_rows(path: Path):
    """Yield (line number, <row> element) from a Stack Exchange dump, clearing each as it goes."""
    parser = ET.XMLPullParser(events=("start", "end"))
    root = None
    try:
        with path.open("rb") as file:
            for lineno, line in enumerate(file, 1):
                parser.feed(line)
                for event, element in parser.read_events():
                    if event == "start":
                        root = root if root is not None else element
                    elif element.tag == "row":
                        yield lineno, element
                        root.clear()  # drop the rows read so far: constant memory
            parser.close()
    except ET.ParseError as error:
        line = error.position[0] if error.position else "?"
        raise PMPFormatError(f"{path}:{line}: not well-formed XML: {error}") from error


# --- Reddit ------------------------------------------------------------------------------------


def _reddit_id(value: str) -> str:
    # Reddit writes ids bare ("abc") and references with a kind prefix ("t1_abc", "t3_abc").
    return value.split("_", 1)[1] if value[:3] in {"t1_", "t3_"} else value


def import_reddit(
    path: str | os.PathLike,
    *,
    binary: bool = False,
    max_responses: int | None = None,
    context_depth: int = 4,
) -> PMPImport:
    """Reddit JSON lines → sibling replies to the same parent, ranked by score.

    Each line is a comment `{"id", "parent_id", "link_id", "body", "score"}` or a submission
    (it has a "title", optional "selftext"). The context is the thread above the replies, at most
    `context_depth` posts, the parent as the human message and turns alternating above it.
    """
    path = Path(path)
    posts: dict[str, dict] = {}
    children: dict[str, list[str]] = defaultdict(list)
    counts: Counter = Counter()
    with path.open(encoding="utf-8") as file:
        for lineno, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                post_id = _reddit_id(str(item["id"]))
                if "title" in item and not item.get("parent_id"):
                    counts["submissions"] += 1
                    text = f"{item['title']}\n\n{item.get('selftext') or ''}".strip()
                    posts[post_id] = {"text": text, "parent": None}
                    continue
                counts["comments"] += 1
                body = (item.get("body") or "").strip()
                score = int(item["score"])
                parent = _reddit_id(str(item["parent_id"]))
            except json.JSONDecodeError as error:
                raise PMPFormatError(f"{path}:{lineno}: not JSON: {error}") from error
            except (KeyError, TypeError, ValueError) as error:
                raise PMPFormatError(f"{path}:{lineno}: bad comment: {error!r}") from error
            posts[post_id] = {"text": body, "parent": parent, "score": score}
            if body in REDDIT_GONE:
                counts["deleted_comments"] += 1
                continue
            children[parent].append(post_id)

    result = PMPImport(counts=counts)
    rankings_for = partial(_rankings_for, binary=binary, max_responses=max_responses, counts=counts)
    for parent_id, reply_ids in children.items():
        thread = _reddit_thread(posts, parent_id, context_depth)
        if thread is None:
            counts["replies_without_parent"] += len(reply_ids)
            continue
        # The parent speaks as the human; turns alternate above it.
        context = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": text}
            for i, text in enumerate(reversed(thread))
        ][::-1]
        replies = [(posts[r]["text"], (posts[r]["score"],)) for r in reply_ids]
        source = f"reddit:{path.name}#parent={parent_id}"
        result.rankings += rankings_for(context, replies, source=source)
    return result.counted()


def _reddit_thread(posts: dict, parent_id: str, depth: int) -> list[str] | None:
    """Texts from the top of the thread down to `parent_id` (at most `depth`), or None if gone."""
    texts, current = [], parent_id
    while current is not None and len(texts) < depth:
        post = posts.get(current)
        if post is None or post["text"] in REDDIT_GONE:
            # Without the post replied to, the replies' ranking has no context to be about.
            return None if current == parent_id else texts[::-1]
        texts.append(post["text"])
        current = post["parent"]
    return texts[::-1]


# --- UKPConvArg1 -------------------------------------------------------------------------------


def ukp_topic(path: str | os.PathLike) -> str:
    """The debate and stance from a UKPConvArg1 file name, as words."""
    debate, _, stance = Path(path).stem.rpartition("_")
    debate, stance = (" ".join(s.replace("-", " ").split()) for s in (debate, stance))
    return f"{debate} ({stance})" if debate else stance


def import_ukpconvarg(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> PMPImport:
    """UKPConvArg1 TSVs (a file or a folder of them) → pairs: which argument is more convincing."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.csv")) if p.is_dir() else [p]
    result = PMPImport()
    counts = result.counts
    for path in files:
        question = f"Which argument is more convincing on: {ukp_topic(path)}?"
        context = [{"role": "user", "content": question}]
        counts["files"] += 1
        with path.open(encoding="utf-8") as file:
            for lineno, line in enumerate(file, 1):
                fields = line.rstrip("\r\n").split("\t")
                if lineno == 1:
                    if fields != UKP_HEADER:
                        raise PMPFormatError(
                            f"{path}:1: expected the header {' '.join(UKP_HEADER)!r}, got {line!r}"
                        )
                    continue
                if not line.strip():
                    continue
                if len(fields) != 4 or fields[1] not in {"a1", "a2"}:
                    raise PMPFormatError(
                        f"{path}:{lineno}: expected 4 tab-separated fields with label a1 or a2"
                    )
                pair_id, label, a1, a2 = fields
                a1, a2 = (html_to_text(a) for a in (a1, a2))
                better, worse = (a1, a2) if label == "a1" else (a2, a1)
                if not better or not worse or better == worse:
                    counts["pairs_dropped"] += 1
                    continue
                result.rankings.append(
                    Ranking(
                        [better, worse],
                        [0, 1],
                        context=context,
                        source=f"ukpconvarg1:{path.name}#{pair_id}",
                    )
                )
    return result.counted()
