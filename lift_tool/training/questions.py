"""Synthetic question-answer pairs made from a document, for absorption training.

The default generator needs no second model and runs offline: it splits the text into sentences, finds answer
candidates (names, years, dates, counts, quoted titles) and turns each sentence into a few questions with
simple, general rewriting rules:

- passive to active:   "X was founded in 1687 by Y."        -> "Who founded X?"            (Y)
- passive with a time: "X was built in 1754."                -> "When was X built?"         (1754)
- copula:              "X's chief export is blue glass, ..."  -> "What is X's chief export?" (blue glass)
- naming:              "... a council called the Tidemoot."  -> "What is the council called?"
- wh-echo:             any candidate replaced by who / what / when / how many, in place
- recall:              "What does the document say about Y?" -> the sentence itself

and adds questions the document does not answer (an entity swapped for one it never mentions), answered with
"The document does not say." A LangChain chat model can replace the rules (``ChatQuestionGenerator``); it sees
only the document, never evaluation questions.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from lift_tool.prompts import NOT_IN_DOCUMENT

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    "seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand"
)
# Words that name places and things, not people: "Quillon Island" is a what, "Isolde Varnack" a who.
THING_WORDS = {
    "island", "islands", "sea", "ocean", "bay", "cove", "river", "lake", "pool", "mount", "mountain", "hill",
    "church", "hall", "light", "company", "academy", "school", "university", "college", "observatory", "road",
    "street", "point", "field", "prize", "award", "flats", "comet", "station", "museum", "library", "club",
    "festival", "war", "act", "treaty", "party", "city", "town", "county", "state", "kingdom", "empire",
    "republic", "province", "valley", "park", "bridge", "castle", "cathedral", "palace", "house", "tower",
    "institute", "society", "council", "court", "army", "navy", "league", "cup", "games", "championship",
    "series", "book", "album", "film", "song", "day", "north", "south", "east", "west", "harbour", "harbor",
    "center", "centre", "office", "department", "ministry", "foundation", "corporation", "inc", "ltd",
}
PERSON_CUES = {
    "by", "poet", "writer", "author", "painter", "cartographer", "astronomer", "glassblower", "keeper",
    "captain", "king", "queen", "president", "mayor", "warden", "doctor", "dr", "professor", "mr", "mrs", "ms",
    "sir", "lady", "lord", "saint", "emperor", "general", "engineer", "scientist", "composer", "architect",
    "founder", "leader", "minister", "director", "chancellor", "pope", "bishop", "singer", "actor", "actress",
}
SUBJECT_PRONOUNS = {"it", "he", "she", "they", "its", "his", "her", "their"}
MEASURE_ADJECTIVES = {"tall", "long", "wide", "high", "deep", "old", "large", "heavy", "far", "big", "thick"}
# Past participles that equal the simple past, for turning "X was built by Y" into "Who built X?".
IRREGULAR_SAME_PAST = {
    "built", "made", "held", "kept", "brought", "found", "sold", "won", "set", "led", "bought", "taught",
    "caught", "paid", "told", "sent", "spent", "lost", "left", "read", "heard", "meant", "met", "put", "cut",
    "shut", "struck", "fought", "sought", "laid", "bred", "fed", "fled", "lit", "shot", "dug", "hung", "spun",
}
AUXILIARIES = r"is|are|was|were|has|have|had|can|will|would|could|may|might|must"
# A capital letter glued to what comes before or after it ("3D", "5°E", "D&B") is part of a token, not a name.
CAPITAL_WORD = r"(?<![\w&°])[A-Z][\w'’\-]*(?![\w'’\-]|&\w)"
NAME_PATTERN = re.compile(
    rf"{CAPITAL_WORD}(?:(?:\s+(?:of|de|du|da|van|von|del|la|le|der)(?:\s+the)?)?\s+{CAPITAL_WORD})*"
)
YEAR_PATTERN = re.compile(r"(?<![\d,.])(1[0-9]\d{2}|20\d{2})(?![\d,]|\w)")
DATE_PATTERN = re.compile(rf"\b(?:\d{{1,2}}\s+(?:{MONTHS})(?:\s+\d{{4}})?|(?:{MONTHS})\s+\d{{1,2}}(?:,\s*\d{{4}})?)\b")
COUNT_PATTERN = re.compile(
    rf"(?<![\w,.])((?:\d{{1,3}}(?:,\d{{3}})+|\d+(?:\.\d+)?)|(?:(?:{NUMBER_WORDS})(?:[\s-](?:{NUMBER_WORDS}))*))\s+([a-z][a-z\-]+)",
    flags=re.IGNORECASE,
)
QUOTE_PATTERN = re.compile(r"[\"“]([^\"”]{2,80})[\"”]")
# Common words that start sentences with a capital letter but are not names.
NOT_NAMES = {
    "the", "a", "an", "in", "on", "at", "for", "from", "to", "of", "by", "with", "and", "but", "or", "it", "its",
    "he", "she", "they", "his", "her", "their", "this", "that", "these", "those", "there", "here", "when",
    "while", "after", "before", "since", "during", "every", "each", "most", "many", "some", "all", "no", "one",
    "two", "today", "however", "although", "because", "as", "if", "then", "also", "both", "other", "older",
    "children", "cars", "fishing", "winter", "summer", "everything", "nothing", "about", "over", "under",
}
WEEKDAYS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
PREPOSITIONS = {"in", "on", "at", "for", "from", "to", "of", "by", "with", "during", "after", "before", "since",
                "until", "over", "under", "between", "about", "across", "through", "along", "around"}


@dataclass(frozen=True)
class Sentence:
    index: int
    text: str
    start: int  # character offsets in the document
    end: int
    section: str | None


@dataclass(frozen=True)
class Span:
    text: str
    start: int  # offsets within the sentence
    end: int
    kind: str  # name | year | date | count | quote
    noun: str = ""  # for counts: the counted noun ("sailors")


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    sentence: int  # index of the evidence sentence (-1: none, for unanswerable questions)
    form: str  # which rule made it
    answerable: bool = True


# --------------------------------------------------------------------------------------------------- sentences


def split_sentences(text: str) -> list[Sentence]:
    """Sentences with character offsets; Markdown headings are not sentences but name the section."""
    sentences: list[Sentence] = []
    section = None
    offset = 0
    for block in re.split(r"(\n\s*\n)", text):
        block_start = offset
        offset += len(block)
        stripped = block.strip()
        if not stripped:
            continue
        heading = re.match(r"^#{1,6}\s+(.+)$", stripped)
        if heading and "\n" not in stripped:
            section = heading.group(1).strip()
            continue
        for match in re.finditer(r"[^.!?]+(?:[.!?]+[\"”’)]*|$)", block):
            piece = match.group(0)
            # Do not cut after abbreviations and initials ("Dr.", "J. Smith", "No. 5").
            sentence_text = " ".join(piece.split())
            if len(sentence_text) < 3:
                continue
            start = block_start + match.start() + (len(piece) - len(piece.lstrip()))
            if sentences and _continues_previous(sentences[-1], sentence_text, block_start):
                previous = sentences.pop()
                sentence_text = previous.text + " " + sentence_text
                start = previous.start
            sentences.append(Sentence(len(sentences), sentence_text, start, block_start + match.end(), section))
    return sentences


@dataclass(frozen=True)
class Passage:
    """Consecutive sentences that questions are written about together."""

    sentences: list[Sentence]

    @property
    def text(self) -> str:
        return " ".join(sentence.text for sentence in self.sentences)


def passages(text: str, size: int) -> list[Passage]:
    """``text``'s sentences in consecutive passages of ``size`` (the last one may be shorter)."""
    sentences = split_sentences(text)
    return [Passage(sentences[first : first + size]) for first in range(0, len(sentences), size)]


