"""Procedural OCR questions: text that must be read from the image, by the `ocr` tool.

Question types (sampling weight):
- `label_code` (0.25) "What is the code on the label?": a product label (name, `Code
  XX-NNN`, at levels 2-3 a distractor `Ref` code and a weight) -> the code as OCR read it;
- `colored_word` (0.2) "Which word is printed in red?": 2-4 words in distinct colours, one
  per horizontal band -> the red one;
- `largest_word` (0.15) "Which word is printed in the largest font?": 3-4 words in
  capitals, the largest at least 1.5x the size of any other -> the word whose OCR box is
  tallest;
- `poster_title` (0.2) "What is the title of the poster?": a poster whose title is its top
  line, set at least 1.6x larger than the others (date, place, time) -> the top line read
  (box heights do not rank mixed-case lines reliably: ascenders and descenders change them
  by ~1.3x);
- `line_number` (0.2) "On the board, what number follows Paris?": a board of name/number
  rows -> the number on the named row.

Difficulty sets the layout and so the plan's reading step:
1. one item on 320x240, text 16-24 px (titles larger): `ocr(img_0)`;
2. two items side by side on 480x240, the question names one ("on the left"), text 14-20
   px: `ocr(img_0, box=<that half>)`;
3. four items in the quadrants of 480x360 ("the top-right label"), text 12-16 px:
   `zoom(img_0, box=<that quadrant>, factor=2)` then `ocr(img_1)`.
The region of levels 2-3 is a half or quarter of the canvas, found from the question's
words and the image size, never from where the text was drawn. For `colored_word` the plan
scans the region's bands top to bottom with `dominant_colors` until one is the asked colour,
then reads that band with `ocr` (a band is 1/n of the region's height for n words: the
words' rows, as the image shows). Every answer is what `ocr` returned (`bindings` parses its
lines), never the generator's ground truth.

Only synthetic images of `render_text` (Aileron, antialiased) are used, and the
vocabulary is constrained to what rapidocr reads exactly there: sizes >= 12 px, codes of
letters without I, O, Q, S, Z, B (read as 1, 0, 0, 5, 2, 8) and digits 2-9, dictionary
words and names without 0/O or 1/l/I look-alikes standing alone, numbers without a '1'
after another digit (`render_text.misread_prone`: "21" once read "2 1"). Words that share a row are
never placed close enough for OCR to merge them.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vista_jax.env.tasks.base import (PlanStep, Task, check_difficulty, draw_difficulty,
                                      register_family)
from vista_jax.env.tasks.render_text import (PANEL_FILLS, Panel, TextLine, line_height,
                                             misread_prone, panel_size, render_text_image,
                                             text_width)

QUESTION_TYPES = ("label_code", "colored_word", "largest_word", "poster_title", "line_number")
QUESTION_WEIGHTS = (0.25, 0.2, 0.15, 0.2, 0.2)

CODE_LETTERS = "ACDEFGHJKMNPRTUVWXY"  # no I O Q S Z B: OCR reads them as digits
CODE_DIGITS = "23456789"  # no 0 1: read as O, l
PRODUCTS = ("Hammer", "Kettle", "Blanket", "Lantern", "Teapot", "Backpack", "Printer",
            "Toaster", "Compass", "Helmet", "Jacket", "Speaker", "Camera", "Blender", "Wrench",
            "Candle", "Heater", "Mixer", "Drill", "Router")
WORDS = ("Maple", "River", "Tiger", "Cloud", "Stone", "Ember", "Frost", "Lemon", "Ocean",
         "Garden", "Rocket", "Forest", "Violet", "Silver", "Harbor", "Canyon", "Meadow",
         "Copper", "Thunder", "Pepper", "Falcon", "Orchid", "Summit", "Breeze", "Marble",
         "Velvet", "Comet", "Walnut", "Cactus", "Dragon", "Panda", "Mango", "Cherry", "Pebble")
TITLE_FIRST = ("Summer", "Winter", "Spring", "Autumn", "City", "Harbor", "Garden", "Night",
               "Art", "Jazz", "Film", "Book", "Music", "Science", "Street", "Craft", "Food",
               "Dance")
TITLE_SECOND = ("Fair", "Festival", "Market", "Parade", "Show", "Week", "Expo", "Concert",
                "Party", "Gala", "Tour", "Club", "Sale", "Day", "Night", "Fest")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
PLACES = ("City Hall", "Town Square", "Main Street", "Park Stage", "Harbor Front",
          "Old Mill", "River Park", "Market Hall", "North Gate")
POSTER_EXTRAS = ("Free entry", "All welcome", "Family friendly", "Tickets at the door",
                 "Food and drinks")
BOARD_HEADERS = ("Departures", "Gates", "Scores", "Rooms", "Platforms", "Arrivals")
NAMES = ("Paris", "Rome", "Madrid", "Berlin", "Vienna", "Prague", "Dublin", "Lisbon",
         "Athens", "Warsaw", "Zurich", "Munich", "Geneva", "Naples", "Venice", "Seville",
         "Bergen", "Hamburg", "Bremen", "Dresden", "Krakow", "Malaga", "Verona", "Nantes")
WORD_COLORS = ("red", "blue", "green", "orange", "purple")  # far apart in hue on white
# Numbers drawn: none with a '1' after another digit (render_text.misread_prone).
BOARD_NUMBERS = tuple(k for k in range(2, 99) if not misread_prone(str(k)))
DAYS = tuple(k for k in range(2, 29) if not misread_prone(str(k)))

# Layout per level: canvas size and the regions a question can name, with their phrases.
CANVAS = {1: (320, 240), 2: (480, 240), 3: (480, 360)}
REGION_PHRASES = {  # region -> (adjective before "label", place after it)
    "all": ("", ""),
    "left": ("left ", " on the left"), "right": ("right ", " on the right"),
    "top-left": ("top-left ", " at the top left"), "top-right": ("top-right ", " at the top right"),
    "bottom-left": ("bottom-left ", " at the bottom left"),
    "bottom-right": ("bottom-right ", " at the bottom right"),
}
ZOOM = 2  # level 3 zoom factor


def regions(level: int) -> dict[str, tuple[int, int, int, int]]:
    """The regions of a level's canvas a question can name: [x0, y0, x1, y1) boxes."""
    w, h = CANVAS[level]
    if level == 1:
        return {"all": (0, 0, w, h)}
    if level == 2:
        return {"left": (0, 0, w // 2, h), "right": (w // 2, 0, w, h)}
    return {"top-left": (0, 0, w // 2, h // 2), "top-right": (w // 2, 0, w, h // 2),
            "bottom-left": (0, h // 2, w // 2, h), "bottom-right": (w // 2, h // 2, w, h)}


QUESTIONS = {
    "label_code": ("What is the code on the {adj}label?", "What code is printed on the {adj}label?",
                   "Read the product code on the label{place}.",
                   "Which code does the label{place} show?"),
    "colored_word": ("Which word is printed in {color}{region}?",
                     "What word is written in {color}{region}?",
                     "Read the {color} word{region}."),
    "largest_word": ("Which word is printed in the largest font{region}?",
                     "What is the biggest word{region}?",
                     "Which word has the largest letters{region}?"),
    "poster_title": ("What is the title of the {adj}poster?", "What event does the {adj}poster "
                     "announce?", "Read the title of the poster{place}."),
    "line_number": ("On the {adj}board, what number follows {name}?",
                    "Which number is next to {name} on the board{place}?",
                    "The board{place} lists {name}: what number does it show?"),
}
REGION_AREA = {"all": "", "left": " in the left half", "right": " in the right half",
               "top-left": " in the top-left quarter", "top-right": " in the top-right quarter",
               "bottom-left": " in the bottom-left quarter",
               "bottom-right": " in the bottom-right quarter"}

THINK_ZOOM = ("Zoom in on the {region} part.", "Enlarge the {region} quarter first.",
              "Look closer at the {region} quarter.")
THINK_READ = {
    "label_code": ("Read the label's text.", "OCR the label.", "Read the text to find the code."),
    "colored_word": ("Row {band} is {color}: read it.", "The {color} word is in row {band}; "
                     "OCR it.", "Read the {color} row."),
    "largest_word": ("Read the words and compare their heights.", "OCR the words; the tallest "
                     "box is the largest.", "Read all the words."),
    "poster_title": ("Read the poster.", "OCR the poster; the title is the top line.",
                     "Read the poster's text."),
    "line_number": ("Read the board.", "OCR the board's rows.", "Read the rows of the board."),
}
THINK_BOX = ("Only the {region} half matters.", "Read just the {region} half.",
             "Look at the {region} side only.")
THINK_COLOR = ("Check the colour of row {band}.", "What colour is row {band}?",
               "Row {band}: which colour?")
THINK_FINAL = {
    "label_code": ("The label reads Code {{code}}.", "The code is {{code}}."),
    "colored_word": ("The {color} word reads {{word}}.", "It says {{word}}."),
    "largest_word": ("{{word}} has the tallest box.", "The largest word is {{word}}."),
    "poster_title": ("The top line is {{title}}.", "The title reads {{title}}."),
    "line_number": ("{{name_read}} is followed by {{number}}.", "The row reads {{row}}."),
}
ANSWER_TEMPLATE = {"label_code": "{code}", "colored_word": "{word}", "largest_word": "{word}",
                   "poster_title": "{title}", "line_number": "{number}"}


# ----------------------------------------------------------------------------------------
# Reading OCR results (shared with math_word).
# ----------------------------------------------------------------------------------------

_LINE_RE = re.compile(r"^(.*\S)\s*@\s*\[(-?\d+),\s*(-?\d+),\s*(-?\d+),\s*(-?\d+)\]\s*$")
NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


@dataclasses.dataclass(frozen=True)
class OcrLine:
    text: str
    box: tuple[int, int, int, int]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


def ocr_lines(result: Mapping[str, Any]) -> list[OcrLine]:
    """The lines of an `ocr` result, in its order: from `data["lines"]`, or parsed from its
    `text @ [x0, y0, x1, y1]` lines. Raises KeyError for a failed call."""
    if not result.get("ok", True):
        raise KeyError("the ocr call failed")
    data = result.get("data") or {}
    if data.get("lines") is not None:
        return [OcrLine(str(ln["text"]), tuple(int(v) for v in ln["box"]))
                for ln in data["lines"]]
    lines = []
    for raw in str(result.get("text", "")).splitlines():
        m = _LINE_RE.match(raw)
        if m:
            lines.append(OcrLine(m.group(1), tuple(int(m.group(i)) for i in range(2, 6))))
    return lines


def lines_in(lines: Sequence[OcrLine], region: Sequence[int] | None) -> list[OcrLine]:
    """The lines whose box centre lies in `region` [x0, y0, x1, y1) (all when None): a read
    of the whole image narrowed to the part the question names."""
    if region is None:
        return list(lines)
    x0, y0, x1, y1 = region
    return [ln for ln in lines if x0 <= (ln.box[0] + ln.box[2]) / 2 < x1
            and y0 <= (ln.box[1] + ln.box[3]) / 2 < y1]


def ocr_rows(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Lines that share a row (each one's vertical centre inside the other's box) joined
    left to right with a space, rows top to bottom: OCR may split a row ("Apple" ... "2.50")
    or not."""
    rows: list[list[OcrLine]] = []
    for ln in sorted(lines, key=lambda l: (l.box[1] + l.box[3]) / 2):
        cy = (ln.box[1] + ln.box[3]) / 2
        for row in rows:
            y0 = min(l.box[1] for l in row)
            y1 = max(l.box[3] for l in row)
            rcy = (y0 + y1) / 2
            if y0 <= cy <= y1 and ln.box[1] <= rcy <= ln.box[3]:
                row.append(ln)
                break
        else:
            rows.append([ln])
    out = []
    for row in rows:
        row.sort(key=lambda l: l.box[0])
        out.append(OcrLine(" ".join(l.text for l in row),
                           (min(l.box[0] for l in row), min(l.box[1] for l in row),
                            max(l.box[2] for l in row), max(l.box[3] for l in row))))
    return out


def format_number(x: float) -> str:
    """`41.0` -> "41", `2.5` -> "2.5": how the expert writes numbers."""
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.10g}"


# ----------------------------------------------------------------------------------------
# Items: what one region holds.
# ----------------------------------------------------------------------------------------

def _code(rng: random.Random) -> str:
    letters = "".join(rng.choice(CODE_LETTERS) for _ in range(2))
    return f"{letters}-{''.join(rng.choice(CODE_DIGITS) for _ in range(rng.randint(3, 4)))}"


def _sizes(level: int) -> tuple[int, int]:
    """(smallest, largest) body text size of a level."""
    return {1: (16, 24), 2: (14, 20), 3: (12, 16)}[level]


def _place(rng: random.Random, area: tuple[int, int, int, int], w: int, h: int,
           margin: int = 6) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = area
    if w + 2 * margin > x1 - x0 or h + 2 * margin > y1 - y0:
        raise ValueError(f"a {w}x{h} panel does not fit in {list(area)}")
    x = rng.randint(x0 + margin, x1 - margin - w)
    y = rng.randint(y0 + margin, y1 - margin - h)
    return (x, y, x + w, y + h)


def _fit(rng: random.Random, area, lines_for_size, level: int, *, padding: int = 8,
         spacing: float = 0.5, **panel_kw) -> Panel:
    """A panel of `lines_for_size(size)` at a random place in `area`, at the largest size of
    the level's range (from a random one downwards) that fits."""
    lo, hi = _sizes(level)
    for size in range(rng.randint(lo, hi), lo - 1, -1):
        lines = lines_for_size(size)
        w, h = panel_size(lines, padding=padding, spacing=spacing)
        x0, y0, x1, y1 = area
        if w + 12 <= x1 - x0 and h + 12 <= y1 - y0:
            return Panel(_place(rng, area, w, h), lines, padding=padding, spacing=spacing,
                         **panel_kw)
    raise ValueError(f"no size in {lo}..{hi} fits {list(area)}")


def _label(rng: random.Random, area, level: int, facts: dict) -> list[Panel]:
    product, code = rng.choice(PRODUCTS), _code(rng)
    extras = []
    if level >= 2:
        ref = _code(rng)
        while ref == code:
            ref = _code(rng)
        extras = [f"Ref {ref}", f"Weight {rng.randint(2, 9)} kg"]
        rng.shuffle(extras)
    code_line = rng.choice(("Code {}", "Code: {}")).format(code)
    body = [code_line, *extras]
    rng.shuffle(body)

    def lines(size: int) -> tuple[TextLine, ...]:
        return (TextLine(product, min(size + 6, 36), align="center"),
                *(TextLine(t, size) for t in body))

    panel = _fit(rng, area, lines, level, fill=rng.choice(tuple(PANEL_FILLS)), outline="black")
    facts.update(answer=code, product=product, lines=[ln.text for ln in panel.lines])
    return [panel]


def _poster(rng: random.Random, area, level: int, facts: dict) -> list[Panel]:
    first = rng.choice(TITLE_FIRST)
    title = f"{first} {rng.choice([s for s in TITLE_SECOND if s != first])}"
    body = [f"{rng.choice(MONTHS)} {rng.choice(DAYS)}", rng.choice(PLACES)]
    if level >= 2:
        body.append(rng.choice(POSTER_EXTRAS))
    if rng.random() < 0.5:
        body.append(f"Starts {rng.randint(2, 9)} pm")
    rng.shuffle(body)

    def lines(size: int) -> tuple[TextLine, ...]:
        big = min(round(size * rng.uniform(1.6, 1.9)), 40)
        return (TextLine(title, big, align="center"),
                *(TextLine(t, size, align="center") for t in body))

    panel = _fit(rng, area, lines, level, fill=rng.choice([f for f in PANEL_FILLS if f != "white"]),
                 outline=rng.choice(("black", None)))
    facts.update(answer=title, lines=[ln.text for ln in panel.lines])
    return [panel]


def _board(rng: random.Random, area, level: int, facts: dict) -> list[Panel]:
    n = {1: 3, 2: 4, 3: 4}[level] + rng.randint(0, 1)
    names = rng.sample(NAMES, n)
    numbers = rng.sample(BOARD_NUMBERS, n)
    header = rng.choice(BOARD_HEADERS)

    def lines(size: int) -> tuple[TextLine, ...]:
        return (TextLine(header, size + 2, align="center"),
                *(TextLine(a, size, right=str(b)) for a, b in zip(names, numbers)))

    panel = _fit(rng, area, lines, level, spacing=0.4, fill=rng.choice(tuple(PANEL_FILLS)),
                 outline="black")
    asked = rng.randrange(n)
    facts.update(answer=str(numbers[asked]), name=names[asked], rows=dict(zip(names, numbers)))
    return [panel]


def _bands(area, n: int) -> list[tuple[int, int, int, int]]:
    x0, y0, x1, y1 = area
    edges = [y0 + round(i * (y1 - y0) / n) for i in range(n + 1)]
    return [(x0, a, x1, b) for a, b in zip(edges, edges[1:])]


def _word_panels(rng: random.Random, area, words: Sequence[str], sizes: Sequence[int],
                 colors: Sequence[str], crisp: bool = False) -> list[Panel]:
    """One word per band of `area`, at a random place inside its band (3 px clear of its
    edges), so that OCR never joins two words into one line."""
    panels = []
    for band, word, size, color in zip(_bands(area, len(words)), words, sizes, colors):
        w, h = text_width(word, size) + 2, line_height(size) + 2
        bx0, by0, bx1, by1 = band
        if w + 12 > bx1 - bx0 or h + 6 > by1 - by0:
            raise ValueError(f"word {word!r} at {size} px does not fit its band {list(band)}")
        x = rng.randint(bx0 + 6, bx1 - 6 - w)
        y = rng.randint(by0 + 3, by1 - 3 - h)
        panels.append(Panel((x, y, x + w, y + h), (TextLine(word, size, color, crisp=crisp),),
                            padding=1))
    return panels


def _colored_words(rng: random.Random, area, level: int, facts: dict) -> list[Panel]:
    n = {1: 2, 2: 3, 3: 3}[level] + rng.randint(0, 1)
    words = rng.sample(WORDS, n)
    colors = rng.sample(WORD_COLORS, n)
    lo, hi = _sizes(level)
    size = rng.randint(lo, hi)
    asked = rng.randrange(n)
    facts.update(answer=words[asked], color=colors[asked], band=asked, n_bands=n,
                 words=dict(zip(words, colors)))
    return _word_panels(rng, area, words, [size] * n, colors, crisp=True)


def _sized_words(rng: random.Random, area, level: int, facts: dict) -> list[Panel]:
    n = 3 if level == 1 else rng.randint(3, 4)
    # capitals only: a box's height then grows with the font size alone (mixed case boxes
    # vary ~1.3x with ascenders and descenders, measured: a 1.5x larger word's box was
    # only 1.11x taller than a smaller word's)
    words = [w.upper() for w in rng.sample(WORDS, n)]
    lo, hi = _sizes(level)
    small = [rng.randint(lo, hi) for _ in range(n - 1)]
    big = min(math.ceil(max(small) * rng.uniform(1.5, 1.8)), 2 * hi)
    sizes = [big, *small]
    order = list(range(n))
    rng.shuffle(order)
    words = [words[i] for i in order]
    sizes = [sizes[i] for i in order]
    color = rng.choice(("black", "blue", "brown"))
    facts.update(answer=words[order.index(0)], sizes=dict(zip(words, sizes)))
    return _word_panels(rng, area, words, sizes, [color] * n)


ITEMS = {"label_code": _label, "poster_title": _poster, "line_number": _board,
         "colored_word": _colored_words, "largest_word": _sized_words}


# ----------------------------------------------------------------------------------------
# The family.
# ----------------------------------------------------------------------------------------

def _scaled(box, origin, factor: int) -> list[int]:
    """`box` in the frame of a zoom of the region at `origin` by `factor`."""
    ox, oy = origin
    return [(box[0] - ox) * factor, (box[1] - oy) * factor,
            (box[2] - ox) * factor, (box[3] - oy) * factor]


class OCRText:
    name = "ocr_text"
    gym_name = "OCR"
    tools = ("ocr", "zoom", "crop", "dominant_colors")

    def generate(self, seed: int, split: str, difficulty: int | None = None) -> Task:
        check_difficulty(difficulty)
        level = draw_difficulty(seed) if difficulty is None else difficulty
        rng = random.Random(f"ocr_text/{seed}/{level}")
        qtype = rng.choices(QUESTION_TYPES, weights=QUESTION_WEIGHTS)[0]
        areas = regions(level)
        target = rng.choice(sorted(areas))
        panels: list[Panel] = []
        facts: dict[str, Any] = {}
        others: list[dict] = []
        for name in sorted(areas):
            item_facts: dict[str, Any] = {}
            panels += ITEMS[qtype](rng, areas[name], level, item_facts)
            if name == target:
                facts = item_facts
            else:
                others.append(item_facts)
        image, placed = render_text_image(panels, CANVAS[level])

        adj, place = REGION_PHRASES[target]
        question = rng.choice(QUESTIONS[qtype]).format(
            adj=adj, place=place, region=REGION_AREA[target], color=facts.get("color", ""),
            name=facts.get("name", ""))
        question = question[0].upper() + question[1:]

        region = list(areas[target])
        plan: list[PlanStep] = []
        roles: list[str] = []
        image_arg, origin, factor = "img_0", (region[0], region[1]), 1
        if level == 3:
            zoom = PlanStep("zoom", {"image": "img_0", "box": region, "factor": ZOOM},
                            rng.choice(THINK_ZOOM).format(region=target),
                            key_args=("image", "box"),
                            alternatives=(PlanStep("crop", {"image": "img_0", "box": region}, "",
                                                   key_args=("image", "box")),))
            plan.append(zoom)
            roles.append("zoom")
            image_arg, factor = "img_1", ZOOM
        read_args: dict[str, Any] = {"image": image_arg}
        alternatives: tuple[PlanStep, ...] = ()
        think = rng.choice(THINK_READ[qtype])
        if qtype == "colored_word":
            bands = _bands(areas[target], facts["n_bands"])
            frame = [_scaled(b, origin, factor) if level == 3 else list(b) for b in bands]
            for i in range(facts["band"] + 1):
                plan.append(PlanStep("dominant_colors",
                                     {"image": image_arg, "box": frame[i], "k": 1},
                                     rng.choice(THINK_COLOR).format(band=i + 1),
                                     key_args=("image", "box")))
                roles.append(f"color:{i}")
            read_args["box"] = frame[facts["band"]]
            think = think.format(band=facts["band"] + 1, color=facts["color"])
        elif level == 2:
            read_args["box"] = region
            think = rng.choice(THINK_BOX).format(region=target) + " " + think
            alternatives = (PlanStep("ocr", {"image": "img_0"}, "", key_args=("image", "box")),)
        plan.append(PlanStep("ocr", read_args, think, key_args=("image", "box"),
                             alternatives=alternatives))
        roles.append("read")

        answer_type = "number" if qtype == "line_number" else "text"
        return Task(
            task_id=f"{self.name}/{split}/{seed}", family=self.name, seed=seed, split=split,
            question=question, images=(image,), answer=facts["answer"], answer_type=answer_type,
            reference_plan=tuple(plan), answer_template=ANSWER_TEMPLATE[qtype],
            final_think=rng.choice(THINK_FINAL[qtype]).format(color=facts.get("color", "")),
            difficulty=level,
            meta={"question_type": qtype, "level": level, "region": target,
                  "region_box": region, "roles": roles, "facts": facts, "distractors": others,
                  "texts": [(p.text, list(p.box)) for p in placed]})

    def bindings(self, task: Task, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """From the results so far: `colors` (band -> colour name dominant_colors gave); once
        the read step ran, per type `code`, `word`, `title`, `name_read`/`number`/`row`.
        A value the results do not support (no Code line, the last band checked is not the
        asked colour) is left out, so the expert stops instead of guessing."""
        roles = task.meta["roles"]
        qtype = task.meta["question_type"]
        out: dict[str, Any] = {"colors": {}}
        for role, result in zip(roles, results):
            if role.startswith("color:") and result.get("ok"):
                colors = (result.get("data") or {}).get("colors") or []
                if colors:
                    out["colors"][int(role.split(":")[1])] = colors[0]["name"]
            elif role == "read" and result.get("ok"):
                # level 2 reads its half of img_0; a read of all of img_0 (the plan's
                # alternative) is narrowed to that half, so both give the same bindings
                region = task.meta["region_box"] if task.difficulty == 2 else None
                lines = lines_in(ocr_lines(result), region)
                out.update(_read_bindings(task, qtype, lines, out["colors"]))
        return out


def _read_bindings(task: Task, qtype: str, lines: list[OcrLine],
                   colors: Mapping[int, str]) -> dict[str, Any]:
    if not lines:
        return {}
    rows = ocr_rows(lines)
    if qtype == "label_code":
        for row in rows:
            m = re.search(r"\bcode\b\s*[:.]?\s*([A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)", row.text,
                          re.IGNORECASE)
            if m:
                return {"code": m.group(1)}
        return {}
    if qtype == "colored_word":
        band = task.meta["facts"]["band"]
        if colors.get(band) != task.meta["facts"]["color"]:
            return {}
        return {"word": " ".join(r.text for r in rows)}
    if qtype == "largest_word":
        return {"word": max(lines, key=lambda l: l.height).text}
    if qtype == "poster_title":  # a poster's title is its top line
        return {"title": rows[0].text}
    # line_number: the row naming the asked name, and the first number after it
    name = task.meta["facts"]["name"]
    for row in rows:
        m = re.search(rf"\b{re.escape(name)}\b", row.text, re.IGNORECASE)
        if m:
            num = NUMBER_RE.search(row.text, m.end())
            if num:
                return {"name_read": m.group(0), "number": num.group(0), "row": row.text}
    return {}


OCR_TEXT = register_family(OCRText())
