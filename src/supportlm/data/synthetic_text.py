"""User and assistant turns for one intent, in one of six user registers (tone and spelling).

The user turn is an intent request wrapped in a register's openers and closers (or
typos); the assistant turn is an empathetic opener, an intent-specific body and a
closer, always professional whatever the user's tone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from supportlm.data.schema import INTENTS
from supportlm.data.synthetic_catalog import CATALOG
from supportlm.data.synthetic_templates import Template, choice, compile_templates

REGISTERS: tuple[str, ...] = ("polite", "colloquial", "terse", "typos", "offensive", "neutral")
REGISTER_WEIGHTS: tuple[float, ...] = (0.18, 0.14, 0.12, 0.14, 0.09, 0.33)


@dataclass(frozen=True)
class Intent:
    """Compiled content for one intent."""

    name: str
    topic: str
    weight: float
    user: tuple[Template, ...]
    terse: tuple[Template, ...]
    subjects: tuple[Template, ...]
    replies: tuple[Template, ...]


def _build_intents() -> dict[str, Intent]:
    """Compile the catalog and fail loudly if it drifts from the schema's taxonomy."""
    if sorted(CATALOG) != sorted(INTENTS):
        missing = sorted(set(INTENTS) ^ set(CATALOG))
        raise RuntimeError(f"synthetic catalog and TAXONOMY disagree on intents: {missing}")
    out: dict[str, Intent] = {}
    for name in INTENTS:  # sorted: iteration order never depends on dict/set internals
        spec = CATALOG[name]
        if len(spec["user"]) < 8 or len(spec["replies"]) < 3:
            raise RuntimeError(f"intent {name!r} needs >= 8 user and >= 3 reply templates")
        out[name] = Intent(
            name=name,
            topic=spec["topic"],
            weight=float(spec["weight"]),
            user=compile_templates(spec["user"]),
            terse=compile_templates(spec["terse"]),
            subjects=compile_templates(spec["subjects"]),
            replies=compile_templates(spec["replies"], vary=True),
        )
    return out


INTENT_SPECS = _build_intents()

# Intent-neutral extra sentences appended to some user turns: more distinct user
# texts without leaking one intent's vocabulary into another.
_CONTEXT: tuple[str, ...] = (
    "I'm using {device}.",
    "This is [quite|rather|really] urgent for me.",
    "I've been a customer for [years|a long time|ages].",
    "It's my first time shopping with you.",
    "I already [checked|read] the help pages.",
    "My name is {{Person Name}}.",
    "I tried {when} already.",
    "I have a {{Account Type}} account.",
    "I'm writing from {{Delivery City}}.",
    "I'd appreciate a quick answer.",
    "I'm travelling next week, so timing matters.",
    "My partner usually handles this but [they're|she's|he's] away.",
    "I couldn't find anything in the FAQ.",
    "I'm on the {{Account Category}} plan.",
    "I updated the app {when}.",
    "[Sorry|Apologies] if this was asked before.",
)


_CONTEXT_T = compile_templates(_CONTEXT)


# ---------------------------------------------------------------- generic assistant text

_OPENERS = compile_templates(
    (
        "Thank you for reaching out about {topic}.",
        "I'd be [happy|glad] to help you with {topic}.",
        "Thanks for getting in touch! I'm here to help with {topic}.",
        "I understand your concern regarding {topic}, and I'm [glad|happy] to assist.",
        "I appreciate you contacting us about {topic}; let's sort this out together.",
        "Sorry for any inconvenience. I'll gladly walk you through {topic}.",
        "Thank you for your message. Here's everything you need to know about {topic}.",
        "I'm here to help, and I can certainly assist with {topic}.",
        "[Hi|Hello] {{Client First Name}}, thanks for contacting us about {topic}.",
        "Thanks for your patience while I look into {topic}.",
        "[Thanks for writing in|Thanks for your message]! Let me help you with {topic}.",
    ),
    vary=True,
)
# Angry users get a de-escalating opener: the reply stays professional whatever the tone.
_DEESCALATE = compile_templates(
    (
        "I'm really sorry for the frustration this has caused, and I want to help with {topic} right away.",
        "I completely understand your frustration, and I apologize for the trouble. Let's resolve {topic} together.",
        "I'm sorry this has been such a [bad|disappointing] experience. I'll help you with {topic} now.",
    ),
    vary=True,
)
_CLOSERS = compile_templates(
    (
        "If anything is unclear, just reply here and I'll be glad to assist further.",
        (
            "Our team is available during {{Customer Support Hours}} at {{Customer Support Phone Number}} "
            "if you need more help."
        ),
        "Is there anything else I can help you with today?",
        "Thank you for your patience, and have a [wonderful|great|lovely] day!",
        "Feel free to reach out again if you have any other questions.",
        "You can also reach us through {{Live Chat Support}} on {{Website URL}} at any time.",
        "We truly value your business and are always here to help.",
        "[Thanks again|Thank you] for choosing us!",
        "I hope this helps, and please don't hesitate to write back.",
        "We'll be here if you need anything else.",
    ),
    vary=True,
)