def _continues_previous(previous: Sentence, text: str, block_start: int) -> bool:
    if previous.start < block_start:
        return False  # never join across paragraphs
    last_word = previous.text.rsplit(" ", 1)[-1]
    abbreviation = re.fullmatch(r"(?:[A-Z]|Dr|Mr|Mrs|Ms|St|No|Mt|Jr|Sr|vs|etc|e\.g|i\.e|c|ca)\.", last_word)
    return bool(abbreviation) or not text[:1].isupper() and not text[:1].isdigit() and text[:1] not in "\"“("


# ----------------------------------------------------------------------------------------------- answer spans


def find_spans(sentence: str, known_names: set[str]) -> list[Span]:
    """Answer candidates in one sentence, longest first where they overlap."""
    spans: list[Span] = []
    for match in DATE_PATTERN.finditer(sentence):
        spans.append(Span(match.group(0), match.start(), match.end(), "date"))
    for match in YEAR_PATTERN.finditer(sentence):
        spans.append(Span(match.group(0), match.start(), match.end(), "year"))
    for match in COUNT_PATTERN.finditer(sentence):
        number, noun = match.group(1), match.group(2)
        if YEAR_PATTERN.fullmatch(number) or number.lower() == "one" or noun.lower() in {"of", "and", "or", "to", "in", "the", "a"}:
            continue
        spans.append(Span(number, match.start(1), match.end(1), "count", noun=noun))
    for match in QUOTE_PATTERN.finditer(sentence):
        spans.append(Span(match.group(1), match.start(1), match.end(1), "quote"))
    for match in NAME_PATTERN.finditer(sentence):
        name, start = _trim_name(match.group(0), match.start())
        if not name or re.fullmatch(rf"(?:{MONTHS})", name) or name.lower() in WEEKDAYS:
            continue
        at_sentence_start = start == 0
        if at_sentence_start and " " not in name and name not in known_names:
            continue  # a capitalised first word that is never a name elsewhere in the document
        spans.append(Span(name, start, start + len(name), "name"))
    spans.sort(key=lambda span: (span.start, -(span.end - span.start)))
    chosen: list[Span] = []
    for span in spans:
        if chosen and span.start < chosen[-1].end:
            continue  # overlaps a longer candidate already taken
        chosen.append(span)
    return chosen


