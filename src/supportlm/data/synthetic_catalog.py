"""Per-intent content of the synthetic generator, and the entity lists that fill its `{slot}`s.

Pure data, no logic (template syntax: see synthetic_templates). It runs past the ~500-line
guideline on purpose: it is one table of 27 intents, each with >= 8 user requests, terse
forms, ticket subjects and >= 3 reply bodies, and cutting it by category would only
scatter one table over several files.
"""

from __future__ import annotations

from typing import Any

# Fillers for the `{slot}` markers of the templates (lower-case names, so they never
# clash with Bitext placeholders such as {{Order Number}}, which stay verbatim).
SLOTS: dict[str, tuple[str, ...]] = {
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


# ---------------------------------------------------------------- per-intent content
# topic: noun phrase used by openers and follow-ups; user: >= 8 full requests;
# terse: <= 4 words; subjects: ticket subject lines; replies: >= 3 answer bodies.

CATALOG: dict[str, dict[str, Any]] = {
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
