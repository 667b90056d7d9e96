"""Procedural math word problems whose numbers are in the image (read with `ocr`).

Question types (sampling weight) and reference plans (`read` = `ocr(img_0)`, or at level 3
`ocr(img_0, box=<the named half>)`):
- `price_total` (0.25) a price list; "How much do 3 apples and 2 pears cost?" -> read ->
  `calculator("3*2.5 + 2*1.75")` -> the value;
- `equation` (0.2) a board with a linear equation; "Solve for x." -> read ->
  `solve_equation(<the line with '='>, variables=[x])` -> the solution;
- `simplify` (0.2) a board with an expression; "Simplify the expression shown." -> read ->
  `simplify(<the expression line>)` -> its exact form (answer_type "expression", verified by
  sympy equivalence and a simplest-form rule, `meta["simplest_form"]`: the expression as
  shown is equivalent but not an answer);
- `percent` (0.15) a price tag with a discount (and at level 3 a tax): the saving, the sale
  price, the price after discount and tax -> read -> `calculator` -> the value;
- `rate` (0.2) a travel sign: distance from speed and time, average speed from distance
  and time, fuel from consumption per 100 km and trip length -> read -> `calculator`.

Difficulty: level 1 small integers and one step (3 price rows, one item bought; ax + b = c;
like terms; the saving); level 2 decimals and two items (4-5 rows), a(x + b) = c and
ax + b = cx + d, brackets, the sale price, average speed; level 3 puts two signs of the
same kind side by side on a 480x240 canvas ("Use the price list on the right.") and asks
for two or three items, a(x - b) = cx + d, (x + a)(x + b) - x^2, discount then tax, fuel.

Every number the plan computes with is one `ocr` returned (`bindings` parses its rows into
label -> number, and the equation / expression line as read), never the generator's ground
truth. Images are `render_text` signs (Aileron, >= 14 px); the vocabulary avoids what OCR
may misread: no currency signs; variables x, y, n only (not t, which looks like +); no
number with a '1' after another digit (signs are drawn again until none has one: OCR once
read "Distance: 210 km" as "2 10", `render_text.misread_prone`).
Expressions use calculator notation (x^2, 3(x + 4)), which the math tools parse.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import sympy

from vista_jax.env.tasks.base import (PlanStep, Task, check_difficulty, draw_difficulty,
                                      register_family)
from vista_jax.env.tasks.ocr_text import (NUMBER_RE, OcrLine, format_number, lines_in,
                                          ocr_lines, ocr_rows)
from vista_jax.env.tasks.render_text import (PANEL_FILLS, Panel, TextLine, misread_prone,
                                             panel_size, render_text_image)

QUESTION_TYPES = ("price_total", "equation", "simplify", "percent", "rate")
QUESTION_WEIGHTS = (0.25, 0.2, 0.2, 0.15, 0.2)

ITEMS = {  # shown name -> plural used in questions
    "Apple": "apples", "Pear": "pears", "Lemon": "lemons", "Mango": "mangoes",
    "Peach": "peaches", "Banana": "bananas", "Melon": "melons", "Bagel": "bagels",
    "Muffin": "muffins", "Cookie": "cookies", "Donut": "donuts", "Cake": "cakes",
    "Candle": "candles", "Pen": "pens", "Notebook": "notebooks", "Towel": "towels",
    "Cup": "cups", "Plate": "plates", "Bowl": "bowls", "Sandwich": "sandwiches",
}
LIST_HEADERS = ("Price list", "Market prices", "Today", "Menu", "Shop prices", "Our prices")
PRODUCTS = ("Jacket", "Lamp", "Kettle", "Backpack", "Helmet", "Speaker", "Camera", "Blender",
            "Teapot", "Heater")
VEHICLES = ("Train", "Bus", "Car", "Ferry", "Truck", "Coach")
VARIABLES = ("x", "y", "n")
CANVAS = {1: (320, 240), 2: (320, 240), 3: (480, 240)}
SIZES = {1: (18, 24), 2: (15, 20), 3: (14, 18)}
THINGS = {"price_total": "price list", "equation": "board", "simplify": "board",
          "percent": "price tag", "rate": "sign"}

THINK_READ = {
    "price_total": ("Read the prices.", "OCR the price list.", "I need the prices: read them."),
    "equation": ("Read the equation.", "OCR the board.", "First read the equation."),
    "simplify": ("Read the expression.", "OCR the board.", "First read the expression."),
    "percent": ("Read the price tag.", "OCR the tag.", "Read the price and the percentages."),
    "rate": ("Read the sign.", "OCR the sign's numbers.", "First read the sign."),
}
THINK_BOX = ("Only the {side} {thing} matters.", "Use the {thing} on the {side}.",
             "Look at the {side} half.")
THINK_COMPUTE = {
    "price_total": ("Compute {expr}.", "Multiply and add: {expr}.", "Total = {expr}."),
    "equation": ("Solve {{eq}} for {v}.", "Now solve for {v}.", "Solve it."),
    "simplify": ("Simplify {{expr}}.", "Now simplify it.", "Simplify the expression."),
    "percent": ("Compute {expr}.", "Apply the percentages: {expr}.", "Work it out: {expr}."),
    "rate": ("Compute {expr}.", "Work it out: {expr}.", "So {expr}."),
}
THINK_FINAL = {
    "price_total": ("The total is {result}.", "It costs {result}."),
    "equation": ("{v} = {result}.", "The solution is {v} = {result}."),
    "simplify": ("It simplifies to {result}.", "Simplest form: {result}."),
    "percent": ("The answer is {result}.", "That gives {result}."),
    "rate": ("The answer is {result}.", "That gives {result}."),
}


def _label(text: str) -> str:
    """A row's label: the text before its first number, lower case, letters and spaces."""
    m = NUMBER_RE.search(text)
    head = text[:m.start()] if m else text
    return " ".join(re.sub(r"[^a-z ]", " ", head.lower()).split())