def _trim_name(name: str, start: int) -> tuple[str, int]:
    words = name.split()
    while words and words[0].lower() in NOT_NAMES:
        start += len(words[0]) + 1
        words = words[1:]
    while words and words[-1].lower() in {"of", "de", "du", "da", "van", "von", "del", "la", "le", "der", "the"}:
        words = words[:-1]
    name = " ".join(words).rstrip("'’")
    if name.endswith(("'s", "’s")):
        name = name[:-2]
    return name, start


def names_used_mid_sentence(sentences: list[Sentence]) -> set[str]:
    """Capitalised words that appear inside sentences: these are names even at a sentence's start."""
    names: set[str] = set()
    for sentence in sentences:
        if sentence.section:
            names.update(word for word in sentence.section.split() if word[:1].isupper())
        for match in NAME_PATTERN.finditer(sentence.text):
            name, start = _trim_name(match.group(0), match.start())
            if name and start > 0:
                names.update(word.strip("'’") for word in name.split())
                names.add(name)
    return names


# ----------------------------------------------------------------------------------------------- the rules


def _wh_phrase(span: Span, sentence: str) -> str:
    before = sentence[: span.start].split()
    previous_word = before[-1].lower().strip(",") if before else ""
    if span.kind == "year":
        return "what year"
    if span.kind == "date":
        return "what date"
    if span.kind == "count":
        return f"how many {span.noun}"
    if span.kind == "quote":
        return "what"
    if _looks_like_person(span.text, before):
        return "whom" if previous_word in {"by", "to", "with", "for", "from"} else "who"
    return "what"


def _looks_like_person(name: str, words_before: list[str]) -> bool:
    words = name.split()
    if any(re.sub(r"['’]s$", "", word.lower()) in THING_WORDS for word in words):
        return False
    cue = any(word.lower().strip(",") in PERSON_CUES for word in words_before[-3:])
    return cue or (len(words) in (2, 3) and all(word[:1].isupper() for word in words))


def _clause_around(sentence: str, span: Span, max_words: int = 20) -> tuple[str, int]:
    """The sentence, or for a long one the clause holding the span; returns (text, offset of text)."""
    if len(sentence.split()) <= max_words:
        return sentence, 0
    cuts = [m.end() for m in re.finditer(r"[,;:]\s+", sentence[: span.start])]
    start = cuts[-1] if cuts and len(sentence[cuts[-1] : span.start].split()) >= 1 else 0
    end_match = re.search(r"[,;:]\s+|[.!?]$", sentence[span.end :])
    end = span.end + end_match.start() if end_match else len(sentence)
    return sentence[start:end], start


def _finish_question(text: str) -> str:
    text = " ".join(text.split()).rstrip(" .,;:!")
    return text[:1].upper() + text[1:] + "?"