# Conversation follow-ups: (user variants, assistant variants). Generic on purpose,
# tied to the intent through {topic}, so every turn stays on the same intent.
FOLLOWUPS: tuple[tuple[tuple[Template, ...], tuple[Template, ...]], ...] = tuple(
    (compile_templates(u), compile_templates(a, vary=True))
    for u, a in (
        (
            (
                "and how long does that take?",
                "how long will that take?",
                "ok, and how long does it usually take?",
            ),
            (
                (
                    "It usually takes {duration}. You'll receive a confirmation email as soon as everything is "
                    "complete, and you can follow the progress under {{Online Company Portal Info}}."
                ),
                (
                    "Typically {duration}. If it takes longer than that, just reply to this conversation and "
                    "I'll check what's holding it up."
                ),
            ),
        ),
        (
            (
                "thanks, one more thing... will I get a confirmation email?",
                "will I get an email when it's done?",
            ),
            (
                (
                    "Yes, we send a confirmation to the email address on your account as soon as your request "
                    "is processed. If it doesn't arrive within an hour, please check your spam folder."
                ),
            ),
        ),
        (
            ("is there any fee for that?", "does that cost anything?"),
            (
                (
                    "Any charges are always shown before you confirm anything, so there are no surprises. "
                    "You can also review the fees for your {{Account Type}} account under {{Settings}} at any time."
                ),
            ),
        ),
        (
            ("can I do this in the mobile app too?", "does this work on my phone as well?"),
            (
                (
                    "Yes! The steps are the same in our mobile app: open the menu, go to {{Settings}} and follow "
                    "the prompts. Please make sure you're using the latest app version."
                ),
            ),
        ),
        (
            ("what if it doesn't work?", "and if that fails?"),
            (
                (
                    "If anything goes wrong, please take a screenshot of the error and reply here, or call "
                    "{{Customer Support Phone Number}} during {{Customer Support Hours}}. We'll look into it "
                    "[right away|immediately]."
                ),
            ),
        ),
        (
            (
                "thanks, one more thing... can someone call me back about this?",
                "could an agent call me about it?",
            ),
            (
                (
                    "Of course. I've requested a callback for you; an agent will call you during "
                    "{{Customer Support Hours}}, usually within one business day, to help with {topic}."
                ),
            ),
        ),
        (
            ("sorry, what was the website again?", "where exactly do I find that?"),
            (
                (
                    "No problem! Everything you need is on {{Website URL}}; after signing in, the relevant "
                    "section is under {{Online Company Portal Info}}."
                ),
            ),
        ),
    )
)
CLOSING_TURN = (
    compile_templates(
        ("great, that worked, thanks!", "perfect, thank you so much", "ok got it, thanks for the help")
    ),
    compile_templates(
        (
            "You're very welcome! I'm glad we could help with {topic}. Have a great day!",
            "Happy to help! If anything else comes up, we're [always |]here for you.",
        ),
        vary=True,
    ),
)

# ---------------------------------------------------------------- registers