def row_numbers(rows: Sequence[OcrLine]) -> dict[str, str]:
    """{label: first number after it, as the expert writes it} for rows that hold a number
    ("Apple 2.50" -> apple: "2.5", "Discount: 25%" -> discount: "25")."""
    out: dict[str, str] = {}
    for row in rows:
        m = NUMBER_RE.search(row.text)
        label = _label(row.text)
        if m and label and label not in out:
            out[label] = format_number(float(m.group()))
    return out


def _money(rng: random.Random, level: int) -> Decimal:
    if level == 1:
        return Decimal(rng.randint(2, 9))
    if level == 2:
        return Decimal(rng.randint(4, 40)) / 4  # 1.00 .. 10.00 in quarters
    return Decimal(rng.randint(10, 200)) / 20  # 0.50 .. 10.00 in 0.05 steps


def _show_money(x: Decimal) -> str:
    return str(int(x)) if x == int(x) else f"{x:.2f}"


def _fmt(x: Fraction | Decimal | int) -> str:
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else format_number(float(x))


class MathWord:
    name = "math_word"
    gym_name = "MathWord"
    tools = ("ocr", "calculator", "solve_equation", "simplify")

    def generate(self, seed: int, split: str, difficulty: int | None = None) -> Task:
        check_difficulty(difficulty)
        level = draw_difficulty(seed) if difficulty is None else difficulty
        rng = random.Random(f"math_word/{seed}/{level}")
        qtype = rng.choices(QUESTION_TYPES, weights=QUESTION_WEIGHTS)[0]
        maker = functools.partial(self._drawable, getattr(self, f"_{qtype}"), rng, level)
        lines, question, compute, answer, answer_type, facts = maker()
        w, h = CANVAS[level]
        panels_lines = [lines]
        side = None
        if level == 3:  # a second sign of the same kind beside it
            side = rng.choice(("left", "right"))
            distractor = maker()[0]
            panels_lines = [lines, distractor] if side == "left" else [distractor, lines]
            areas = [(0, 0, w // 2, h), (w // 2, 0, w, h)]
        else:
            areas = [(0, 0, w, h)]
        panels = [self._panel(rng, ls, area, level) for ls, area in zip(panels_lines, areas)]
        image, placed = render_text_image(panels, (w, h))

        read_args: dict[str, Any] = {"image": "img_0"}
        think = rng.choice(THINK_READ[qtype])
        alternatives: tuple[PlanStep, ...] = ()
        if side is not None:
            read_args["box"] = [0, 0, w // 2, h] if side == "left" else [w // 2, 0, w, h]
            thing = THINGS[qtype]
            think = rng.choice(THINK_BOX).format(side=side, thing=thing) + " " + think
            alternatives = (PlanStep("ocr", {"image": "img_0"}, "", key_args=("image", "box")),)
            question = f"Use the {thing} on the {side}. {question}"
        plan = (PlanStep("ocr", read_args, think, key_args=("image", "box"),
                         alternatives=alternatives), compute)
        result = {"calculator": "{calc}", "solve_equation": "{solution}",
                  "simplify": "{simplified}"}[compute.tool]
        final = rng.choice(THINK_FINAL[qtype]).format(result=result, v=facts.get("var", "x"))
        return Task(
            task_id=f"{self.name}/{split}/{seed}", family=self.name, seed=seed, split=split,
            question=question, images=(image,), answer=answer, answer_type=answer_type,
            reference_plan=plan, answer_template=result, final_think=final, difficulty=level,
            meta={"question_type": qtype, "level": level, "side": side,
                  "texts": [(p.text, list(p.box)) for p in placed], **facts})

    @staticmethod
    def _drawable(maker, rng: random.Random, level: int):
        """`maker(rng, level)`, drawn again until no text of its sign is misread-prone (a
        '1' after a digit, which OCR may split off: `render_text.misread_prone`)."""
        for _ in range(200):
            made = maker(rng, level)
            if not any(misread_prone(t) or (r is not None and misread_prone(r))
                       for t, r, _ in made[0]):
                return made
        raise RuntimeError(f"math_word: {maker.__name__} drew no readable sign in 200 tries")

    def _panel(self, rng: random.Random, lines: Sequence[tuple[str, str | None, str]],
               area: tuple[int, int, int, int], level: int) -> Panel:
        """A sign of (text, right text, align) rows, the first a header 4 px larger, at the
        largest size of the level's range (from a random one down) that fits `area`, at a
        random place in it."""
        lo, hi = SIZES[level]
        fill = rng.choice(tuple(PANEL_FILLS))
        for size in range(rng.randint(lo, hi), lo - 1, -1):
            tl = tuple(TextLine(t, size + (4 if i == 0 else 0), align=a, right=r)
                       for i, (t, r, a) in enumerate(lines))
            pw, ph = panel_size(tl, padding=10, spacing=0.45)
            x0, y0, x1, y1 = area
            if pw + 12 <= x1 - x0 and ph + 12 <= y1 - y0:
                x = rng.randint(x0 + 6, x1 - 6 - pw)
                y = rng.randint(y0 + 6, y1 - 6 - ph)
                return Panel((x, y, x + pw, y + ph), tl, fill=fill, outline="black", padding=10,
                             spacing=0.45)
        raise ValueError(f"sign {lines} does not fit in {list(area)}")

    # --- question types: (lines, question, compute step, answer, answer_type, facts) -----

    def _price_total(self, rng, level):
        n_rows = {1: 3, 2: rng.randint(4, 5), 3: rng.randint(4, 5)}[level]
        names = rng.sample(sorted(ITEMS), n_rows)
        prices = {name: _money(rng, level) for name in names}
        n_buy = {1: 1, 2: 2, 3: rng.randint(2, 3)}[level]
        bought = rng.sample(names, n_buy)
        qty = {name: rng.randint(2, 6) for name in bought}
        items = [f"{qty[b]} {ITEMS[b]}" for b in bought]
        items_text = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        question = rng.choice(("How much do {i} cost?", "What is the price of {i}?",
                               "What do {i} cost in total?")).format(i=items_text)
        expr = " + ".join(f"{qty[b]}*{{n[{b.lower()}]}}" for b in bought)
        compute = PlanStep("calculator", {"expression": expr},
                           rng.choice(THINK_COMPUTE["price_total"]).format(expr=expr),
                           key_args=("expression",))
        answer = sum(qty[b] * prices[b] for b in bought)
        lines = [(rng.choice(LIST_HEADERS), None, "center"),
                 *((name, _show_money(prices[name]), "left") for name in names)]
        return lines, question, compute, _fmt(answer), "number", {
            "prices": {k: str(v) for k, v in prices.items()}, "bought": qty}

    def _equation(self, rng, level):
        v = rng.choice(VARIABLES)
        sol = rng.randint(1, 12)
        a = rng.randint(2, 9)
        if level == 1:
            b = rng.randint(1, 20)
            if rng.random() < 0.5:
                text = f"{a}{v} + {b} = {a * sol + b}"
            else:
                b = rng.randint(1, a * sol - 1) if a * sol > 1 else 0
                text = f"{a}{v} - {b} = {a * sol - b}"
        elif level == 2:
            if rng.random() < 0.5:
                b = rng.randint(1, 9)
                text = f"{a}({v} + {b}) = {a * (sol + b)}"
            else:
                c = rng.choice([k for k in range(1, 10) if k != a])
                b = rng.randint(1, 20)
                d = a * sol + b - c * sol
                text = f"{a}{v} + {b} = {c}{v}" + (f" + {d}" if d >= 0 else f" - {-d}")
                text = text.replace(f" 1{v}", f" {v}")
        else:
            b = rng.randint(1, 9)
            c = rng.choice([k for k in range(1, 10) if k != a])
            d = a * (sol - b) - c * sol
            text = f"{a}({v} - {b}) = {c}{v}" + (f" + {d}" if d >= 0 else f" - {-d}")
            text = text.replace(f" 1{v}", f" {v}")
        question = rng.choice(("The image shows an equation; solve for {v}.",
                               "Solve the equation in the image for {v}.",
                               "What value of {v} satisfies the equation shown?")).format(v=v)
        compute = PlanStep("solve_equation", {"equations": "{eq}", "variables": [v]},
                           rng.choice(THINK_COMPUTE["equation"]).format(v=v),
                           key_args=("equations",))
        lines = [(rng.choice(("Solve", "Equation", "Find " + v)), None, "center"),
                 (text, None, "center")]
        return lines, question, compute, str(sol), "number", {"equation": text, "var": v}

    def _simplify(self, rng, level):
        v = rng.choice(VARIABLES)
        x = sympy.Symbol(v)

        def signed(k: int, first: bool = False) -> str:
            return (f"{k}" if first else f"+ {k}") if k >= 0 else (f"-{-k}" if first else f"- {-k}")

        if level == 1:
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            c = rng.choice([k for k in range(-9, 10) if k != 0])
            text = f"{a}{v} + {b}{v} {signed(c)}"
            value = (a + b) * x + c
        elif level == 2:
            a, b = rng.randint(2, 6), rng.randint(1, 9)
            c = rng.choice([k for k in range(2, 9)])
            if rng.random() < 0.5:
                text = f"{a}({v} + {b}) + {c}{v}"
                value = a * (x + b) + c * x
            else:
                d = rng.randint(1, 9)
                text = f"{a}({v} + {b}) - {c}({v} - {d})"
                value = a * (x + b) - c * (x - d)
        else:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            if rng.random() < 0.5:
                text = f"({v} + {a})({v} + {b}) - {v}^2"
                value = (x + a) * (x + b) - x ** 2
            else:
                text = f"({v} + {a})^2 - {v}^2"
                value = (x + a) ** 2 - x ** 2
        gold = sympy.expand(value)
        if gold.is_number:
            return self._simplify(rng, level)
        question = rng.choice(("Simplify the expression shown.", "Write the expression in the "
                               "image in simplest form.", "Simplify the expression on the board."))
        compute = PlanStep("simplify", {"expression": "{expr}"},
                           rng.choice(THINK_COMPUTE["simplify"]).format(v=v),
                           key_args=("expression",))
        lines = [(rng.choice(("Simplify", "Expression", "Simplify this")), None, "center"),
                 (text, None, "center")]
        return (lines, question, compute, str(gold), "expression",
                {"expression": text, "var": v, "simplest_form": True})

    def _percent(self, rng, level):
        product = rng.choice(PRODUCTS)
        price = rng.randrange(20, 201, 5)
        discount = rng.choice((10, 15, 20, 25, 30, 40, 50))
        lines = [(product, None, "center"), (f"Price: {price}", None, "left"),
                 (f"Discount: {discount}%", None, "left")]
        p, d = Fraction(price), Fraction(discount, 100)
        if level == 1:
            question = rng.choice(("How much money does the discount save?",
                                   "How much is taken off the price?"))
            expr = "{n[price]}*{n[discount]}/100"
            answer = p * d
        elif level == 2:
            question = rng.choice(("What is the price after the discount?",
                                   f"How much does the {product.lower()} cost on sale?"))
            expr = "{n[price]} - {n[price]}*{n[discount]}/100"
            answer = p * (1 - d)
        else:
            tax = rng.choice((5, 10, 20))
            lines.append((f"Tax: {tax}%", None, "left"))
            question = rng.choice(("What is the final price after the discount, with tax added?",
                                   "The discount applies first, then tax: what is the final "
                                   "price?"))
            expr = "{n[price]}*(1 - {n[discount]}/100)*(1 + {n[tax]}/100)"
            answer = p * (1 - d) * (1 + Fraction(tax, 100))
        compute = PlanStep("calculator", {"expression": expr},
                           rng.choice(THINK_COMPUTE["percent"]).format(expr=expr),
                           key_args=("expression",))
        return lines, question, compute, _fmt(answer), "number", {"price": price,
                                                                  "discount": discount}

    def _rate(self, rng, level):
        vehicle = rng.choice(VEHICLES)
        if level == 1:
            speed, hours = rng.randrange(20, 121, 5), rng.randint(2, 6)
            lines = [(f"Speed: {speed} km/h", None, "left"), (f"Time: {hours} h", None, "left")]
            question = rng.choice((f"How far does the {vehicle.lower()} travel, in km?",
                                   "What distance is covered, in km?"))
            expr, answer = "{n[speed]}*{n[time]}", Fraction(speed * hours)
        elif level == 2:
            speed, hours = rng.randrange(20, 121, 5), rng.randint(2, 6)
            lines = [(f"Distance: {speed * hours} km", None, "left"),
                     (f"Time: {hours} h", None, "left")]
            question = rng.choice(("What is the average speed in km/h?",
                                   f"How fast does the {vehicle.lower()} go on average, in km/h?"))
            expr, answer = "{n[distance]}/{n[time]}", Fraction(speed)
        else:
            use, trip = rng.randint(4, 12), rng.randrange(50, 801, 50)
            lines = [(f"Fuel use: {use} L per 100 km", None, "left"),
                     (f"Trip: {trip} km", None, "left")]
            question = rng.choice(("How many litres of fuel does the trip need?",
                                   "How much fuel, in litres, is used on the trip?"))
            expr, answer = "{n[fuel use]}*{n[trip]}/100", Fraction(use * trip, 100)
        lines.insert(0, (vehicle, None, "center"))
        compute = PlanStep("calculator", {"expression": expr},
                           rng.choice(THINK_COMPUTE["rate"]).format(expr=expr),
                           key_args=("expression",))
        return lines, question, compute, _fmt(answer), "number", {"vehicle": vehicle}

    # --- bindings --------------------------------------------------------------------------

    def bindings(self, task: Task, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """`n` (row label -> number as read), `eq` (the row with '='), `expr` (the row that is
        an expression) from the ocr result; `calc`, `solution`, `simplified` from the second
        step's result."""
        out: dict[str, Any] = {}
        if results and results[0].get("ok"):
            # level 3 reads the named half; a whole-image read (the plan's alternative) is
            # narrowed to it
            region = task.reference_plan[0].arguments.get("box")
            rows = ocr_rows(lines_in(ocr_lines(results[0]), region))
            out["n"] = row_numbers(rows)
            qtype = task.meta["question_type"]
            if qtype == "equation":
                eq = next((r.text for r in rows if "=" in r.text), None)
                if eq is not None:
                    out["eq"] = eq
            elif qtype == "simplify":
                exprs = [r.text for r in rows if re.search(r"\d", r.text)
                         and re.search(r"[-+()^]", r.text)]
                if exprs:
                    out["expr"] = exprs[-1]
        if len(results) > 1 and results[1].get("ok"):
            data = results[1].get("data") or {}
            tool = task.reference_plan[1].tool
            if tool == "calculator" and data.get("value") is not None:
                out["calc"] = format_number(data["value"])
            elif tool == "solve_equation" and data.get("status") == "finite":
                var = task.meta["var"]
                sols = [s[var]["value"] for s in data.get("solutions") or [] if var in s]
                if len(sols) == 1 and sols[0] is not None:
                    out["solution"] = format_number(sols[0])
            elif tool == "simplify" and data.get("exact"):
                out["simplified"] = data["exact"]
        return out


MATH_WORD = register_family(MathWord())
