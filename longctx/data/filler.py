"""Locally coherent chit-chat for the synthetic dialogues: question-then-answer exchanges
that stay on a topic for a while (a follow-up keeps the topic), plus session greetings.

Filler never mentions persona slot values, so it neither states nor leaks a fact; it sets
the distance between a fact and its question.
"""

from __future__ import annotations

import numpy as np

_FILL = {
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "num": ("two", "three", "four", "five", "six", "ten", "twelve"),
    "feel": ("tired", "happy", "busy", "relaxed", "a bit stressed", "excited", "calm"),
    "thing": ("the garden", "the kitchen", "the garage", "my desk", "the attic", "the porch"),
    "place": ("the lake", "the mountains", "the coast", "the old market", "the museum",
              "a small island", "the city centre"),
    "film": ("a comedy", "a thriller", "a documentary", "an old western", "a cartoon",
             "a space film"),
    "weather": ("sunny", "rainy", "windy", "foggy", "cold", "warm", "stormy"),
}

# topic -> threads; a thread is a chain of (question, possible answers) that belong together
TOPICS: dict[str, tuple[tuple[tuple[str, tuple[str, ...]], ...], ...]] = {
    "weather": (
        (("How is the weather where you are?",
          ("It has been {weather} all week, so I mostly stayed inside.",
           "Pretty {weather} today. I had to change my plans twice.")),
         ("Do you think it will stay like that?",
          ("I hope not, I want to sit outside on {day}.", "The forecast says it will.")),
         ("Does that kind of weather bother you?",
          ("Not really, I like a bit of change.", "A little, it makes me feel {feel}."))),
        (("Did you get caught in the rain yesterday?",
          ("Yes, I was soaked by the time I got home.", "No, I stayed in all day.")),
         ("Do you at least own a good umbrella?",
          ("I had one, but I left it on the bus.", "Yes, a huge one. It never lets me down."))),
    ),
    "weekend": (
        (("What are you doing this weekend?",
          ("I want to clean {thing} and maybe see some friends.",
           "We might drive to {place} if the weather holds.")),
         ("That sounds nice. Who is going with you?",
          ("Just a couple of friends, {num} of us in total.", "Only me, I like the quiet.")),
         ("Will you stay there the whole day?",
          ("Probably until the evening, then back home for dinner.",
           "Just the morning, I have chores in the afternoon."))),
        (("How was your weekend?",
          ("Lazy, I barely left the house and I feel {feel}.",
           "Busy, we finally sorted out {thing}.")),
         ("Was it what you needed?",
          ("Exactly what I needed after that week.", "Not quite, but it will do."))),
    ),
    "work": (
        (("How was your day at work?",
          ("Long, we had {num} meetings before lunch.",
           "It was fine. I feel {feel} but the project is moving.")),
         ("Do you have a deadline coming up?",
          ("Yes, on {day}. I think we will make it.", "Not this month, luckily.")),
         ("Is your team still the same size?",
          ("We hired {num} new people, so it is getting crowded.",
           "Yes, same people as last year."))),
        (("Do you ever work from home?",
          ("On {day} I do, it saves me the commute.", "Rarely, I like the office.")),
         ("Is it easier to focus there?",
          ("Much easier, nobody interrupts me.", "Not always, {thing} distracts me."))),
    ),
    "movies": (
        (("Have you watched anything good lately?",
          ("I saw {film} on {day}. It was better than I expected.",
           "Only {film}, and I fell asleep halfway through.")),
         ("Would you watch it again?",
          ("Maybe, but not soon. Once was enough for now.", "Definitely, it was fun.")),
         ("Who did you watch it with?",
          ("With my neighbours, we make it a habit every {day}.", "Alone, on the sofa."))),
        (("Do you prefer the cinema or watching at home?",
          ("Home, the snacks are cheaper.", "The cinema, for the big screen.")),
         ("When did you last go out to see something?",
          ("About {num} weeks ago, I think.", "I honestly cannot remember."))),
    ),
    "travel": (
        (("Where was your last trip?",
          ("Last time we went to {place} for {num} days.", "A weekend at {place}.")),
         ("What did you like most about it?",
          ("The quiet mornings. Nobody was around before nine.", "The food, by far.")),
         ("How did you get there?",
          ("By train, it took about {num} hours.", "We drove, with far too many stops."))),
        (("Are you travelling anywhere soon?",
          ("I would love to see {place} again next month.",
           "No trips planned, I am saving up for now.")),
         ("Do you like planning trips?",
          ("I love it, I make lists for weeks.", "Not at all, I just go."))),
    ),
    "cooking": (
        (("Did you cook anything nice this week?",
          ("I tried a new soup recipe on {day}. It was hard work but tasty.",
           "Not really, we ordered in {num} times, which is too much.")),
         ("Do you follow recipes or improvise?",
          ("I start with a recipe and then improvise anyway.", "Always the recipe, exactly.")),
         ("Do you bake as well?",
          ("Sometimes bread on {day}, but it rarely rises properly.", "Never, I have no patience."))),
        (("Who does the cooking at your place?",
          ("Mostly me, I find it relaxing after a long day.", "We take turns every day.")),
         ("Do you ever cook for guests?",
          ("Once a month, for about {num} people.", "Only when I feel brave."))),
    ),
    "sleep": (
        (("Did you sleep well last night?",
          ("Not great, the neighbours had a party until {num} in the morning.",
           "Very well actually. I went to bed early for once.")),
         ("Do you have a routine before bed?",
          ("I put my phone away and read for a bit.", "Not really, I just fall asleep.")),
         ("Have you tried reading before sleep?",
          ("I try, but I usually give up after {num} pages.", "Yes, it works wonders."))),
        (("You sound {feel}. Long night?",
          ("I kept waking up, I think I had too much coffee.", "A bit, I stayed up too late.")),
         ("Will you take it easy today?",
          ("I will try, maybe a nap after lunch.", "No chance, {day} is always busy."))),
    ),
}
TOPIC_NAMES = tuple(TOPICS)