_NEUTRAL_OPEN = ("", "", "", "Hi, ", "Hello, ", "Hi there. ", "Good morning. ", "Hello. ")
_NEUTRAL_CLOSE = ("", "", "", " Thanks.", " Thank you.", " Thanks in advance.")
_POLITE_OPEN = (
    "Could you please help me? ",
    "Hello, could you please help me with something? ",
    "Good afternoon! Could you please take a look at this for me? ",
    "Hi, I hope you're well. Could you please advise? ",
    "Dear support, could you please assist me? ",
    "Could you please let me know? ",
)
_POLITE_CLOSE = (
    " Thank you very much in advance.",
    " Many thanks for your help.",
    " I'd really appreciate it.",
    " Thank you kindly.",
    "",
)
_COLLOQUIAL_OPEN = ("hey, ", "hey there, ", "hiya, ", "yo, ", "hey so ")
_COLLOQUIAL_CLOSE = (
    "",
    " thx",
    " cheers",
    " gonna need this sorted soon",
    " gonna lose my mind lol",
    " any ideas?",
    " ty",
)
_COLLOQUIAL_SUBS = (
    ("I would like to", "I wanna"),
    ("I'd like to", "I wanna"),
    ("I want to", "I wanna"),
    ("going to", "gonna"),
    ("Can you", "can u"),
    ("can you", "can u"),
    ("Please", "pls"),
    ("please", "pls"),
    ("Thank you", "thx"),
    ("don't", "dont"),
    ("I'm", "im"),
)
_OFFENSIVE_OPEN = (
    "This is bloody ridiculous. ",
    "What the hell is going on? ",
    "Seriously, this is crap. ",
    "I'm sick and tired of this nonsense. ",
    "Damn it, ",
    "Are you kidding me?! ",
    "Unbelievable, your site is a damn mess. ",
)
_OFFENSIVE_CLOSE = (
    " Sort it out!",
    " Absolutely useless service.",
    " Fix this now, for god's sake.",
    " Bloody hell.",
    " Your service is a joke.",
    "",
)
_TERSE_SUFFIX = ("", "", "", " pls", " asap", "?", " now")


def join_prefix(prefix: str, text: str) -> str:
    """Prefix + text, lower-casing the text's first letter mid-sentence ("Hi, how do I")."""
    mid_sentence = prefix.endswith(", ") or (prefix.endswith(" ") and prefix[-2:-1].isalpha())
    if mid_sentence and text and not text.startswith(("I ", "I'", "{")):
        text = text[0].lower() + text[1:]
    return prefix + text


_TRAILING_PUNCT = ".,!?;:'\")"


def add_typos(text: str, rng: random.Random) -> str:
    """Swap, drop or double one inner letter in ~1 of 6 words; placeholders are left intact."""
    words = text.split(" ")
    eligible = [
        i
        for i, w in enumerate(words)
        if len(w.rstrip(_TRAILING_PUNCT)) >= 4 and "{" not in w and "}" not in w
    ]
    hits = [i for i in eligible if rng.random() < 1 / 6]
    if not hits and eligible:  # a "typos" row should always show at least one typo
        hits = [choice(rng, eligible)]
    for i in hits:
        w = words[i]
        # only inside the word's letters: "Hello." may become "Helo." but never "Hell.o"
        j = 1 + int(rng.random() * (len(w.rstrip(_TRAILING_PUNCT)) - 2))
        op = rng.random()
        if op < 0.45:
            w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        elif op < 0.8:
            w = w[:j] + w[j + 1 :]
        else:
            w = w[:j] + w[j] + w[j:]
        words[i] = w
    return " ".join(words)


def _colloquial(text: str) -> str:
    for old, new in _COLLOQUIAL_SUBS:
        if old in text:
            text = text.replace(old, new)
    return text


def user_text(spec: Intent, register: str, rng: random.Random) -> str:
    """One user request for `spec` in the given register."""
    if register == "terse":
        return choice(rng, spec.terse).render(rng) + choice(rng, _TERSE_SUFFIX)
    core = choice(rng, spec.user).render(rng)
    if rng.random() < 0.4:
        core += " " + _CONTEXT_T[rng.randrange(len(_CONTEXT_T))].render(rng)
    if register == "polite":
        return choice(rng, _POLITE_OPEN) + core + choice(rng, _POLITE_CLOSE)
    if register == "colloquial":
        text = join_prefix(choice(rng, _COLLOQUIAL_OPEN), _colloquial(core))
        return text.rstrip(".") + choice(rng, _COLLOQUIAL_CLOSE)
    if register == "offensive":
        return join_prefix(choice(rng, _OFFENSIVE_OPEN), core) + choice(rng, _OFFENSIVE_CLOSE)
    text = join_prefix(choice(rng, _NEUTRAL_OPEN), core) + choice(rng, _NEUTRAL_CLOSE)
    return add_typos(text, rng) if register == "typos" else text


def assistant_text(spec: Intent, register: str, rng: random.Random) -> str:
    """Empathetic opener + intent-specific body + closer; always clean and professional."""
    openers = _DEESCALATE if register == "offensive" else _OPENERS
    opener = choice(rng, openers).render(rng).replace("{topic}", spec.topic)
    body = choice(rng, spec.replies).render(rng)
    closer = choice(rng, _CLOSERS).render(rng)
    return f"{opener} {body}{chr(10) * 2 if chr(10) in body else ' '}{closer}"