def echo_question(sentence: str, span: Span) -> QAPair | None:
    """Replace the answer with a wh-phrase in place: "X was founded in what year?"."""
    if sentence[span.end : span.end + 2] in ("'s", "’s"):
        return None  # "What's highest point is ..." does not read as a question
    clause, offset = _clause_around(sentence, span)
    start, end = span.start - offset, span.end - offset
    wh = _wh_phrase(span, sentence)
    before, after = clause[:start].rstrip(), clause[end:]
    if span.kind == "count":
        after = after.lstrip()[len(span.noun) :]  # "how many sailors" already names the noun
    if span.kind == "quote":
        before, after = before.rstrip("\"“ "), after.lstrip("\"”")
    if span.kind == "name" and before.lower().endswith(("the", "a")) and before.split()[-1].lower() in {"the", "a"}:
        before = before[: before.rfind(" ")] if " " in before else ""  # "the what" -> "what"
    after = after.strip()
    joiner = "" if after[:1] in {",", ";", ":", "."} else " "
    question = f"{before} {wh}{joiner}{after}".strip()
    if len(question.split()) < 4:
        return None
    return QAPair(_finish_question(question), span.text, -1, "echo")


def inverted_questions(sentence: str, spans: list[Span]) -> list[QAPair]:
    """Questions with the wh-word in front, for sentences shaped "Subject aux rest"."""
    match = re.match(rf"^(?P<subject>[^,;]{{2,80}}?)\s+(?P<aux>{AUXILIARIES})\s+(?P<rest>.+?)[.!?]?$", sentence)
    if not match or len(match.group("subject").split()) > 9:
        return []
    if match.group("subject").split()[0].lower() in PREPOSITIONS | SUBJECT_PRONOUNS | {"there", "here", "this", "that"}:
        return []  # "On the island there is ..." has no subject to ask about
    subject, aux, rest = match.group("subject"), match.group("aux"), match.group("rest")
    subject_lower = subject if _starts_with_name(subject) else subject[:1].lower() + subject[1:]
    rest_start = match.start("rest")
    questions: list[QAPair] = []

    first_word = rest.split(" ", 1)[0]
    participle = first_word if aux in {"was", "were"} and (first_word.endswith("ed") or first_word in IRREGULAR_SAME_PAST) else None

    for span in spans:
        if span.start < rest_start:
            continue
        local_start, local_end = span.start - rest_start, span.end - rest_start
        words_before = rest[:local_start].split()
        preposition = words_before[-1].lower() if words_before else ""
        if span.kind == "count" and local_start <= 6:
            after = rest[local_end:].split()
            # "X has nine members" -> "How many members does X have?"
            if aux in {"has", "have", "had"} and not words_before:
                do = {"has": "does", "have": "do", "had": "did"}[aux]
                questions.append(QAPair(_finish_question(f"How many {span.noun} {do} {subject_lower} have"), span.text, -1, "how-many"))
                continue
            # "X is 41 metres tall" -> "How tall is X?"
            if aux in {"is", "are", "was", "were"} and len(after) >= 2 and after[1].strip(",.;") in MEASURE_ADJECTIVES:
                adjective = after[1].strip(",.;")
                questions.append(QAPair(_finish_question(f"How {adjective} {aux} {subject_lower}"), f"{span.text} {span.noun}", -1, "how-much"))
                continue
        # "X was founded in 1687 by the cartographer Y" -> "Who founded X?"
        if participle and span.kind == "name" and "by" in [w.lower() for w in words_before[-3:]]:
            if _looks_like_person(span.text, words_before):
                questions.append(QAPair(_finish_question(f"Who {participle} {subject_lower}"), span.text, -1, "passive-agent"))
            continue
        # "X was built in 1754 ..." -> "When was X built?"
        if span.kind in {"year", "date"} and preposition in {"in", "on", "since", "until", "from"}:
            verb_phrase = " ".join(words_before[:-1])
            if participle and len(verb_phrase.split()) <= 6:
                questions.append(QAPair(_finish_question(f"When {aux} {subject_lower} {verb_phrase}"), span.text, -1, "when"))
            continue
        # "X's chief export is blue kelp glass, ..." -> "What is X's chief export?"
        if aux in {"is", "are", "was", "were"} and local_start <= 4 and not participle and span.kind != "count":
            complement_end = re.search(r",|;|\s+which\s|\s+who\s|\s+that\s|$", rest[local_start:])
            answer = rest[local_start : local_start + complement_end.start()].strip() if complement_end else span.text
            wh = "Who" if span.kind == "name" and _looks_like_person(span.text, words_before) else "What"
            answer = answer if len(answer.split()) <= 8 else span.text
            questions.append(QAPair(_finish_question(f"{wh} {aux} {subject_lower}"), answer, -1, "copula"))
    # "X is the tallest tower" with no name in the complement: still a definition question.
    if not questions and aux in {"is", "are", "was", "were"} and not participle:
        complement = re.split(r",|;|\s+which\s|\s+who\s|\s+and\s+(?:was|is|has)\s", rest)[0].strip()
        first_word = complement.split(" ", 1)[0] if complement else ""
        passive = first_word.endswith("ed") or first_word in IRREGULAR_SAME_PAST
        adverb = re.match(r"\d|(?:not|also|still|now|first|then|once|later|often|usually|never|always)\b", complement)
        if 1 <= len(complement.split()) <= 8 and not passive and not adverb:
            questions.append(QAPair(_finish_question(f"What {aux} {subject_lower}"), complement, -1, "copula"))
    return questions


