"""Built-in, deterministic, offline customer-support data with known defects.

Why this exists: the pipeline must run end to end with no network and no external
dataset, and the clean stage needs data whose defects are *known* so that its
dedup / unicode / markup / PII / length / label-noise steps can be scored against
a ground truth. `generate(n, seed)` returns `n` Bitext-style records over the
27-intent taxonomy (QA pairs, multi-turn conversations and ticket-shaped rows, in
six user registers) plus one ground-truth dict per row that received an injected
defect. The ground truth is returned separately and never stored in a record.

Everything is driven by two `random.Random` instances (content, defects), so the
same `(n, seed, rates, kinds)` always yields identical output, and changing the
defect rates leaves the clean content untouched.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


from supportlm.config import EXCLUSIVE, PII_TYPES, DefectRates
from supportlm.data.schema import INTENT_TO_CATEGORY, INTENTS, Record

__all__ = [
    "DEFAULT_KINDS",
    "REGISTERS",
    "SOURCE",
    "generate",
    "mojibake",
    "shingle_jaccard",
]

SOURCE = "synthetic"
# PII only co-occurs with families that keep the user text readable: an emptied,
# duplicated or log-flooded user turn would make the PII label meaningless.
_PII_COMPATIBLE = frozenset({"markup", "mojibake", "label_flip"})
DEFAULT_KINDS: dict[str, float] = {"qa": 0.7, "conversation": 0.15, "ticket": 0.15}
REGISTERS: tuple[str, ...] = ("polite", "colloquial", "terse", "typos", "offensive", "neutral")
_REGISTER_WEIGHTS: tuple[float, ...] = (0.18, 0.14, 0.12, 0.14, 0.09, 0.33)
TOO_LONG_WORDS = 3000
# Near duplicates must stay clearly above the dedup stage's 0.9 MinHash threshold:
# with 128 permutations its LSH (5 bands x 25 rows) catches a pair at true Jaccard
# 0.93 only ~55% of the time, at 0.96 ~89%, so aim for >= 0.96 where the text allows.
NEAR_DUP_MIN_JACCARD = 0.96


# ====================================================================== templates
#
# Template mini-language (compiled once at import, see _Template):
#   [a|b|c]   pick one alternative per row; [a|] makes "a" optional
#   {slot}    filled from _SLOTS (lower-case names, so they never clash with
#             Bitext placeholders such as {{Order Number}}, which stay verbatim)
# Alternatives in the assistant replies matter as much as in the user text: the
# reply dominates a row's word shingles, and without variation two unrelated rows
# of the same intent would look like near duplicates to MinHash.

_SLOTS: dict[str, tuple[str, ...]] = {
    "item": (
        "the wireless headphones",
        "a pair of running shoes",
        "the coffee maker",
        "my new phone case",
        "the standing desk",
        "two t-shirts",
        "the kids' bike helmet",
        "a 4K monitor",
        "the garden hose",
        "a set of bed sheets",
        "the espresso machine",
        "the yoga mat",
        "a winter jacket",
        "the bluetooth speaker",
        "a laptop bag",
        "the blender",
        "some printer ink",
        "the office chair",
        "a smartwatch",
        "the LED desk lamp",
        "a board game",
        "the vacuum cleaner",
        "the hiking boots",
        "a box of vitamins",
        "the air fryer",
        "a leather wallet",
        "the baby stroller",
        "a gaming mouse",
    ),
    "when": (
        "yesterday",
        "last week",
        "this morning",
        "two days ago",
        "on Monday",
        "last night",
        "a few days ago",
        "earlier today",
        "last Friday",
        "over the weekend",
        "three weeks ago",
        "an hour ago",
        "on Tuesday",
        "ten days ago",
    ),
    "reason": (
        "it arrived damaged",
        "I found it cheaper elsewhere",
        "I ordered the wrong size",
        "it's taking too long to arrive",
        "I changed my mind",
        "it doesn't match the description",
        "it stopped working after a day",
        "I no longer need it",
        "I ordered it twice by mistake",
        "the color is not what I expected",
    ),
    "device": (
        "my phone",
        "my iPhone",
        "my Android phone",
        "my laptop",
        "the app",
        "my tablet",
        "the website",
        "my work computer",
        "Chrome",
        "Safari",
        "Firefox",
    ),
    "pay": (
        "my Visa card",
        "PayPal",
        "Apple Pay",
        "my debit card",
        "a gift card",
        "bank transfer",
        "Google Pay",
        "my Mastercard",
        "Klarna",
        "my Amex card",
    ),
    "duration": (
        "a few minutes",
        "up to 24 hours",
        "1-2 business days",
        "3-5 business days",
        "about an hour",
    ),
}

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


def _ch(rng: random.Random, seq: Sequence[Any]) -> Any:
    """rng.choice without its rejection-sampling loop: ~2x faster, still fully seeded."""
    return seq[int(rng.random() * len(seq))]


@dataclass(frozen=True)
class _Template:
    """A template as literals interleaved with alternative groups: lit0 grp0 lit1 grp1 ... litN."""

    literals: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    slots: tuple[tuple[str, tuple[str, ...]], ...]  # ("{item}", fillers)

    def render(self, rng: random.Random) -> str:
        lits = self.literals
        if self.groups:
            rnd = rng.random
            out = [lits[0]]
            for grp, lit in zip(self.groups, lits[1:]):
                out.append(grp[int(rnd() * len(grp))])
                out.append(lit)
            text = "".join(out)
        else:
            text = lits[0]
        for marker, fillers in self.slots:
            text = text.replace(marker, fillers[int(rng.random() * len(fillers))])
        return text


_ALT = re.compile(r"\[([^\[\]]*)\]")


def _compile(template: str) -> _Template:
    """Parse `[a|b]` groups once, so rendering is only joins and replaces."""
    literals: list[str] = []
    groups: list[tuple[str, ...]] = []
    pos = 0
    for m in _ALT.finditer(template):
        literals.append(template[pos : m.start()])
        groups.append(tuple(m.group(1).split("|")))
        pos = m.end()
    literals.append(template[pos:])
    slots = tuple(("{" + s + "}", _SLOTS[s]) for s in _SLOTS if "{" + s + "}" in template)
    return _Template(tuple(literals), tuple(groups), slots)


def _compile_all(templates: Sequence[str], vary: bool = False) -> tuple[_Template, ...]:
    return tuple(_compile(_vary(t) if vary else t) for t in templates)


# Meaning-preserving rewordings turned into `[a|b]` groups in assistant templates.
# Each reply has a dozen such spots, so two replies built from the same body share
# far fewer word 3-grams, and unrelated rows stop looking like near duplicates.
_REWORDINGS: dict[str, tuple[str, ...]] = {
    "Sign in": ("Sign in", "Log in"),
    "sign in": ("sign in", "log in"),
    "click": ("click", "select"),
    "Click": ("Click", "Select"),
    "tap": ("tap", "press"),
    "usually": ("usually", "typically", "normally"),
    "You can": ("You can", "You're able to"),
    "you can": ("you can", "you're able to"),
    "make sure": ("make sure", "ensure"),
    "contact us": ("contact us", "get in touch with us", "reach out to us"),
    "receive": ("receive", "get"),
    "Please": ("Please", "Kindly"),
    "quick": ("quick", "fast"),
    "easy": ("easy", "simple"),
    "choose": ("choose", "pick", "select"),
    "select": ("select", "choose"),
    "Select": ("Select", "Choose"),
    "immediately": ("immediately", "right away"),
    "email": ("email", "e-mail"),
    "If": ("If", "In case"),
    "as soon as": ("as soon as", "once"),
    "at any time": ("at any time", "anytime"),
    "free of charge": ("free of charge", "at no cost"),
    "We'll": ("We'll", "We will"),
    "we'll": ("we'll", "we will"),
    "You'll": ("You'll", "You will"),
    "you'll": ("you'll", "you will"),
    "I'll": ("I'll", "I will"),
    "I'm": ("I'm", "I am"),
    "don't": ("don't", "do not"),
    "can't": ("can't", "cannot"),
    "hasn't": ("hasn't", "has not"),
    "isn't": ("isn't", "is not"),
    "you're": ("you're", "you are"),
    "it's": ("it's", "it is"),
}
_REWORD_RE = re.compile(
    r"(?<![\w'])("
    + "|".join(re.escape(k) for k in sorted(_REWORDINGS, key=len, reverse=True))
    + r")(?![\w'])"
)


def _vary(template: str) -> str:
    """Add rewording groups to the literal (non-`[...]`) stretches of a template."""
    out, pos = [], 0
    for m in _ALT.finditer(template):
        out.append(
            _REWORD_RE.sub(lambda w: "[" + "|".join(_REWORDINGS[w.group(1)]) + "]", template[pos : m.start()])
        )
        out.append(m.group(0))
        pos = m.end()
    out.append(_REWORD_RE.sub(lambda w: "[" + "|".join(_REWORDINGS[w.group(1)]) + "]", template[pos:]))
    return "".join(out)


_CONTEXT_T = _compile_all(_CONTEXT)


# ---------------------------------------------------------------- per-intent content
# topic: noun phrase used by openers and follow-ups; user: >= 8 full requests;
# terse: <= 4 words; subjects: ticket subject lines; replies: >= 3 answer bodies.

_CATALOG: dict[str, dict[str, Any]] = {
    "create_account": {
        "topic": "creating a new account",
        "weight": 1.0,
        "user": (
            "I [want|would like|need] to create a new account on {{Website URL}}.",
            "How do I sign up for a {{Account Type}} account?",
            "Can you help me [open|set up] an account? I've never registered with you before.",
            "I'd like to make an account so I can buy {item}.",
            "Where do I go to register a new {{Account Category}} [profile|account]?",
            "I need to set up an account for my [small business|family|shop], how does that work?",
            "What are the steps to create an account using {device}?",
            "Is it possible to open a {{Account Type}} account for my [mother|son|husband|wife]?",
            "I tried to buy {item} as a guest but I'd rather create an account first. How?",
            "[Help me|Please help me] sign up, I want a {{Account Type}} account.",
        ),
        "terse": ("create account", "new account please", "sign up {{Account Type}}", "open an account"),
        "subjects": ("New account setup", "How to create an account", "Sign-up help needed"),
        "replies": (
            (
                "Creating an account only takes a couple of minutes:\n"
                '1. Go to {{Website URL}} and click "Sign Up".\n'
                "2. Enter your name, email address and a [secure|strong] password.\n"
                "3. Choose the {{Account Type}} account that [fits your needs|suits you best].\n"
                "4. Confirm your email using the verification link we send you.\n"
                "Once that's done, you can sign in and [start shopping right away|place your first order]."
            ),
            (
                "Here's how to open your new account:\n"
                "1. Open our app or visit {{Online Company Portal Info}}.\n"
                '2. Select "Create Account" and fill in your personal details.\n'
                "3. Pick a {{Account Category}} and review the terms of service.\n"
                '4. [Tap|Click] "Register" and verify your email address.\n'
                "With your account you'll be able to track orders, save addresses and manage your "
                "[preferences|newsletter settings]."
            ),
            (
                'Registering is quick and free. Visit {{Website URL}}, choose "Create an account", and provide '
                "your email, a password and your contact details. After you submit the form, we'll send a "
                "[confirmation|verification] email; click the link inside to activate your {{Account Type}} "
                "account. [If you'd like, you|You] can also upgrade your account type later under {{Settings}}."
            ),
        ),
    },
    "delete_account": {
        "topic": "closing your account",
        "weight": 0.9,
        "user": (
            "I want to delete my account [permanently|for good].",
            "How can I close my {{Account Type}} account?",
            "Please remove my account and all my personal data.",
            "I'd like to [terminate|cancel] my account, I no longer shop here.",
            "What do I need to do to deactivate my profile on {{Website URL}}?",
            "Can you delete the account linked to this email address?",
            "I'm done with your service, close my account.",
            "How do I get rid of my {{Account Category}} account on {device}?",
            "I'd like my account erased, I bought {item} {when} and that was my last order.",
        ),
        "terse": ("delete my account", "close account", "remove my profile", "deactivate account now"),
        "subjects": ("Account deletion request", "Please close my account", "Remove my personal data"),
        "replies": (
            (
                "[I'm sorry to see you go.|We're sad to see you leave.] To delete your account:\n"
                "1. Sign in at {{Website URL}}.\n"
                '2. Open {{Settings}} and choose "Account".\n'
                '3. Select "Delete account" and confirm with your password.\n'
                "Please note that deletion is permanent: your order history, saved addresses and "
                "{{Account Type}} benefits will be removed. [Any open orders will still be delivered.|"
                "Orders already placed will still arrive.]"
            ),
            (
                "We can close your account for you. Before you proceed, please make sure you have no pending "
                "orders or refunds, because these can't be tracked after the account is deleted. Then go to "
                '{{Online Company Portal Info}}, open your profile, and click "Close my account". You will '
                "receive an email confirming the deletion within [48 hours|two days], and your personal data "
                "will be erased in line with our privacy policy."
            ),
            (
                "Account deletion steps:\n"
                "1. Download any invoices you may need later.\n"
                "2. Cancel active subscriptions under {{Settings}}.\n"
                '3. Go to Profile > Privacy > "Delete my account".\n'
                "4. Confirm the request from the email we send you.\n"
                "If you change your mind within [14|30] days, contact {{Customer Support Phone Number}} "
                "and we can restore [it|your account]."
            ),
        ),
    },
    "edit_account": {
        "topic": "updating your account details",
        "weight": 1.0,
        "user": (
            "How do I change the name on my account?",
            "I need to update my personal information, my [address|phone number] changed.",
            "Can I edit the email address on my {{Account Type}} account?",
            "Where do I modify my phone number in my profile?",
            "I want to change my account details, my surname is different since I got married.",
            "How can I update my date of birth on {device}?",
            "I'd like to edit my profile information, some of it is outdated.",
            "Is there a way to change the username on my {{Account Category}} account?",
            "My account still shows my old work email, how do I edit it?",
        ),
        "terse": (
            "edit my profile",
            "update account details",
            "change account email",
            "modify personal info",
        ),
        "subjects": ("Update my account details", "Change of name on account", "Edit profile information"),
        "replies": (
            (
                "You can update your details at any time:\n"
                "1. Sign in to your account on {{Website URL}}.\n"
                '2. Go to {{Profile}} > "Personal information".\n'
                '3. Click "Edit" next to the field you want to change.\n'
                '4. [Save your changes.|Click "Save" to confirm.]\n'
                "For security reasons, changing your email address requires confirmation from both the old "
                "and the new address."
            ),
            (
                "To edit your account information, open {{Settings}} in the app or on "
                '{{Online Company Portal Info}} and select "Account details". There you can change your '
                'name, phone number, email and date of birth. After you click "Save", the update takes '
                "effect [immediately|right away], and we'll send you a short notification so you know the "
                "change was made by you."
            ),
            (
                "Happy to help you keep your profile up to date. Most fields, like your name and phone number, "
                "can be edited directly under {{Profile}}. If you need to change your legal name or date of "
                "birth on a {{Account Type}} account, we may ask you to verify your identity first; simply "
                "follow the prompt on screen and upload a valid [ID|photo ID]."
            ),
        ),
    },
    "recover_password": {
        "topic": "resetting your password",
        "weight": 1.2,
        "user": (
            "I forgot my password and can't log in.",
            "How do I reset my password? The reset email never arrived.",
            "I'm locked out of my account, I need to recover my password.",
            "My password doesn't work anymore on {device}, what do I do?",
            "Can you send me a password reset link?",
            "I changed my password {when} and now I can't remember it.",
            "Help, I can't sign in, I think I forgot my [login|account] password.",
            "Where is the 'forgot password' option on {{Website URL}}?",
            "I keep getting 'invalid password' when I try to log in to my {{Account Type}} account.",
        ),
        "terse": ("forgot password", "reset my password", "password recovery", "can't log in"),
        "subjects": ("Password reset not working", "Forgot my password", "Locked out of account"),
        "replies": (
            (
                "Let's get you back into your account:\n"
                "1. Go to the sign-in page on {{Website URL}}.\n"
                '2. Click "Forgot password?".\n'
                "3. Enter the email address linked to your account.\n"
                "4. Open the reset email and follow the link to create a new password.\n"
                "The link is valid for [24 hours|one day]. If you don't see the email, please check your "
                "spam or junk folder."
            ),
            (
                'To recover your password, open the app on your device and tap "Sign in" > "Forgot '
                "password\". We'll send a one-time code to your registered email or phone number. Enter the "
                "code, choose a new password with at least [8|10] characters, and you'll be signed in "
                "automatically. For your security, all other devices will be signed out."
            ),
            (
                "I'm sorry you're locked out. If the reset email hasn't arrived, please make sure you're using "
                "the same email you registered with and that the filters in your inbox don't block our "
                "messages. You can request a new reset link every [5|10] minutes. If you still can't access "
                "your account, our team can verify your identity at {{Customer Support Phone Number}} and "
                "reset [it|your password] manually."
            ),
        ),
    },
    "registration_problems": {
        "topic": "the registration issue",
        "weight": 1.0,
        "user": (
            "I'm trying to register but the sign-up form keeps giving me an error.",
            "Registration fails every time I click submit on {{Website URL}}.",
            "I can't complete my registration, the verification email never comes.",
            "The site says my email is already registered but I never signed up.",
            "I get an error code when [registering|signing up] on {device}.",
            "Why won't the registration page accept my phone number?",
            "I've tried to sign up three times since {when} and it still doesn't work.",
            "There's a problem with registering, the page just freezes.",
            "The captcha on the sign-up form won't load, so I can't register.",
        ),
        "terse": ("registration error", "can't register", "sign-up not working", "signup form broken"),
        "subjects": ("Error during registration", "Cannot complete sign-up", "Verification email missing"),
        "replies": (
            (
                "I'm sorry the registration isn't going through. Please try the following:\n"
                "1. Clear your browser cache and cookies, or use a private window.\n"
                "2. Make sure all required fields are filled in and your password meets the requirements.\n"
                "3. Disable any ad blockers, as they can stop the sign-up form from loading.\n"
                "4. Try again on {{Website URL}}.\n"
                "If the error continues, send us a screenshot of the message and we'll [investigate|look into it]."
            ),
            (
                "When the verification email doesn't arrive, it's usually caught by a spam filter. Please "
                "check your junk folder and add our address to your contacts. You can then request a new "
                "verification link from the registration page. If the site says your email is already "
                'registered, use "Forgot password" to regain access to the existing account instead of '
                "creating a [new|second] one."
            ),
            (
                "Registration problems are often caused by an outdated app version or a browser extension. "
                "Please update the app, restart your device and try again. If you're registering with a phone "
                "number, enter it with your country code. Should the issue persist, our technical team is "
                "available during {{Customer Support Hours}} and can complete the registration [for you|with you]."
            ),
        ),
    },
    "switch_account": {
        "topic": "switching your account",
        "weight": 0.8,
        "user": (
            "How do I switch from a {{Account Type}} account to a business one?",
            "I want to change my account type to [premium|gold|platinum].",
            "Can I switch between my personal and work accounts in the app?",
            "I'd like to move from the free plan to the {{Account Type}} plan.",
            "How can I downgrade my account to the standard tier?",
            "Is it possible to switch to a different {{Account Category}}?",
            "I have two accounts, how do I switch to the other one on {device}?",
            "Please help me upgrade my account, I'd like the extra benefits.",
            "What happens to my orders if I switch my account type?",
        ),
        "terse": (
            "switch account type",
            "upgrade my account",
            "change to {{Account Type}}",
            "switch accounts",
        ),
        "subjects": ("Switch account type", "Upgrade to premium", "Change my plan"),
        "replies": (
            (
                "Switching your account type is easy:\n"
                "1. Sign in and open {{Settings}}.\n"
                '2. Select "Account type".\n'
                "3. Choose the {{Account Type}} option you'd like.\n"
                "4. Review the benefits and confirm.\n"
                "Your order history, saved addresses and loyalty points will carry over to the new account "
                "[type|plan]."
            ),
            (
                "If you have more than one account, you can switch between them without signing out: tap "
                'your profile picture in the app, choose "Switch account" and select the account you want '
                'to use. To change your plan instead, go to {{Online Company Portal Info}} > "Plans" and '
                "pick the new tier; any price difference is calculated [pro rata|for the remaining days]."
            ),
            (
                "You can upgrade or downgrade at any time. When you upgrade, the new benefits apply "
                "[immediately|straight away]. When you downgrade, your current {{Account Type}} benefits stay "
                "active until the end of the billing period, and then the new plan starts. Open {{Profile}} > "
                '"Membership" to make the switch.'
            ),
        ),
    },
    "check_cancellation_fee": {
        "topic": "the cancellation fee",
        "weight": 0.7,
        "user": (
            "Is there a fee if I cancel my order?",
            "How much is the cancellation fee for my {{Account Type}} plan?",
            "Will I be charged anything for cancelling my subscription early?",
            "What's the penalty for cancelling an order that has already shipped?",
            "I want to know the early termination fee before I cancel.",
            "Do you charge a cancellation fee on {item}?",
            "If I cancel the contract now, how much do I have to pay?",
            "Can you tell me the cancellation charges for order {{Order Number}}?",
            "Are there any fees for cancelling within [30|14] days?",
        ),
        "terse": ("cancellation fee?", "early termination fee", "cancel fee amount", "fee for cancelling"),
        "subjects": ("Question about cancellation fees", "Early termination charge", "Cancellation cost"),
        "replies": (
            (
                "Here's how our cancellation fees work:\n"
                "1. Orders cancelled before they ship: no fee.\n"
                "2. Orders cancelled after shipping: a return shipping fee may apply.\n"
                "3. Plans cancelled before the end of the minimum term: an early termination fee may apply.\n"
                'You can see the exact amount for your account under {{Settings}} > "Plan details" '
                "[before you confirm the cancellation|before confirming anything]."
            ),
            (
                "The cancellation fee depends on your {{Account Type}} plan and how long you've been "
                'subscribed. To check it, sign in at {{Website URL}}, go to "My plan" and click '
                '"Cancellation terms". The fee, if any, is shown clearly there. Nothing is charged until you '
                "confirm, so you can check [safely|without any risk]."
            ),
            (
                "Good news: most cancellations are free of charge. A fee only applies if you cancel a "
                "fixed-term contract early or if the order has already been dispatched. For your specific "
                "case, our team can calculate the exact cancellation charge at "
                "{{Customer Support Phone Number}} during {{Customer Support Hours}}."
            ),
        ),
    },
    "contact_customer_service": {
        "topic": "contacting our customer service",
        "weight": 1.0,
        "user": (
            "How can I contact customer service?",
            "What's your customer support phone number?",
            "What are your customer service [hours|opening hours]?",
            "I need to get in touch with your support team about {item}.",
            "Is there an email address for customer support?",
            "Where can I find the contact details for customer service?",
            "Can I reach customer support on the weekend?",
            "How do I contact support from {device}?",
            "Do you have a live chat with customer service?",
        ),
        "terse": ("customer service number", "contact support", "support hours?", "customer service email"),
        "subjects": ("How to contact support", "Customer service contact details", "Support opening hours"),
        "replies": (
            (
                "You can reach our customer service team in several ways:\n"
                "1. Phone: {{Customer Support Phone Number}}, during {{Customer Support Hours}}.\n"
                "2. Live chat: {{Live Chat Support}} on {{Website URL}}.\n"
                '3. Email: through the contact form under "Help".\n'
                "We usually answer emails within [24 hours|one business day]."
            ),
            (
                "Our customer support is available during {{Customer Support Hours}}. The quickest way to "
                "reach us is the live chat on {{Website URL}}, where an agent typically replies within a few "
                "minutes. You can also call {{Customer Support Phone Number}} or send us a message from the "
                '"Help" section of the [app|mobile app].'
            ),
            (
                'Contacting customer service is simple: open the app, tap "Help" and choose how you\'d like '
                "to get in touch. Phone support at {{Customer Support Phone Number}} and live chat are "
                "available during {{Customer Support Hours}}, and our help center at "
                "{{Online Company Portal Info}} is open [around the clock|24/7]."
            ),
        ),
    },
    "contact_human_agent": {
        "topic": "connecting you with a human agent",
        "weight": 1.0,
        "user": (
            "I want to speak to a real person, not a bot.",
            "Can I talk to a human agent please?",
            "Transfer me to a live representative.",
            "How do I get through to an actual person on the phone?",
            "I've been chatting with the bot since {when}, I need a human.",
            "Please connect me with an agent about my order {{Order Number}}.",
            "Is there any way to speak with a human representative?",
            "Get me a human, the automated answers aren't helping.",
            "I need a live agent to help with {item}.",
        ),
        "terse": ("human agent", "talk to a person", "real agent please", "live representative"),
        "subjects": (
            "Request to speak with an agent",
            "Need a human representative",
            "Escalation to live agent",
        ),
        "replies": (
            (
                "Of course, I'll connect you with one of our agents. Here's what happens next:\n"
                "1. Stay in this chat; you'll be placed in the queue for a live agent.\n"
                "2. The current wait time is shown at the top of the window.\n"
                "3. Have your order number ready, if it's about an order.\n"
                "You can also call {{Customer Support Phone Number}} during {{Customer Support Hours}} to "
                "talk to an agent [directly|in person]."
            ),
            (
                "I understand you'd prefer to talk to a person. I'm transferring this conversation to a human "
                "agent now. Our representatives are available during {{Customer Support Hours}}; if you're "
                "contacting us outside those hours, leave a message and an agent will get back to you "
                "[first thing the next business day|as soon as we open]."
            ),
            (
                "Speaking with a human agent is easy: call {{Customer Support Phone Number}} and say "
                '"agent" at the menu, or open {{Live Chat Support}} on {{Website URL}} and choose "Talk to '
                "a person\". An agent will review your conversation history so you don't have to repeat "
                "[yourself|your question]."
            ),
        ),
    },
    "delivery_options": {
        "topic": "our delivery options",
        "weight": 1.0,
        "user": (
            "What delivery options do you offer?",
            "Do you have express shipping to {{Delivery City}}?",
            "Can I choose next-day delivery for {item}?",
            "What shipping methods are available for my country?",
            "Is there a pickup point option instead of home delivery?",
            "How much does standard delivery cost?",
            "Do you deliver on [weekends|Saturdays|Sundays]?",
            "Can I get {item} delivered to a parcel locker?",
            "Which couriers do you use for international delivery?",
        ),
        "terse": (
            "delivery options?",
            "express shipping available?",
            "shipping methods",
            "weekend delivery?",
        ),
        "subjects": (
            "Available delivery methods",
            "Express delivery question",
            "Shipping options to {{Delivery City}}",
        ),
        "replies": (
            (
                "We offer several delivery options:\n"
                "1. Standard delivery: 3-5 business days.\n"
                "2. Express delivery: 1-2 business days.\n"
                "3. Next-day delivery: order before [2 pm|noon] for delivery the next business day.\n"
                "4. Pickup point or parcel locker collection.\n"
                "Available options and prices for {{Delivery City}} are shown at checkout once you enter "
                "your address."
            ),
            (
                "At checkout you can choose between standard, express and scheduled delivery, as well as free "
                "collection from a pickup point near you. Express and scheduled delivery include Saturday "
                "slots in most areas. Shipping costs depend on the size of your order and your location; "
                "orders above a certain amount ship for [free|free of charge]."
            ),
            (
                "Our delivery options depend on your address. For {{Delivery City}} we currently support home "
                "delivery, parcel lockers and in-store pickup. International orders are shipped with tracked "
                "courier services. You can compare all options and costs on {{Website URL}} under "
                '"[Shipping information|Delivery information]".'
            ),
        ),
    },
    "delivery_period": {
        "topic": "the delivery time",
        "weight": 1.0,
        "user": (
            "How long will it take for my order to arrive?",
            "When will {item} be delivered?",
            "What's the estimated delivery time to {{Delivery City}}?",
            "I ordered {when}, how many days until it gets here?",
            "How long does shipping usually take?",
            "Will my package {{Order Number}} arrive before the weekend?",
            "What is the delivery time for express shipping?",
            "Can you tell me when my delivery is expected?",
            "How soon can I receive {item} if I order today?",
        ),
        "terse": ("delivery time?", "when will it arrive", "how long shipping", "ETA order {{Order Number}}"),
        "subjects": (
            "Expected delivery date",
            "How long does delivery take",
            "Delivery time for order {{Order Number}}",
        ),
        "replies": (
            (
                "Delivery times depend on the shipping method you chose:\n"
                "1. Standard: 3-5 business days.\n"
                "2. Express: 1-2 business days.\n"
                "3. International: 7-14 business days.\n"
                "You'll find the estimated delivery date for order {{Order Number}} in your confirmation "
                'email and under "[My orders|Order history]".'
            ),
            (
                "Most orders are dispatched within 24 hours and arrive in {{Delivery City}} within 2-4 "
                "business days. Once your package ships, you'll receive a tracking link so you can follow its "
                "progress and see an updated delivery window. Public holidays and peak seasons may add "
                "[a day or two|one or two days]."
            ),
            (
                'To see the expected delivery date, sign in at {{Website URL}} and open "My orders". The '
                "estimate is based on the item's availability, your address and the delivery option selected "
                "at checkout. If the date has passed and your order hasn't arrived, let us know and we'll "
                "check with the courier [right away|immediately]."
            ),
        ),
    },
    "complaint": {
        "topic": "your complaint",
        "weight": 1.0,
        "user": (
            "I want to file a complaint about the service I received.",
            "I'm very unhappy with {item}, it broke after a week.",
            "Your agent was extremely rude to me {when}.",
            "I'd like to make a formal complaint about my last order.",
            "The quality of {item} is terrible and nobody answers my emails.",
            "How do I submit a complaint about a delivery driver?",
            "I'm dissatisfied with how my issue was handled and want to complain.",
            "This is the third time my order {{Order Number}} was wrong, I want to complain.",
            "Where can I lodge a complaint about your customer support?",
        ),
        "terse": ("file a complaint", "complaint about service", "I want to complain", "formal complaint"),
        "subjects": (
            "Formal complaint",
            "Very disappointed with my order",
            "Complaint about customer service",
        ),
        "replies": (
            (
                "I'm truly sorry for the experience you've had, and thank you for telling us. To file a "
                "formal complaint:\n"
                '1. Go to {{Website URL}} > "Help" > "Complaints".\n'
                "2. Describe what happened and include your order number.\n"
                "3. Attach photos or screenshots if you have them.\n"
                "A complaints specialist will review your case and reply within [2 business days|48 hours]."
            ),
            (
                "I sincerely apologize; this is not the level of service we want to provide. I've recorded "
                "your complaint and escalated it to our quality team, who will investigate and contact you "
                "within [48 hours|two business days]. If you'd like to add details, reply to this message or "
                "call {{Customer Support Phone Number}} during {{Customer Support Hours}}."
            ),
            (
                "Your feedback is important, and I'm sorry we let you down. Please share the order number, "
                "the date of the incident and a short description, and we'll open a complaint case for you. "
                "You'll receive a case reference by email, and a [manager|senior team member] will follow up "
                "personally with a resolution."
            ),
        ),
    },
    "review": {
        "topic": "sharing your feedback",
        "weight": 0.8,
        "user": (
            "I'd like to leave a review for {item}.",
            "Where can I write feedback about my shopping experience?",
            "How do I rate the product I bought {when}?",
            "I want to say your delivery team was [fantastic|brilliant|great].",
            "Can I post a review about your customer service?",
            "I'd like to give feedback on your new app.",
            "How can I submit a product review with photos?",
            "Just wanted to share some positive feedback about my order {{Order Number}}.",
            "Where do I leave a rating for the seller?",
        ),
        "terse": ("leave a review", "give feedback", "rate product", "write review"),
        "subjects": ("Feedback on my recent order", "Product review", "Compliments for your team"),
        "replies": (
            (
                "Thank you for wanting to share your feedback! Here's how to leave a review:\n"
                '1. Sign in and open "My orders".\n'
                "2. Select the item you want to review.\n"
                '3. Click "Write a review", choose a star rating and add your comments.\n'
                "4. Optionally upload photos, then submit.\n"
                "Reviews are published within [48 hours|two days] after a quick moderation check."
            ),
            (
                "We really appreciate your feedback. You can rate your experience at any time from the "
                '"Feedback" section in {{Settings}} or through the survey link in your order confirmation '
                "email. Every review is read by our team and helps us improve our [products and service|"
                "service]."
            ),
            (
                "It's great to hear from you! To leave a product review, visit the product page on "
                '{{Website URL}} and scroll to "Customer reviews". For feedback about our service or '
                "delivery, use the form at {{Online Company Portal Info}}. We'll pass any compliments on to "
                "the team [involved|that helped you]."
            ),
        ),
    },
    "check_invoice": {
        "topic": "checking your invoice",
        "weight": 1.0,
        "user": (
            "I'd like to check invoice {{Invoice Number}}.",
            "Where can I see the invoice for my last purchase?",
            "The amount on my invoice looks wrong, can you check it?",
            "How do I view my invoices from {when}?",
            "Can you show me the details of invoice {{Invoice Number}}?",
            "I need to verify the charges on my invoice for {item}.",
            "Where do I find my billing history and invoices?",
            "Is the VAT included in invoice {{Invoice Number}}?",
            "I want to review the invoice for order {{Order Number}}.",
        ),
        "terse": (
            "check invoice {{Invoice Number}}",
            "view my invoice",
            "invoice details",
            "billing history",
        ),
        "subjects": (
            "Question about invoice {{Invoice Number}}",
            "Invoice amount incorrect",
            "Where to view invoices",
        ),
        "replies": (
            (
                "You can check your invoices online:\n"
                "1. Sign in at {{Website URL}}.\n"
                '2. Go to "My account" > "Invoices".\n'
                "3. Select invoice {{Invoice Number}} to see the itemized charges, taxes and payment method.\n"
                'If any amount looks incorrect, click "Report a problem" next to the invoice and our '
                "billing team will [review|check] it."
            ),
            (
                'All your invoices are stored under {{Online Company Portal Info}} in the "Billing" '
                "section, sorted by date. Each invoice shows the items purchased, shipping costs, discounts "
                "and VAT. If you spot a discrepancy, send us the invoice number and we'll verify the charges "
                "within [one business day|24 hours]."
            ),
            (
                'To review invoice details, open the app and tap {{Profile}} > "Billing history". You can '
                "filter by date range and download any invoice as a PDF. Should the total differ from what "
                "you expected, our billing specialists are available at {{Customer Support Phone Number}} "
                "during {{Customer Support Hours}}."
            ),
        ),
    },
    "get_invoice": {
        "topic": "getting a copy of your invoice",
        "weight": 1.0,
        "user": (
            "Can you send me a copy of my invoice?",
            "I need an invoice for order {{Order Number}} for my company.",
            "How do I download the invoice for {item}?",
            "Please email me the invoice {{Invoice Number}}.",
            "I didn't receive an invoice for my purchase {when}.",
            "Where can I get a PDF invoice for my expenses?",
            "I need a VAT invoice with my company name on it.",
            "Could you resend the invoice for my last order?",
            "How can I get a receipt for my payment?",
        ),
        "terse": ("send invoice", "invoice copy please", "download invoice", "need receipt"),
        "subjects": (
            "Invoice request for order {{Order Number}}",
            "Need a copy of my invoice",
            "VAT invoice required",
        ),
        "replies": (
            (
                "Here's how to get your invoice:\n"
                "1. Sign in at {{Website URL}}.\n"
                '2. Open "My orders" and select order {{Order Number}}.\n'
                '3. Click "Download invoice" to save it as a PDF.\n'
                "If you need a company name or VAT number on the invoice, add it under {{Settings}} > "
                '"Billing details" [before downloading|first].'
            ),
            (
                "I'll gladly help you get a copy. Invoices are generated automatically once an order ships "
                "and are emailed to the address on your account. If it didn't arrive, you can download it at "
                "any time from {{Online Company Portal Info}}, or I can resend invoice {{Invoice Number}} to "
                "your email [right away|now]."
            ),
            (
                "You can request an invoice directly from the order details page in the app: tap the order, "
                'then "Get invoice". For business purchases, enter your company details and VAT ID, and a '
                "tax-compliant invoice will be issued within [24 hours|one business day] and sent to your email."
            ),
        ),
    },
    "cancel_order": {
        "topic": "cancelling your order",
        "weight": 1.2,
        "user": (
            "I [want|need] to cancel my order {{Order Number}}.",
            "How do I cancel an order I placed {when}?",
            "Please cancel my purchase of {item}, {reason}.",
            "Can I still cancel my order if it hasn't shipped?",
            "I need to cancel the order I just made, I made a mistake.",
            "Cancel order {{Order Number}} please, I don't need it anymore.",
            "Is it too late to cancel my order for {item}?",
            "I'd like to [withdraw|cancel] my order, {reason}.",
            "Where's the cancel button for my recent order?",
        ),
        "terse": ("cancel order {{Order Number}}", "cancel my order", "cancel purchase", "stop my order"),
        "subjects": (
            "Cancel order {{Order Number}}",
            "Order cancellation request",
            "Please cancel my purchase",
        ),
        "replies": (
            (
                "I can help you cancel your order. Please follow these steps:\n"
                "1. Sign in to your account on {{Website URL}}.\n"
                '2. Go to "My orders" and find order {{Order Number}}.\n'
                '3. Click "Cancel order" and select a reason.\n'
                "4. Confirm the cancellation.\n"
                "If the order hasn't shipped yet, the cancellation is immediate and you'll receive a full "
                "refund to your [original payment method|card or account]."
            ),
            (
                "Orders can be cancelled free of charge until they are dispatched. Open "
                '{{Online Company Portal Info}}, select the order and choose "Cancel". If the button is no '
                "longer available, the order has already shipped; in that case you can refuse the delivery "
                "or return it within [30|14] days for a refund of {{Refund Amount}}."
            ),
            (
                'To cancel order {{Order Number}}, open the app, tap "Orders", select the purchase and tap '
                '"Cancel items". You can cancel the entire order or just individual items. You\'ll get a '
                "cancellation confirmation by email, and any payment already taken is refunded within "
                "[3-5 business days|a few business days]."
            ),
        ),
    },
    "change_order": {
        "topic": "changing your order",
        "weight": 1.0,
        "user": (
            "I need to change the [size|color] on my order {{Order Number}}.",
            "Can I add {item} to the order I placed {when}?",
            "How do I modify my order before it ships?",
            "I want to remove an item from my order.",
            "Is it possible to change the color of {item} I ordered?",
            "I ordered the wrong quantity, can I update my order?",
            "Please swap {item} in my order for a different model.",
            "Can I edit my order {{Order Number}} after paying?",
            "I'd like to change the delivery date of my order.",
        ),
        "terse": (
            "change my order",
            "modify order {{Order Number}}",
            "edit order items",
            "update order quantity",
        ),
        "subjects": ("Change to order {{Order Number}}", "Modify my order", "Wrong size ordered"),
        "replies": (
            (
                "You can change your order as long as it hasn't been dispatched:\n"
                '1. Sign in and open "My orders".\n'
                '2. Select order {{Order Number}} and click "Edit order".\n'
                "3. Change the size, color or quantity, or add and remove items.\n"
                "4. Review the new total and confirm.\n"
                "Any price difference will be charged or refunded to your [original payment method|card]."
            ),
            (
                'Happy to help you modify your order. If the status still shows "Processing", you can make '
                'changes under {{Online Company Portal Info}}. Once an order is marked "Shipped", it can no '
                "longer be edited, but you can return unwanted items for free and place a new order for the "
                "[correct|right] ones."
            ),
            (
                'To change your order, open the app, go to "Orders" and tap "Modify" next to the purchase. '
                "You can update item options, quantities and the delivery slot. If you don't see the option, "
                "contact us at {{Customer Support Phone Number}} and we'll check whether the warehouse can "
                "still apply the [change|update]."
            ),
        ),
    },
    "place_order": {
        "topic": "placing an order",
        "weight": 1.0,
        "user": (
            "How do I place an order on {{Website URL}}?",
            "I want to buy {item}, how do I order it?",
            "Can I place an order over the phone?",
            "I'd like to order {item} for delivery to {{Delivery City}}.",
            "What's the easiest way to make a purchase in your app?",
            "Can you help me complete my order? I'm stuck at checkout.",
            "I want to order two of {item}, is there a bulk discount?",
            "How do I buy something as a guest without an account?",
            "I'd like to place an order for {item} today.",
        ),
        "terse": ("place an order", "buy online how", "order now", "how to order"),
        "subjects": ("Help placing an order", "Ordering {item}", "Checkout problem"),
        "replies": (
            (
                "Placing an order is quick:\n"
                "1. Find the product on {{Website URL}} and select the size, color or quantity.\n"
                '2. Click "Add to cart".\n'
                '3. Open your cart and click "Checkout".\n'
                "4. Enter your delivery address, choose a shipping method and pay.\n"
                "You'll receive an order confirmation with your order number [by email|in your inbox]."
            ),
            (
                "You can place an order on our website, in the app, or by calling "
                "{{Customer Support Phone Number}} during {{Customer Support Hours}}. Online, just add the "
                "items to your cart, proceed to checkout and choose your preferred payment method. You can "
                "check out as a guest or sign in to save your details for [next time|future orders]."
            ),
            (
                "I'd be glad to help you complete your purchase. If you're stuck at checkout, please make sure "
                "your delivery address is complete and your payment details are correct. Refreshing the page "
                "or trying the app often helps. Once the order is submitted, you can follow its progress "
                "under {{Online Order Interaction}}."
            ),
        ),
    },
    "track_order": {
        "topic": "tracking your order",
        "weight": 1.3,
        "user": (
            "Where is my order {{Order Number}}?",
            "How can I track the package I ordered {when}?",
            "I haven't received {item} yet, can you check the status?",
            "Can you give me the tracking number for my order?",
            "My tracking page hasn't updated in [days|a week].",
            "What's the current status of order {{Order Number}}?",
            "I need to know where my parcel is, it's late.",
            "How do I follow my delivery in the app?",
            "The courier says delivered but I don't have {item}.",
        ),
        "terse": ("track order {{Order Number}}", "where's my package", "order status", "tracking number?"),
        "subjects": ("Where is my order {{Order Number}}?", "Tracking not updating", "Order status inquiry"),
        "replies": (
            (
                "You can track your order in a few steps:\n"
                "1. Sign in at {{Website URL}}.\n"
                '2. Go to "My orders" and select order {{Order Number}}.\n'
                '3. Click "Track package" to see the latest courier updates.\n'
                "You can also use the tracking link in your [shipping confirmation email|dispatch email]."
            ),
            (
                "Tracking information usually appears within 24 hours after your order ships. Open "
                "{{Online Order Interaction}} to see the current status, the courier and the estimated "
                "delivery date. If the tracking hasn't updated for more than [3|5] business days, let us know "
                "and we'll open an inquiry with the carrier."
            ),
            (
                "I'm sorry your package hasn't arrived yet. If tracking shows it as delivered but you don't "
                "have it, please check with neighbours and your building's reception, and look for a delivery "
                "note. If it still can't be found within 48 hours, contact us at "
                "{{Customer Support Phone Number}} and we'll send a replacement or issue a [refund|full refund]."
            ),
        ),
    },
    "check_payment_methods": {
        "topic": "our payment methods",
        "weight": 1.0,
        "user": (
            "What payment methods do you accept?",
            "Can I pay with {pay}?",
            "Do you accept PayPal?",
            "Is it possible to pay in installments for {item}?",
            "Which credit cards can I use at checkout?",
            "Can I pay cash on delivery?",
            "Do you take Apple Pay or Google Pay?",
            "Can I use a gift card together with {pay}?",
            "What are the payment options for customers in {{Delivery City}}?",
        ),
        "terse": ("payment methods?", "accept PayPal?", "pay with Klarna?", "payment options"),
        "subjects": ("Accepted payment methods", "Paying with {pay}", "Installment payment options"),
        "replies": (
            (
                "We accept a range of payment methods:\n"
                "1. Credit and debit cards (Visa, Mastercard, American Express).\n"
                "2. PayPal, Apple Pay and Google Pay.\n"
                "3. Gift cards and store credit.\n"
                "4. Bank transfer and, in some regions, pay later in installments.\n"
                "All available options for your address are shown at [checkout|the payment step]."
            ),
            (
                "You can choose your payment method at the last step of checkout. We support major credit "
                "cards, digital wallets such as PayPal and Apple Pay, and gift cards, which can be combined "
                "with another method. For larger purchases, installment plans are available in "
                "[selected|some] countries."
            ),
            (
                'Our payment options are listed on {{Website URL}} under "Payment information". You can '
                "save a preferred payment method in {{Settings}} for faster checkout. Please note that cash on "
                "delivery isn't available for all locations, but the checkout page will tell you if it's "
                "offered in your [area|region]."
            ),
        ),
    },
    "payment_issue": {
        "topic": "the payment problem",
        "weight": 1.1,
        "user": (
            "My payment was declined but I have enough money.",
            "I was charged twice for my order {{Order Number}}.",
            "The payment with {pay} keeps failing at checkout.",
            "I paid for {item} {when} but the order still says unpaid.",
            "Why was my card rejected?",
            "There's an error when I try to pay, what's wrong?",
            "My bank shows a charge but I never got an order confirmation.",
            "I can't complete the payment on {device}.",
            "The payment page times out every time I try to pay.",
        ),
        "terse": ("payment declined", "charged twice", "payment failed", "card rejected"),
        "subjects": (
            "Payment declined",
            "Double charge on order {{Order Number}}",
            "Problem completing payment",
        ),
        "replies": (
            (
                "I'm sorry you're having trouble with your payment. Please try the following:\n"
                "1. Check that your card details, expiry date and billing address are correct.\n"
                "2. Make sure your bank hasn't blocked online payments.\n"
                "3. Try a different payment method or browser.\n"
                "If you were charged but didn't receive a confirmation, the amount is usually an "
                "authorization hold and will be released by your bank within [3-5 business days|a few days]."
            ),
            (
                "Declined payments are most often caused by the card issuer's security checks. Please contact "
                "your bank to approve the transaction, then try again at checkout. If you see a duplicate "
                "charge for order {{Order Number}}, don't worry: one of them will be reversed automatically, "
                "and we can confirm this for you at {{Customer Support Phone Number}}."
            ),
            (
                "Let's get your payment sorted. Please share the exact error message you see and the payment "
                "method you used, and I'll check the transaction on our side. In the meantime, clearing your "
                "browser cache or using the app usually resolves checkout timeouts. Your order is reserved for "
                "[24 hours|one day], so you won't lose it."
            ),
        ),
    },
    "check_refund_policy": {
        "topic": "our refund policy",
        "weight": 1.0,
        "user": (
            "What is your refund policy?",
            "Can I get my money back if I don't like {item}?",
            "How many days do I have to ask for a refund?",
            "Do you refund shipping costs?",
            "Are sale items eligible for a refund?",
            "What's your money-back guarantee?",
            "Do I get a full refund if the product arrives damaged?",
            "Can I get a refund on digital purchases?",
            "Is there a refund policy for orders shipped to {{Delivery City}}?",
        ),
        "terse": ("refund policy?", "money-back guarantee", "refund rules", "refund eligibility"),
        "subjects": ("Question about your refund policy", "Refund eligibility", "Money-back guarantee"),
        "replies": (
            (
                "Here is a summary of our refund policy:\n"
                "1. You can request a refund within [30|60] days of delivery.\n"
                "2. Items must be unused and in their original packaging.\n"
                "3. Damaged or faulty items are refunded in full, including shipping costs.\n"
                "4. Refunds go back to your original payment method.\n"
                'You can read the full policy on {{Website URL}} under "Returns and refunds".'
            ),
            (
                "Our money-back guarantee lets you return most items within 30 days for a full refund. Sale "
                'items are eligible too, unless marked "final sale". Digital products can be refunded if '
                "they haven't been downloaded. Standard shipping costs are refunded when the return is due to "
                "[our error|a mistake on our side]."
            ),
            (
                "Under our refund policy, once we receive and inspect your return, the refund is approved "
                "within 2 business days and appears on your statement within 5-10 business days, depending on "
                "your bank. Full details, including exceptions, are available at "
                "{{Online Company Portal Info}}."
            ),
        ),
    },
    "get_refund": {
        "topic": "your refund",
        "weight": 1.2,
        "user": (
            "I want a refund for {item}, {reason}.",
            "How do I get my money back for order {{Order Number}}?",
            "I'd like to request a refund, the item doesn't work.",
            "Please refund {{Refund Amount}} to my card.",
            "Can I get a refund instead of a replacement?",
            "I need to request a refund for a cancelled order.",
            "How do I start the refund process for {item}?",
            "I was overcharged and want a refund of the difference.",
            "I'd like my money back, {reason}.",
        ),
        "terse": ("refund please", "request refund", "refund order {{Order Number}}", "I want refund"),
        "subjects": (
            "Refund request for order {{Order Number}}",
            "Requesting my money back",
            "Refund for faulty item",
        ),
        "replies": (
            (
                "I'm sorry the purchase didn't work out. To request a refund:\n"
                '1. Go to "My orders" on {{Website URL}}.\n'
                '2. Select order {{Order Number}} and click "Request refund".\n'
                "3. Choose the items and the reason, then print the free return label.\n"
                "4. Send the items back within 30 days.\n"
                "Once we receive them, your refund of {{Refund Amount}} is issued to your "
                "[original payment method|card or account]."
            ),
            (
                "I'll gladly help you get your money back. For items that arrived faulty or damaged, you don't "
                "need to send them back first: just upload a photo under {{Online Order Interaction}}, and "
                "we'll process the refund within [2 business days|48 hours]. For other returns, the refund is "
                "issued as soon as the item reaches our warehouse."
            ),
            (
                "You can choose between a refund and a replacement when you submit a return in the app. If you "
                "choose a refund, we'll credit {{Refund Amount}} to the card or account you paid with. Refunds "
                "for cancelled orders are automatic and usually appear within [3-5 business days|a few days]."
            ),
        ),
    },
    "track_refund": {
        "topic": "the status of your refund",
        "weight": 1.0,
        "user": (
            "Where is my refund? I returned the item {when}.",
            "Can you check the status of my refund for order {{Order Number}}?",
            "I still haven't received my refund of {{Refund Amount}}.",
            "How long does the refund take to show up on my card?",
            "My refund was approved but the money isn't in my account.",
            "When will I get the refund for {item}?",
            "Can you track the refund you promised me?",
            "It's been [two weeks|ten days|a month] and my refund still hasn't arrived.",
            "Has my refund been processed yet?",
        ),
        "terse": ("refund status", "where's my refund", "track refund", "refund not received"),
        "subjects": (
            "Refund not received",
            "Status of refund for order {{Order Number}}",
            "Where is my money?",
        ),
        "replies": (
            (
                "You can check your refund status any time:\n"
                '1. Sign in and go to "My orders".\n'
                "2. Select order {{Order Number}}.\n"
                '3. Look for the "Refund" section, which shows whether the refund is pending, approved or '
                "completed.\n"
                "Once approved, refunds of {{Refund Amount}} usually reach your account within [5-10|7-10] "
                "business days, depending on your bank."
            ),
            (
                "I understand waiting for a refund is frustrating. Refunds are issued as soon as the return is "
                "checked at the warehouse; after that, your bank may take a few more days to display it. If "
                "more than 10 business days have passed since approval, please reply with your order number "
                "and we'll send you the transaction reference to share with your [bank|card issuer]."
            ),
            (
                "Refund status updates are also sent by email at each step: return received, refund approved "
                "and refund issued. If you paid with PayPal, the money appears within 24 hours; card refunds "
                "can take up to a week. For a detailed check, contact {{Customer Support Phone Number}} "
                "during {{Customer Support Hours}}."
            ),
        ),
    },
    "change_shipping_address": {
        "topic": "changing your shipping address",
        "weight": 1.0,
        "user": (
            "I need to change the shipping address for order {{Order Number}}.",
            "I moved {when}, how do I update my delivery address?",
            "Can I ship my order to a different address?",
            "I entered the wrong address at checkout, please help.",
            "How do I edit my saved shipping address?",
            "Please send {item} to my work address in {{Delivery City}} instead.",
            "Can the delivery address be changed after the order has shipped?",
            "My address has a typo, can you correct it?",
            "I want to redirect my package to my new [home|flat|apartment].",
        ),
        "terse": (
            "change shipping address",
            "update delivery address",
            "wrong address fix",
            "new address for order",
        ),
        "subjects": (
            "Change shipping address",
            "Wrong delivery address",
            "Update address for order {{Order Number}}",
        ),
        "replies": (
            (
                "You can change the shipping address as long as the order hasn't shipped:\n"
                '1. Sign in and open "My orders".\n'
                '2. Select order {{Order Number}} and click "Change address".\n'
                "3. Enter the new address and save.\n"
                'To update the address for future orders, go to {{Settings}} > "Addresses" and edit or '
                "replace your [default|saved] address."
            ),
            (
                "I'll help you update the delivery address. If the order is still being processed, the change "
                "can be made in {{Online Company Portal Info}}. If it has already shipped, you can usually "
                "redirect the package through the courier's tracking page, or we can request the change with "
                "the [carrier|courier] for you."
            ),
            (
                'To correct a shipping address, open the app, go to {{Profile}} > "Saved addresses" and tap '
                'the address you want to edit. For an order in progress, tap the order and select "Edit '
                "delivery address\". We'll send a confirmation to your email once the new address is "
                "[saved|updated]."
            ),
        ),
    },
    "set_up_shipping_address": {
        "topic": "setting up a shipping address",
        "weight": 0.8,
        "user": (
            "How do I add a shipping address to my account?",
            "I want to set up a new delivery address.",
            "Can I save more than one shipping address?",
            "Where do I enter my shipping address before ordering {item}?",
            "I'd like to add my office in {{Delivery City}} as a delivery address.",
            "How can I set a default shipping address?",
            "The app won't let me save my shipping address.",
            "I need to register an address for deliveries on {device}.",
            "Can I add a parcel locker as my shipping address?",
        ),
        "terse": ("add shipping address", "set up address", "new delivery address", "save shipping address"),
        "subjects": ("Adding a shipping address", "Set default delivery address", "Can't save my address"),
        "replies": (
            (
                "Setting up a shipping address only takes a minute:\n"
                "1. Sign in at {{Website URL}}.\n"
                '2. Go to {{Settings}} > "Addresses".\n'
                '3. Click "Add new address" and fill in the details.\n'
                '4. Tick "Set as default" if you\'d like to use it for future orders.\n'
                "You can save several addresses and choose between them at [checkout|the last step of checkout]."
            ),
            (
                'To add a new delivery address, open {{Profile}} in the app and tap "Shipping addresses" > '
                '"Add". Enter the full street address, postcode and a phone number for the courier. If the '
                "app won't save it, please check that the postcode matches the city and that no required "
                "fields are [empty|left blank]."
            ),
            (
                "You can add a shipping address during checkout or in advance from "
                "{{Online Company Portal Info}}. We support home, office and parcel locker addresses. Once "
                "saved, your default address is pre-filled for every order, and you can change it at "
                "[any time|any point]."
            ),
        ),
    },
    "newsletter_subscription": {
        "topic": "your newsletter subscription",
        "weight": 0.8,
        "user": (
            "How do I subscribe to your newsletter?",
            "I want to unsubscribe from the marketing emails.",
            "Please stop sending me newsletters.",
            "Can I sign up for the newsletter to get discount codes?",
            "I keep getting promotional emails even though I unsubscribed {when}.",
            "How do I change how often I receive the newsletter?",
            "I'd like to join your mailing list for new arrivals.",
            "Where can I manage my email subscription preferences?",
            "Do newsletter subscribers get a discount on {item}?",
        ),
        "terse": ("subscribe newsletter", "unsubscribe emails", "stop newsletter", "join mailing list"),
        "subjects": ("Newsletter subscription", "Unsubscribe request", "Stop promotional emails"),
        "replies": (
            (
                "You can manage your newsletter subscription easily:\n"
                '1. Sign in and go to {{Settings}} > "Communication preferences".\n'
                '2. Tick or untick "Newsletter".\n'
                "3. Choose how often you'd like to hear from us.\n"
                "4. Save your preferences.\n"
                "You can also unsubscribe in one step using the link at the bottom of any "
                "[newsletter|marketing email]."
            ),
            (
                "To join our newsletter, enter your email in the sign-up box at the bottom of {{Website URL}} "
                "and confirm via the email we send you. Subscribers get early access to sales and a welcome "
                "discount. If you'd like to unsubscribe, the change takes effect within [48 hours|two days]."
            ),
            (
                "I'm sorry you're still receiving emails. I've noted your request; please also check "
                '{{Settings}} > "Email preferences" to make sure all marketing options are switched off. It '
                "can take up to 2 days for the change to reach every mailing list, after which the newsletters "
                "will [stop|no longer arrive]."
            ),
        ),
    },
}


@dataclass(frozen=True)
class _Intent:
    """Compiled content for one intent."""

    name: str
    topic: str
    weight: float
    user: tuple[_Template, ...]
    terse: tuple[_Template, ...]
    subjects: tuple[_Template, ...]
    replies: tuple[_Template, ...]


def _build_intents() -> dict[str, _Intent]:
    """Compile the catalog and fail loudly if it drifts from the schema's taxonomy."""
    if sorted(_CATALOG) != sorted(INTENTS):
        missing = sorted(set(INTENTS) ^ set(_CATALOG))
        raise RuntimeError(f"synthetic catalog and TAXONOMY disagree on intents: {missing}")
    out: dict[str, _Intent] = {}
    for name in INTENTS:  # sorted: iteration order never depends on dict/set internals
        spec = _CATALOG[name]
        if len(spec["user"]) < 8 or len(spec["replies"]) < 3:
            raise RuntimeError(f"intent {name!r} needs >= 8 user and >= 3 reply templates")
        out[name] = _Intent(
            name=name,
            topic=spec["topic"],
            weight=float(spec["weight"]),
            user=_compile_all(spec["user"]),
            terse=_compile_all(spec["terse"]),
            subjects=_compile_all(spec["subjects"]),
            replies=_compile_all(spec["replies"], vary=True),
        )
    return out


