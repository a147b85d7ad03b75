"""The built-in validation corpus: varied texts to compare a compiled model with its reference.

Short and long texts, several languages and scripts, punctuation, numbers, code and emoji.
Even-numbered items form the *tune* split (used to choose a candidate); odd-numbered items
the *held-out* split (only reported), so the choice is not graded on the data it was made on.
"""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I absolutely loved this movie; the acting was superb!",
    "This was the worst service I have ever experienced.",
    "Can you tell me how to get to the train station?",
    "Apple reported quarterly revenue of $89.5 billion, up 8% year over year.",
    "The meeting is scheduled for 3:30 p.m. on Tuesday, March 14th, 2026.",
    "Barack Obama was born in Honolulu, Hawaii, in 1961.",
    "Angela Merkel served as Chancellor of Germany from 2005 to 2021.",
    "The Eiffel Tower is located on the Champ de Mars in Paris, France.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "def add(a, b): return a + b  # a tiny Python function",
    "SELECT name, age FROM users WHERE age > 30 ORDER BY name;",
    "Please send the report to maria.garcia@example.com before Friday.",
    "Wow!!! That's... unexpected?! (Really.)",
    "I'm not sure whether it'll rain tomorrow, but I'd take an umbrella.",
    "The patient was prescribed 20 mg of atorvastatin once daily.",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El gobierno anunció nuevas medidas económicas el lunes.",
    "Il treno per Milano parte alle otto e un quarto.",
    "O Brasil é o maior país da América do Sul.",
    "Москва является столицей России.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "北京是中华人民共和国的首都。",
    "서울은 대한민국의 수도입니다.",
    "القاهرة هي عاصمة مصر.",
    "हिंदी भारत की आधिकारिक भाषाओं में से एक है।",
    "Great job on the release 🎉🚀 — the team really delivered!",
    "Version 2.3.1 fixes a crash when the input exceeds 4,096 tokens.",
    "Stocks fell sharply after the central bank raised interest rates by 0.5%.",
    "Manchester United won 3-1 against Liverpool at Old Trafford on Sunday.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Neural networks are trained with stochastic gradient descent.",
    "My flight from New York to London was delayed by three hours.",
    "Dr. Smith, Ph.D., will present the results at 9 a.m. sharp.",
    "It is what it is.",
    "Yes.",
    "No way!",
    "Thanks a lot for your help with the move last weekend.",
    "The Amazon rainforest produces about 20 percent of the world's oxygen.",
    "Tesla, Inc. is headquartered in Austin, Texas.",
    "The Mona Lisa was painted by Leonardo da Vinci in the early 16th century.",
    "Shakespeare wrote Hamlet around the year 1600.",
    "Heavy snowfall closed several roads in the Alps overnight.",
    "The new smartphone has a 6.1-inch display and 128 GB of storage.",
    "Customer complained that the package arrived damaged and late.",
    "Mount Everest is 8,849 metres tall.",
]


def _long_texts() -> list[str]:
    out = []
    n = len(SENTENCES)
    for start, size in ((0, 6), (7, 8), (15, 5), (21, 9), (30, 7), (38, 10), (3, 12), (11, 6)):
        out.append(" ".join(SENTENCES[(start + i) % n] for i in range(size)))
    return out


def texts(extra_file: Path | None = None) -> list[str]:
    """All validation texts: the built-in ones, long ones, then the user's (one per line)."""
    items = SENTENCES + _long_texts()
    if extra_file is not None:
        lines = [ln.strip() for ln in Path(extra_file).read_text(encoding="utf-8").splitlines()]
        items += [ln for ln in lines if ln]
    return items


def split(items: list) -> tuple[list, list]:
    """(tune, held_out): alternating, so both cover short, long and multilingual texts."""
    return items[0::2], items[1::2]


def qa_pairs(items: list[str]) -> list[tuple[str, str]]:
    """Question/context pairs built from the texts (agreement is what is measured)."""
    questions = ["What is it about?", "Who is mentioned?", "When did it happen?", "Where is it?"]
    return [(questions[i % len(questions)], text) for i, text in enumerate(items)]