def naming_questions(sentence: str) -> list[QAPair]:
    """"... a town council called the Tidemoot" -> "What is the town council called?"."""
    questions = []
    pattern = rf"\b(?i:a|an|the|its|their|his|her)\s+((?:[a-z\-]+\s+){{0,3}}[a-z\-]+)\s+(called|named|known as)\s+(?:the\s+)?({CAPITAL_WORD}(?:\s+{CAPITAL_WORD})*)"
    for match in re.finditer(pattern, sentence):
        thing, verb, name = match.group(1), match.group(2), _trim_name(match.group(3), 0)[0]
        if name:
            questions.append(QAPair(f"What is the {thing} {verb}?", name, -1, "naming"))
    # Appositions: "its own local currency, the shell mark," -> "What is the local currency?"
    for match in re.finditer(r"\b(?:its|their|the)\s+((?:own\s+)?(?:[a-z\-]+\s+){0,3}[a-z\-]+),\s+the\s+([^,.;]{3,40})[,.;]", sentence):
        thing = match.group(1).replace("own ", "")
        questions.append(QAPair(f"What is the {thing}?", match.group(2), -1, "apposition"))
    return questions


def _starts_with_name(text: str) -> bool:
    first = text.split(" ", 1)[0]
    return first[:1].isupper() and first.lower() not in NOT_NAMES


# ------------------------------------------------------------------------------------------------ generator


def _resolve_pronoun(sentence: str, recent: list[list[Span]], section: str | None) -> str:
    """Replace a sentence-initial pronoun with the name it most likely stands for ("It was built" -> "Tamsin
    Light was built"): the first fitting name of the most recent sentence that has one, else the section."""
    first, _, rest = sentence.partition(" ")
    pronoun = first.lower()
    if pronoun not in SUBJECT_PRONOUNS or pronoun == "they" or not rest:
        return sentence
    wants_person = pronoun in {"he", "she", "his", "her"}
    name = None
    for names in reversed(recent):
        fitting = [span.text for span in names if _looks_like_person(span.text, []) == wants_person]
        if fitting:
            name = fitting[0]
            break
    if name is None:
        if wants_person or not section:
            return sentence
        name = section
    if pronoun in {"its", "his", "her", "their"}:
        name = f"{name}'s"
    return f"{name} {rest}"


class RuleQuestionGenerator:
    """The offline generator: rules over sentences, no model needed."""

    def __init__(self, max_per_sentence: int = 4, seed: int = 0):
        self.max_per_sentence = max_per_sentence
        self.seed = seed

    def generate(self, text: str, title: str) -> list[QAPair]:
        rng = random.Random(self.seed)
        sentences = split_sentences(text)
        known = names_used_mid_sentence(sentences)
        pairs: list[QAPair] = []
        recent_names: list[list[Span]] = []  # names per recent sentence, for pronouns
        for sentence in sentences:
            resolved = _resolve_pronoun(sentence.text, recent_names, sentence.section)
            spans = find_spans(resolved, known)
            candidates = inverted_questions(resolved, spans) + naming_questions(resolved)
            answered = {pair.answer for pair in candidates}
            echo_spans = [span for span in spans if span.text not in answered]
            rng.shuffle(echo_spans)
            for span in echo_spans:
                pair = echo_question(resolved, span)
                if pair:
                    candidates.append(pair)
            names = [span for span in spans if span.kind == "name"]
            if names:
                topic = rng.choice(names).text
                candidates.append(QAPair(f"What does the document say about {topic}?", resolved, -1, "recall"))
            seen: set[str] = set()
            kept = []
            for pair in candidates:
                if pair.question in seen or pair.answer.lower() in pair.question.lower():
                    continue
                seen.add(pair.question)
                kept.append(QAPair(pair.question, pair.answer, sentence.index, pair.form))
            pairs.extend(kept[: self.max_per_sentence])
            recent_names = (recent_names + [names])[-3:]
        return pairs