_INTENT_SPECS = _build_intents()

# ---------------------------------------------------------------- generic assistant text

_OPENERS = _compile_all(
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
_DEESCALATE = _compile_all(
    (
        "I'm really sorry for the frustration this has caused, and I want to help with {topic} right away.",
        "I completely understand your frustration, and I apologize for the trouble. Let's resolve {topic} together.",
        "I'm sorry this has been such a [bad|disappointing] experience. I'll help you with {topic} now.",
    ),
    vary=True,
)
_CLOSERS = _compile_all(
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
_FOLLOWUPS: tuple[tuple[tuple[_Template, ...], tuple[_Template, ...]], ...] = tuple(
    (_compile_all(u), _compile_all(a, vary=True))
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
_CLOSING_TURN = (
    _compile_all(
        ("great, that worked, thanks!", "perfect, thank you so much", "ok got it, thanks for the help")
    ),
    _compile_all(
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


def _join(prefix: str, text: str) -> str:
    """Prefix + text, lower-casing the text's first letter mid-sentence ("Hi, how do I")."""
    mid_sentence = prefix.endswith(", ") or (prefix.endswith(" ") and prefix[-2:-1].isalpha())
    if mid_sentence and text and not text.startswith(("I ", "I'", "{")):
        text = text[0].lower() + text[1:]
    return prefix + text


_TRAILING_PUNCT = ".,!?;:'\")"


def _typos(text: str, rng: random.Random) -> str:
    """Swap, drop or double one inner letter in ~1 of 6 words; placeholders are left intact."""
    words = text.split(" ")
    eligible = [
        i
        for i, w in enumerate(words)
        if len(w.rstrip(_TRAILING_PUNCT)) >= 4 and "{" not in w and "}" not in w
    ]
    hits = [i for i in eligible if rng.random() < 1 / 6]
    if not hits and eligible:  # a "typos" row should always show at least one typo
        hits = [_ch(rng, eligible)]
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


def _user_text(spec: _Intent, register: str, rng: random.Random) -> str:
    """One user request for `spec` in the given register."""
    if register == "terse":
        return _ch(rng, spec.terse).render(rng) + _ch(rng, _TERSE_SUFFIX)
    core = _ch(rng, spec.user).render(rng)
    if rng.random() < 0.4:
        core += " " + _CONTEXT_T[rng.randrange(len(_CONTEXT_T))].render(rng)
    if register == "polite":
        return _ch(rng, _POLITE_OPEN) + core + _ch(rng, _POLITE_CLOSE)
    if register == "colloquial":
        text = _join(_ch(rng, _COLLOQUIAL_OPEN), _colloquial(core))
        return text.rstrip(".") + _ch(rng, _COLLOQUIAL_CLOSE)
    if register == "offensive":
        return _join(_ch(rng, _OFFENSIVE_OPEN), core) + _ch(rng, _OFFENSIVE_CLOSE)
    text = _join(_ch(rng, _NEUTRAL_OPEN), core) + _ch(rng, _NEUTRAL_CLOSE)
    return _typos(text, rng) if register == "typos" else text


def _assistant_text(spec: _Intent, register: str, rng: random.Random) -> str:
    """Empathetic opener + intent-specific body + closer; always clean and professional."""
    openers = _DEESCALATE if register == "offensive" else _OPENERS
    opener = _ch(rng, openers).render(rng).replace("{topic}", spec.topic)
    body = _ch(rng, spec.replies).render(rng)
    closer = _ch(rng, _CLOSERS).render(rng)
    return f"{opener} {body}{chr(10) * 2 if chr(10) in body else ' '}{closer}"


# ====================================================================== row builders


@dataclass
class _Row:
    """A record under construction: plain lists, turned into a `Record` at the very end."""

    kind: str
    intent: str
    messages: list[list[str]]  # [role, content]
    meta: dict[str, Any]

    def key(self) -> bytes:
        """Digest of the lower-cased text: what exact-duplicate detection compares.

        Generated text never differs from another row by whitespace alone, so
        lower-casing matches the clean stage's normalization without its cost.
        """
        text = "\x1f".join([c for _, c in self.messages]).lower()
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    def copy(self) -> _Row:
        return _Row(self.kind, self.intent, [list(m) for m in self.messages], dict(self.meta))


_PRIORITIES = ("low", "normal", "high", "urgent")
_PRIORITY_W = (0.3, 0.45, 0.2, 0.05)
_CHANNELS = ("email", "web", "chat", "phone")
_AREA_BY_CATEGORY = {
    "ACCOUNT": "customer account",
    "CANCEL": "billing",
    "CONTACT": "customer care",
    "DELIVERY": "logistics",
    "FEEDBACK": "customer care",
    "INVOICE": "billing",
    "ORDER": "orders",
    "PAYMENT": "checkout",
    "REFUND": "returns",
    "SHIPPING": "logistics",
    "SUBSCRIPTION": "marketing",
}
_AREAS = tuple(sorted(set(_AREA_BY_CATEGORY.values())) + ["mobile app", "web shop"])
_GREETINGS = (
    "Hello,",
    "Hi team,",
    "Dear Customer Support,",
    "Hello Support Team,",
    "To whom it may concern,",
    "Hi,",
)
_SIGNOFFS = (
    "Best regards,\n{{Person Name}}",
    "Thanks,\n{{Person Name}}",
    "Kind regards,\n{{Person Name}}",
    "Regards,\n{{Person Name}}\n{{Account Type}} customer",
    "Sent from my phone",
)
_TICKET_REPLY_OPEN = ("Dear {{Person Name}},", "Hello {{Person Name}},", "Hi {{Person Name}},")
_TICKET_REPLY_CLOSE = (
    "Kind regards,\nCustomer Support Team",
    "Best regards,\nThe Support Team",
    "Thank you,\nCustomer Care",
)


def _qa(spec: _Intent, register: str, rng: random.Random) -> _Row:
    msgs = [["user", _user_text(spec, register, rng)], ["assistant", _assistant_text(spec, register, rng)]]
    return _Row("qa", spec.name, msgs, {"register": register})


def _conversation(spec: _Intent, register: str, rng: random.Random) -> _Row:
    """2-4 user/assistant exchanges on one intent, ending with the assistant."""
    exchanges = rng.randint(2, 4)
    msgs = [["user", _user_text(spec, register, rng)], ["assistant", _assistant_text(spec, register, rng)]]
    picks = rng.sample(range(len(_FOLLOWUPS)), exchanges - 1)
    if rng.random() < 0.5:  # often the customer closes with a thank-you
        picks[-1] = -1
    for p in picks:
        users, replies = _CLOSING_TURN if p < 0 else _FOLLOWUPS[p]
        question = _ch(rng, users).render(rng)
        if register == "typos":
            question = _typos(question, rng)
        answer = _ch(rng, replies).render(rng).replace("{topic}", spec.topic)
        msgs += [["user", question], ["assistant", answer]]
    meta = {"register": register, "conversation_id": f"conv-{rng.getrandbits(40):010x}", "turns": exchanges}
    return _Row("conversation", spec.name, msgs, meta)


def _ticket(spec: _Intent, register: str, rng: random.Random) -> _Row:
    """A ticket-shaped user message (subject + body + sign-off) and a letter-style reply."""
    priority = rng.choices(_PRIORITIES, _PRIORITY_W)[0]
    if register == "offensive" and priority in ("low", "normal"):
        priority = "high"  # angry customers get escalated
    subject = _ch(rng, spec.subjects).render(rng)
    if priority == "urgent" or (register == "offensive" and rng.random() < 0.5):
        subject = "URGENT: " + subject
    body = _user_text(spec, register, rng)
    user = f"Subject: {subject}\n\n{_ch(rng, _GREETINGS)}\n\n{body}\n\n{_ch(rng, _SIGNOFFS)}"
    reply = (
        f"{_ch(rng, _TICKET_REPLY_OPEN)}\n\n{_assistant_text(spec, register, rng)}\n\n"
        f"{_ch(rng, _TICKET_REPLY_CLOSE)}"
    )
    # Routing is usually right but not always: product_area correlates with, but does not reveal, the intent.
    category = INTENT_TO_CATEGORY[spec.name]
    area = _AREA_BY_CATEGORY[category] if rng.random() < 0.7 else _ch(rng, _AREAS)
    meta = {
        "register": register,
        "ticket_id": f"TCK-{rng.randrange(10**7):07d}",
        "priority": priority,
        "channel": _ch(rng, _CHANNELS),
        "product_area": area,
    }
    return _Row("ticket", spec.name, [["user", user], ["assistant", reply]], meta)


_BUILDERS = {"qa": _qa, "conversation": _conversation, "ticket": _ticket}


def _clean_rows(n: int, kinds: dict[str, float], rng: random.Random) -> tuple[list[_Row], set[bytes]]:
    """`n` defect-free rows; exact (normalized) repeats are re-drawn so duplicates are only the injected ones."""
    intents = list(INTENTS)
    intent_cum = _cumulative([_INTENT_SPECS[i].weight for i in intents])
    kind_names = sorted(kinds)
    kind_cum = _cumulative([kinds[k] for k in kind_names])
    reg_cum = _cumulative(_REGISTER_WEIGHTS)
    seen: set[bytes] = set()
    rows: list[_Row] = []
    for _ in range(n):
        for _attempt in range(20):
            spec = _INTENT_SPECS[intents[_pick(intent_cum, rng)]]
            kind = kind_names[_pick(kind_cum, rng)]
            register = REGISTERS[_pick(reg_cum, rng)]
            row = _BUILDERS[kind](spec, register, rng)
            key = row.key()
            if key not in seen:
                break
        else:  # content space exhausted for this draw (tiny catalogs only): make it unique
            row.messages[0][1] += f" (ref {len(rows)})"
            key = row.key()
        seen.add(key)
        rows.append(row)
    return rows, seen


def _cumulative(weights: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def _pick(cum: list[float], rng: random.Random) -> int:
    """Weighted index draw (what random.choices does, without building a list each call)."""
    return min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)


# ====================================================================== defects

_FIRST = (
    "jane",
    "john",
    "maria",
    "li",
    "ahmed",
    "sofia",
    "lucas",
    "emma",
    "noah",
    "olivia",
    "raj",
    "chen",
    "fatima",
    "tom",
)
_LAST = (
    "doe",
    "smith",
    "garcia",
    "wang",
    "khan",
    "muller",
    "rossi",
    "nguyen",
    "brown",
    "silva",
    "kowalski",
    "ito",
)
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "inbox.example.co.uk")
_EMAIL_PHRASES = (
    "My email is {}.",
    "You can reach me at {}.",
    "Please reply to {}.",
    "my email address is {}",
)
_PHONE_PHRASES = ("Call me on {}.", "My phone number is {}.", "You can ring me at {}.", "my number: {}")
_CARD_PHRASES = ("My card number is {}.", "I paid with card {}.", "The card {} was charged.", "card no. {}")
# Luhn-valid test numbers published by card networks/processors: never real cards.
_TEST_CARDS = (
    "4111111111111111",
    "4242424242424242",
    "4012888888881881",
    "5555555555554444",
    "5105105105105100",
    "6011111111111117",
    "378282246310005",
    "371449635398431",
)


def _email(rng: random.Random) -> str:
    first, last = _ch(rng, _FIRST), _ch(rng, _LAST)
    style = rng.randrange(3)
    local = (
        f"{first}.{last}{rng.randrange(100)}"
        if style == 0
        else f"{first[0]}{last}"
        if style == 1
        else f"{first}_{last}"
    )
    return f"{local}@{_ch(rng, _DOMAINS)}"


def _phone(rng: random.Random) -> str:
    """Numbers from ranges reserved for fiction (US 555-01xx, UK Ofcom drama ranges)."""
    k = rng.randrange(5)
    if k == 0:
        return f"+1 415-555-01{rng.randrange(100):02d}"
    if k == 1:
        return f"(020) 7946 0{rng.randrange(1000):03d}"
    if k == 2:
        return f"+44 20 7946 0{rng.randrange(1000):03d}"
    if k == 3:
        return f"+1 (212) 555-01{rng.randrange(100):02d}"
    return f"0161 496 0{rng.randrange(1000):03d}"


def _card(rng: random.Random) -> str:
    digits = _ch(rng, _TEST_CARDS)
    sep = _ch(rng, (" ", "-", " ", ""))
    if len(digits) == 15:  # Amex groups 4-6-5
        return sep.join((digits[:4], digits[4:10], digits[10:])) if sep else digits
    return sep.join(digits[i : i + 4] for i in range(0, 16, 4))


_PII_MAKERS = {
    "pii_email": (_EMAIL_PHRASES, _email),
    "pii_phone": (_PHONE_PHRASES, _phone),
    "pii_card": (_CARD_PHRASES, _card),
}


def _insert_pii(text: str, kind: str, rng: random.Random) -> str:
    """Add a PII sentence to the user text (into a ticket's body, before its sign-off)."""
    phrases, make = _PII_MAKERS[kind]
    sentence = _ch(rng, phrases).format(make(rng))
    parts = text.split("\n\n")
    if len(parts) >= 3:
        parts[-2] = f"{parts[-2]} {sentence}"
        return "\n\n".join(parts)
    return f"{text} {sentence}"


_MARKUP_CLASSES = ("msg-body", "ticket-content", "ql-editor", "email-body", "chat-bubble")


def _markup(text: str, rng: random.Random) -> str:
    """HTML as a web form or email export leaves it: wrappers, <br/>, <b>, entities."""
    t = text.replace("\n", "<br/>\n") if rng.random() < 0.7 else text
    if " and " in t and rng.random() < 0.7:
        t = t.replace(" and ", " &amp; ", 1)
    words = t.split(" ")
    # tags and &nbsp; go between plain words only, so a co-occurring email/phone/card stays intact
    plain = [i for i, w in enumerate(words) if w.isalpha()]
    if len(plain) > 3 and rng.random() < 0.6:
        i = _ch(rng, plain)
        words[i] = f"<b>{words[i]}</b>"
    pairs = [i for i in plain if i + 1 < len(words) and words[i + 1].isalpha()]
    if pairs:
        j = _ch(rng, pairs)
        words[j] = words[j] + "&nbsp;" + words[j + 1]
        del words[j + 1]
    t = " ".join(words)
    style = rng.randrange(3)
    if style == 0:
        return f"<p>{t}</p>"
    if style == 1:
        return f'<div class="{_ch(rng, _MARKUP_CLASSES)}"><p>{t}</p></div>'
    return f'<div class="{_ch(rng, _MARKUP_CLASSES)}">{t}<br/></div>'


# cp1252 decodes 0x80-0x9F to typographic characters; bytes it leaves undefined
# (0x81, 0x8D, 0x8F, 0x90, 0x9D) keep their Latin-1 control character, which is what
# ftfy's "sloppy-windows-1252" expects. With errors="replace" they would become U+FFFD
# and e.g. a closing quote (E2 80 9D) could never be repaired.
def _cp1252_high() -> dict[int, str]:
    table = {}
    for b in range(0x80, 0xA0):
        try:
            table[b] = bytes([b]).decode("cp1252")
        except UnicodeDecodeError:
            pass
    return table


_CP1252_HIGH = _cp1252_high()
_DOUBLE_QUOTED = re.compile(r'"([^"\n]*)"')
_NON_ASCII_TAILS = (
    " Thanks \u2014 it\u2019s much appreciated.",
    " My name is Ren\u00e9.",
    " It\u2019s for my fianc\u00e9e.",
    " I\u2019m in a hurry \u2014 thank you!",
    " (Sent from Zo\u00eb\u2019s laptop.)",
)


def mojibake(text: str) -> str:
    """UTF-8 bytes read back as Windows-1252: "it’s" -> "itâ€™s". ftfy.fix_text undoes it."""
    return text.encode("utf-8").decode("latin-1").translate(_CP1252_HIGH)


def _typographic(text: str, rng: random.Random) -> str:
    """Make the text non-ASCII the way word processors do (curly quotes, dashes, accents)."""
    t = _DOUBLE_QUOTED.sub("\u201c\\1\u201d", text).replace("'", "\u2019").replace(" - ", " \u2014 ")
    if t.isascii() or rng.random() < 0.4:
        t += _ch(rng, _NON_ASCII_TAILS)
    return t


_EMPTY_CONTENT = ("", " ", "   \n ", "\n\n", "\t ")


_LOG_LEVELS = ("INFO", "WARN", "ERROR", "DEBUG")
_LOG_SERVICES = (
    "checkout-service",
    "auth-gateway",
    "cart-api",
    "payment-worker",
    "notification-svc",
    "order-sync",
)
_LOG_EVENTS = (
    "request completed status=200 path=/api/v2/orders duration_ms={n}",
    "retrying upstream call attempt={k} reason=timeout host=pay.internal",
    "user session refreshed token_ttl=3600 device=mobile",
    "payment authorization failed code=05 issuer_declined order={{Order Number}}",
    "cache miss key=cart:{n} fallback=db",
    "webhook delivered to courier endpoint status=202 retries={k}",
    "slow query detected table=orders rows={n} threshold_ms=500",
    "email queued template=order_confirmation locale=en-GB",
)


def _log_pool(size: int = 4000) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """A fixed pool of app-log lines (private fixed-seed Random), built once at import.

    Each too_long row samples ~140 lines from it at random, so two pasted logs share
    only a few lines and do not look like near duplicates of each other.
    """
    prng = random.Random(20240501)
    lines = []
    for _ in range(size):
        n, k = str(prng.randrange(10, 10_000)), str(prng.randrange(1, 6))
        event = _ch(prng, _LOG_EVENTS).replace("{n}", n).replace("{k}", k)
        stamp = f"2024-05-{prng.randrange(1, 29):02d} {prng.randrange(24):02d}:{prng.randrange(60):02d}:{prng.randrange(60):02d}"
        lines.append(
            f"{stamp} {_ch(prng, _LOG_LEVELS)} [{_ch(prng, _LOG_SERVICES)}] req={prng.getrandbits(32):08x} {event}"
        )
    return tuple(lines), tuple(line.count(" ") + 1 for line in lines)


_LOG_LINES, _LOG_WORDS = _log_pool()


def _too_long(text: str, role: str, rng: random.Random) -> str:
    """A user pasting a whole log, or an agent pasting the same answer over and over."""
    if role == "user":
        lines: list[str] = []
        words = 0
        while words <= TOO_LONG_WORDS:
            k = int(rng.random() * len(_LOG_LINES))
            lines.append(_LOG_LINES[k])
            words += _LOG_WORDS[k]
        return f"{text}\n\nHere is the full log from the app:\n" + "\n".join(lines)
    per = max(1, len(text.split()))
    return "\n\n".join([text] * (TOO_LONG_WORDS // per + 2))


_SYNONYMS = {
    "want": "wish",
    "need": "require",
    "help": "assist",
    "buy": "purchase",
    "get": "receive",
    "problem": "issue",
    "issue": "problem",
    "can": "could",
    "Can": "Could",
    "Hi": "Hello",
    "Hello": "Hi",
    "please": "kindly",
    "change": "modify",
    "email": "e-mail",
    "my": "my own",
    "How": "So how",
    "What": "So what",
}
_SYNONYM_RE = re.compile(r"\b(" + "|".join(sorted(_SYNONYMS, key=len, reverse=True)) + r")\b")
_FILLERS = ("just", "actually", "really", "basically", "honestly")
_PREFIXES = ("So, ", "Ok so ", "Um, ", "Hi again, ", "Quick question: ", "Sorry, ")


def _edit_synonym(text: str, rng: random.Random) -> str | None:
    matches = list(_SYNONYM_RE.finditer(text))
    if not matches:
        return None
    m = _ch(rng, matches)
    return text[: m.start()] + _SYNONYMS[m.group(1)] + text[m.end() :]


def _edit_filler(text: str, rng: random.Random) -> str | None:
    words = text.split(" ")
    if len(words) < 3:
        return None
    i = rng.randrange(1, len(words))
    return " ".join(words[:i] + [_ch(rng, _FILLERS)] + words[i:])


def _edit_punct(text: str, rng: random.Random) -> str | None:
    if text.endswith(("?", ".", "!")):
        return text[:-1] if rng.random() < 0.5 else text[:-1] + "!!"
    return text + _ch(rng, ("?", ".", "!"))


def _edit_case(text: str, rng: random.Random) -> str | None:
    return text.lower() if text != text.lower() else text.capitalize()


def _edit_prefix(text: str, rng: random.Random) -> str | None:
    return _join(_ch(rng, _PREFIXES), text)


_WORD_EDITS = (_edit_synonym, _edit_filler, _edit_prefix)
_SECOND_EDITS = (_edit_case, _edit_punct, _edit_synonym)


def _grams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    w = text.lower().split()
    return {tuple(w[i : i + n]) for i in range(max(1, len(w) - n + 1))}


def shingle_jaccard(a: str, b: str, n: int = 3) -> float:
    """Jaccard similarity of lower-cased word n-gram sets (what the dedup stage's MinHash estimates)."""
    ga, gb = _grams(a, n), _grams(b, n)
    return len(ga & gb) / len(ga | gb) if ga or gb else 1.0


def _row_text(messages: list[list[str]]) -> str:
    return "\n".join(c for r, c in messages if r in ("user", "assistant"))


def _edit_candidates(text: str, rng: random.Random) -> list[str]:
    """Edited versions of `text`, one or two small edits each, in a random preference order."""
    singles = [e for e in (f(text, rng) for f in _WORD_EDITS) if e]
    rng.shuffle(singles)
    doubles = [e for e in (_ch(rng, _SECOND_EDITS)(t, rng) for t in singles) if e]
    # the word-level edit comes first, so a copy always differs after case/space normalization
    out = doubles + singles if rng.random() < 0.5 else singles + doubles
    return out + [_join(p, text) for p in _PREFIXES]


def _near_duplicate(src: _Row, rng: random.Random, seen: set[bytes]) -> _Row:
    """Copy with 1-2 small edits in the first user turn, well above the dedup threshold.

    Candidates below NEAR_DUP_MIN_JACCARD or textually equal (after normalization) to
    any existing row are skipped, so a near duplicate never doubles as an exact one.
    """
    row = src.copy()
    original = src.messages[0][1]
    base = _grams(_row_text(src.messages))
    best, best_j = _join(_PREFIXES[0], original), -1.0
    for text in _edit_candidates(original, rng):
        row.messages[0][1] = text
        if row.key() in seen:
            continue
        g = _grams(_row_text(row.messages))
        j = len(g & base) / len(g | base)
        if j >= NEAR_DUP_MIN_JACCARD:
            best = text
            break
        if j > best_j:
            best, best_j = text, j
    row.messages[0][1] = best
    seen.add(row.key())
    return row


# ---------------------------------------------------------------- defect plan


@dataclass
class _Plan:
    family: dict[int, str]  # row index -> exclusive defect family
    pii: dict[int, str]  # row index -> pii type
    source: dict[int, int]  # duplicate row index -> index of the clean row it copies


def _plan(n: int, counts: dict[str, int], rng: random.Random) -> _Plan:
    """Decide which rows get which defect, and which earlier clean row each duplicate copies."""
    n_exclusive = sum(counts[f] for f in EXCLUSIVE)
    n_dups = counts["exact_duplicate"] + counts["near_duplicate"]
    n_pii = sum(counts[t] for t in PII_TYPES)
    if n_exclusive + (1 if n_dups else 0) > n:
        raise ValueError(f"defect rates ask for {n_exclusive} defective rows out of {n}; lower the rates")
    order = list(range(n))
    rng.shuffle(order)
    family: dict[int, str] = {}
    pos = 0
    for name in EXCLUSIVE:
        for idx in order[pos : pos + counts[name]]:
            family[idx] = name
        pos += counts[name]
    pool = order[pos:] + [i for i in order[:pos] if family[i] in _PII_COMPATIBLE]
    if n_pii > len(pool):
        raise ValueError(f"not enough rows left for {n_pii} PII rows out of {n}; lower the rates")
    pii_rows = rng.sample(pool, n_pii)
    pii: dict[int, str] = {}
    start = 0
    for name in PII_TYPES:
        for idx in pii_rows[start : start + counts[name]]:
            pii[idx] = name
        start += counts[name]

    clean = [i for i in range(n) if i not in family and i not in pii]
    targets = sorted(i for i, f in family.items() if f in ("exact_duplicate", "near_duplicate"))
    if targets and not clean:
        raise ValueError("duplicates need at least one clean row to copy; lower the rates")
    if targets and targets[0] < clean[0]:
        # a duplicate must copy an *earlier* clean row: swap roles with the first clean row
        t, c = targets[0], clean[0]
        family[c] = family.pop(t)
        clean[0] = t
        targets = sorted(i for i, f in family.items() if f in ("exact_duplicate", "near_duplicate"))
    source = {}
    for t in targets:
        k = bisect.bisect_left(clean, t)
        source[t] = clean[rng.randrange(k)]
    return _Plan(family, pii, source)


def _pick_message(row: _Row, rng: random.Random, role: str | None = None) -> int:
    """Index of the user or assistant turn a defect goes into."""
    role = role or _ch(rng, ("user", "assistant"))
    idxs = [i for i, (r, _) in enumerate(row.messages) if r == role]
    return _ch(rng, idxs)


def _apply(
    i: int, rows: list[_Row], plan: _Plan, rng: random.Random, ids: list[str], seen: set[bytes]
) -> dict[str, Any] | None:
    """Inject row i's planned defects in place; return its ground-truth entry (None if clean)."""
    fam = plan.family.get(i)
    pii = plan.pii.get(i)
    if fam is None and pii is None:
        return None
    truth: dict[str, Any] = {"id": ids[i], "defects": [], "duplicate_of": None, "true_intent": None}
    row = rows[i]
    if fam == "exact_duplicate":
        row = rows[plan.source[i]].copy()
        truth["duplicate_of"] = ids[plan.source[i]]
    elif fam == "near_duplicate":
        row = _near_duplicate(rows[plan.source[i]], rng, seen)
        truth["duplicate_of"] = ids[plan.source[i]]
    if pii is not None:
        # first, so markup/mojibake then wrap the PII sentence like the rest of the turn;
        # every kind opens with the user turn
        row.messages[0][1] = _insert_pii(row.messages[0][1], pii, rng)
    if fam == "markup":
        m = _pick_message(row, rng)
        row.messages[m][1] = _markup(row.messages[m][1], rng)
    elif fam == "mojibake":
        m = _pick_message(row, rng)
        row.messages[m][1] = mojibake(_typographic(row.messages[m][1], rng))
    elif fam == "empty_field":
        m = _pick_message(row, rng)
        row.messages[m][1] = _ch(rng, _EMPTY_CONTENT)
    elif fam == "too_long":
        role = _ch(rng, ("user", "assistant"))
        m = _pick_message(row, rng, role)
        row.messages[m][1] = _too_long(row.messages[m][1], role, rng)
    elif fam == "label_flip":
        truth["true_intent"] = row.intent
        row.intent = _ch(rng, [x for x in INTENTS if x != row.intent])
    rows[i] = row
    truth["defects"] = [d for d in (fam, pii) if d is not None]
    return truth


# ====================================================================== public API


def _check_kinds(kinds: dict[str, float] | None) -> dict[str, float]:
    kinds = dict(DEFAULT_KINDS if kinds is None else kinds)
    unknown = sorted(set(kinds) - set(DEFAULT_KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; allowed: {sorted(DEFAULT_KINDS)}")
    if any(w < 0 for w in kinds.values()) or sum(kinds.values()) <= 0:
        raise ValueError(f"kind weights must be >= 0 with a positive sum, got {kinds}")
    return {k: w for k, w in kinds.items() if w > 0}


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building millions of small acyclic objects.

    Every allocation burst makes the collector rescan the ever-growing live heap;
    at 270k rows that alone more than doubles the run time. Nothing built here
    forms reference cycles, so plain reference counting frees it all the same.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def generate(
    n: int, seed: int, rates: DefectRates | None = None, kinds: dict[str, float] | None = None
) -> tuple[list[Record], list[dict[str, Any]]]:
    """`n` synthetic records plus the ground truth of the defects injected into them.

    Ground-truth entries, one per defective record in record order:
    {"id", "defects": [type, ...], "duplicate_of": id | None, "true_intent": str | None}.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rates = rates or DefectRates()
    kinds = _check_kinds(kinds)
    with _gc_paused():
        return _generate(n, seed, rates, kinds)


def _generate(
    n: int, seed: int, rates: DefectRates, kinds: dict[str, float]
) -> tuple[list[Record], list[dict[str, Any]]]:
    # Separate streams: the clean content for a seed does not move when defect rates change.
    content_rng = random.Random(seed)
    defect_rng = random.Random(f"supportlm-synthetic-defects-{seed}")
    rows, seen = _clean_rows(n, kinds, content_rng)
    plan = _plan(n, rates.counts(n), defect_rng)
    ids = [f"syn-{i:06d}" for i in range(n)]
    truth = []
    for i in range(n):
        entry = _apply(i, rows, plan, defect_rng, ids, seen)
        if entry is not None:
            truth.append(entry)
    records = [
        Record(
            id=ids[i],
            source=SOURCE,
            kind=row.kind,
            messages=[{"role": r, "content": c} for r, c in row.messages],
            intent=row.intent,
            category=INTENT_TO_CATEGORY[row.intent],
            meta=row.meta,
        )
        for i, row in enumerate(rows)
    ]
    return records, truth