GREETINGS = (
    ("Hi again! It has been a while.", "Good to hear from you! How have you been?"),
    ("Hello! Nice to talk again.", "Hi! I was hoping we would catch up."),
    ("Hey, how are things?", "Pretty good, thanks for asking. And you?"),
)
FIRST_GREETINGS = (
    ("Hi, nice to meet you!", "Nice to meet you too. How is your day going?"),
    ("Hello there, how are you?", "Doing well, thanks! Glad to chat."),
)
ACKS = ("Oh nice, good to know.", "That is lovely.", "Really? That is interesting.",
        "Ha, I will remember that.", "Cool, tell me more some time.", "I see, sounds great.")
# acknowledgements that say the stated value back (the training split's `train_ack` share):
# a copy over a few tokens, the easiest kind to learn, before the far copies of the answers
VALUE_ACKS = ("Oh, {v}? Nice.", "So {v}, I will remember that.", "Ha, {v}, that is lovely.",
              "Really, {v}? Interesting.")
SESSION_HEADERS = ("{n} days later", "{n} hours later", "{n} weeks later", "the next day")


def _fill(template: str, rng: np.random.Generator) -> str:
    keys = {k: v[rng.integers(len(v))] for k, v in _FILL.items() if "{" + k + "}" in template}
    return template.format(**keys)


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return _fill(options[rng.integers(len(options))], rng)


def filler_exchange(topic: str, thread: int, step: int,
                    rng: np.random.Generator) -> tuple[str, str]:
    """Exchange `step` (a question and its answer) of thread `thread` of `topic`."""
    question, answers = TOPICS[topic][thread][step]
    return _fill(question, rng), _pick(answers, rng)


def greeting(first: bool, rng: np.random.Generator) -> tuple[str, str]:
    """The opening exchange of a session."""
    options = FIRST_GREETINGS if first else GREETINGS
    return options[rng.integers(len(options))]


def acknowledgement(rng: np.random.Generator) -> str:
    return ACKS[rng.integers(len(ACKS))]


def value_acknowledgement(value: str, rng: np.random.Generator) -> str:
    """An acknowledgement that repeats the value just stated."""
    return VALUE_ACKS[rng.integers(len(VALUE_ACKS))].format(v=value)


def session_header(rng: np.random.Generator) -> str:
    """A gap in time ('3 days later'); rendered after the <|session|> token."""
    return SESSION_HEADERS[rng.integers(len(SESSION_HEADERS))].format(n=int(rng.integers(2, 10)))