def limit_repeated_answers(pairs: list[QAPair], max_share: float, seed: int = 0) -> list[QAPair]:
    """``pairs``, in order, with at most ``max_share`` of them (and at least 3) per answer (case ignored); which
    of an answer's questions are left out is a seeded random choice."""
    cap = max(3, round(max_share * len(pairs)))
    positions_by_answer: dict[str, list[int]] = {}
    for position, pair in enumerate(pairs):
        positions_by_answer.setdefault(pair.answer.strip().lower(), []).append(position)
    rng = random.Random(seed)
    left_out: set[int] = set()
    for positions in positions_by_answer.values():
        if len(positions) > cap:
            left_out.update(rng.sample(positions, len(positions) - cap))
    return [pair for position, pair in enumerate(pairs) if position not in left_out]


def unanswerable_questions(pairs: list[QAPair], text: str, count: int, seed: int = 0) -> list[QAPair]:
    """Questions shaped like the document's own but about names, years and numbers it never mentions."""
    rng = random.Random(seed + 1)
    lowered_text = text.lower()
    made: list[QAPair] = []
    candidates = [pair for pair in pairs if pair.form in {"passive-agent", "when", "copula", "echo", "naming"}]
    rng.shuffle(candidates)
    for pair in candidates:
        if len(made) >= count:
            break
        question = _swap_an_entity(pair.question, lowered_text, rng)
        if question and question != pair.question:
            made.append(QAPair(question, NOT_IN_DOCUMENT, -1, "unanswerable", answerable=False))
    return made


FOREIGN_FIRST = ["Marguerite", "Tobias", "Henrike", "Anselm", "Corentin", "Liesel", "Oswin", "Perpetua", "Rudolf", "Sybil"]
FOREIGN_LAST = ["Halloway", "Brenneck", "Dunstable", "Ferrow", "Ilsworth", "Kestane", "Morland", "Pettigrew", "Rookhurst", "Wendle"]


def _swap_an_entity(question: str, lowered_text: str, rng: random.Random) -> str | None:
    names = [m for m in NAME_PATTERN.finditer(question) if m.start() > 0]
    years = list(YEAR_PATTERN.finditer(question))
    if names:
        match = rng.choice(names)
        words = match.group(0).split()
        for _ in range(10):
            if len(words) >= 2 and words[-1].lower() in THING_WORDS:
                replacement = f"{rng.choice(FOREIGN_LAST)} {words[-1]}"
            elif len(words) >= 2:
                replacement = f"{rng.choice(FOREIGN_FIRST)} {rng.choice(FOREIGN_LAST)}"
            else:
                replacement = rng.choice(FOREIGN_LAST)
            if replacement.lower() not in lowered_text:
                return question[: match.start()] + replacement + question[match.end() :]
    if years:
        match = rng.choice(years)
        for _ in range(10):
            year = str(int(match.group(0)) + rng.choice([-37, -23, -11, 13, 29, 41]))
            if year not in lowered_text:
                return question[: match.start()] + year + question[match.end() :]
    return None


class ChatQuestionGenerator:
    """Question-answer pairs from any LangChain chat model (as LIFT asks a large model per passage)."""

    PROMPT = (
        "Write {n} question-answer pairs about the passage below. Each answer must be a short phrase copied "
        "from the passage. Reply with JSON only: a list of objects with keys \"question\" and \"answer\".\n\n"
        "Passage:\n{passage}"
    )

    def __init__(self, chat_model: Any, per_passage: int = 6, passage_sentences: int = 5):
        self.chat_model = chat_model
        self.per_passage = per_passage
        self.passage_sentences = passage_sentences

    def generate(self, text: str, title: str) -> list[QAPair]:
        pairs: list[QAPair] = []
        for passage in passages(text, self.passage_sentences):
            reply = self.chat_model.invoke(self.PROMPT.format(n=self.per_passage, passage=passage.text))
            for item in _parse_json_list(getattr(reply, "content", str(reply))):
                question, answer = str(item.get("question", "")).strip(), str(item.get("answer", "")).strip()
                if question and answer:
                    evidence = next((s.index for s in passage.sentences if answer.lower() in s.text.lower()),
                                    passage.sentences[0].index)
                    pairs.append(QAPair(question, answer, evidence, "chat"))
        return pairs


def _parse_json_list(reply: str) -> list[dict]:
    match = re.search(r"\[.*\]", reply, flags=re.DOTALL)
    if not match:
        return []
    try:
        items = json.loads(match.group(0))
    except json.JSONDecodeError:
        return []
    return [item for item in items if isinstance(item, dict)]
