"""Persona slots of the synthetic benchmark: value sets and the sentences that use them.

Each slot's values are built combinatorially from short word lists (hundreds of values,
of varied token lengths, so a value cannot be guessed from priors and distractors of the
same token length exist). A fact is stated with one of `STATEMENTS` (the first
`TRAIN_TEMPLATES` are used in training; the rest are held out, seen only in validation),
asked back with a `QUESTIONS` template and answered with an `ANSWERS` template. `{v}` marks
the value; it always follows a space and ends at a word boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

TRAIN_TEMPLATES = 5  # statements 0..4 in training; 5.. held out (validation uses all)


@dataclass(frozen=True)
class Slot:
    name: str
    values: tuple[str, ...]
    statements: tuple[str, ...]
    questions: tuple[str, ...]
    answers: tuple[str, ...]


_PET_NAMES = (
    "Biscuit Pepper Mango Rex Luna Waffles Pickles Maple Ziggy Nugget Bruno Daisy Oscar "
    "Tofu Juniper Clover Rusty Sprocket Noodle Pumpkin Hazel Gizmo Marble Toffee Barnaby "
    "Olive Pretzel Sunny Cosmo Fennel Dumpling Truffle Buttons Shadow Kiwi Peanut Bramble "
    "Wasabi Crumpet Moose"
).split()
_PET_TITLES = ("Captain", "Count", "Sir", "Little", "Professor", "Duke")

_TOWN_ROOTS = (
    "Ash Oak Elm Stone Red Brook Mill Green Hart Wolf Black Silver Clay Fern Marsh Thorn "
    "Rook Kings Bright Hazel"
).split()
_TOWN_SUFFIXES = ("ford", "field", "bury", "ton", "wick", "dale", "mouth", "haven", "stead",
                  "worth", "cliff", "more")

_JOB_FIELDS = (
    "marine software dental forest museum railway hotel library wildlife theatre "
    "solar harbour vineyard textile bakery airport weather pharmacy"
).split()
_JOB_ROLES = ("engineer", "technician", "manager", "inspector", "consultant", "assistant",
              "designer", "researcher", "supervisor", "planner", "analyst", "archivist")

_FIRST_NAMES = (
    "Nora Iris Mabel Greta Lena Vera Ruth Tessa Ingrid Priya Amara Yuki Sofia Delia "
    "Beatrix Cora Elsie Freya Hana Imogen Jolene Kira Lottie Marisol Nell Opal Petra "
    "Rosalind Selma Thea Una Wren"
).split()
_MIDDLE_NAMES = ("Jean", "Louise", "Mae", "Grace", "Rose", "Claire")

_FOOD_STYLES = (
    "spicy grilled smoked lemon garlic sweet crispy creamy roasted honey ginger "
    "mushroom coconut pepper basil sesame"
).split()
_FOOD_DISHES = ("noodles", "tacos", "dumplings", "curry", "risotto", "pancakes", "chowder",
                "lasagna", "omelette", "flatbread", "stew", "salmon", "falafel", "gnocchi",
                "burritos")

_HOBBY_VERBS = ("painting", "carving", "collecting", "photographing", "sketching", "building",
                "restoring", "knitting", "drawing", "sculpting", "embroidering", "filming",
                "crocheting")
_HOBBY_OBJECTS = ("lighthouses", "birds", "kites", "clocks", "teapots", "model trains",
                  "old radios", "bonsai trees", "maps", "ships in bottles", "lanterns", "owls",
                  "tin robots", "puppets", "stamps", "fossils")

_COLOURS = ("red", "blue", "green", "silver", "black", "white", "yellow", "copper", "purple",
            "grey", "bronze", "teal", "maroon", "navy", "golden")
_VEHICLES = ("pickup", "hatchback", "van", "convertible", "station wagon", "minivan", "jeep",
             "sedan", "camper", "scooter", "coupe", "motorbike", "truck", "buggy", "roadster")

_BAND_WORDS = ("Silver", "Velvet", "Electric", "Midnight", "Paper", "Neon", "Wandering",
               "Hollow", "Crimson", "Lonely", "Golden", "Frozen", "Howling", "Broken", "Quiet")
_BAND_NOUNS = ("Foxes", "Lanterns", "Pilots", "Owls", "Tigers", "Ghosts", "Sailors", "Echoes",
               "Rivers", "Robots", "Comets", "Wolves", "Mirrors", "Kings", "Strangers")


SLOTS: tuple[Slot, ...] = (
    Slot(
        "pet",
        tuple(_PET_NAMES) + tuple(f"{t} {n}" for t, n in product(_PET_TITLES, _PET_NAMES)),
        ("My dog is called {v}.", "We named our dog {v}.", "Our dog's name is {v}.",
         "I walk my dog every morning, his name is {v}.", "At home I have a dog named {v}.",
         "I adopted a puppy last year and called him {v}.",
         "Everyone at the park knows my dog, {v}."),
        ("What is your dog called again?", "Remind me, what was your dog's name?",
         "How is your dog doing? I forgot his name."),
        ("My dog is called {v}.", "His name is {v}.", "Oh, he is doing great. He is called {v}."),
    ),
    Slot(
        "hometown",
        tuple(r + s for r, s in product(_TOWN_ROOTS, _TOWN_SUFFIXES)),
        ("I grew up in {v}.", "My hometown is {v}.", "I was born and raised in {v}.",
         "I spent my whole childhood in {v}.", "Originally I am from {v}.",
         "My family still lives in the town where I grew up, {v}.",
         "Before I moved away I lived in {v} for twenty years."),
        ("Where did you grow up again?", "Which town are you from originally?",
         "Remind me, where is your hometown?"),
        ("I grew up in {v}.", "I am from {v}.", "My hometown is {v}."),
    ),
    Slot(
        "job",
        tuple(f"{f} {r}" for f, r in product(_JOB_FIELDS, _JOB_ROLES)),
        ("I work as a {v}.", "My job is {v}.", "These days I earn my living as a {v}.",
         "I have been a {v} for six years.", "At work I am the {v}.",
         "My title at the company is {v}.", "I got a new position as a {v}."),
        ("What do you do for work again?", "Remind me, what is your job?",
         "What was your job title?"),
        ("I work as a {v}.", "I am a {v}.", "My job is {v}."),
    ),
    Slot(
        "sister",
        tuple(_FIRST_NAMES) + tuple(f"{a} {b}" for a, b in product(_FIRST_NAMES, _MIDDLE_NAMES)),
        ("My sister is called {v}.", "My older sister's name is {v}.",
         "I have one sister, her name is {v}.", "My sister {v} visited me last week.",
         "I called my sister yesterday, her name is {v}.",
         "Growing up I shared a room with my sister, {v}.",
         "My little sister goes by {v}."),
        ("What is your sister's name again?", "Remind me, what is your sister called?",
         "How is your sister? I forgot her name."),
        ("My sister is called {v}.", "Her name is {v}.", "She is doing well. Her name is {v}."),
    ),
    Slot(
        "food",
        tuple(f"{s} {d}" for s, d in product(_FOOD_STYLES, _FOOD_DISHES)),
        ("My favourite food is {v}.", "Nothing beats a plate of {v}.",
         "I could eat {v} every single day.", "If I could only eat one thing it would be {v}.",
         "My comfort food is {v}.", "On my birthday I always ask for {v}.",
         "The best meal in the world is {v}."),
        ("What was your favourite food again?", "Remind me, what is your favourite dish?",
         "What do you like to eat most?"),
        ("My favourite food is {v}.", "I love {v}.", "It has to be {v}."),
    ),
    Slot(
        "hobby",
        tuple(f"{v} {o}" for v, o in product(_HOBBY_VERBS, _HOBBY_OBJECTS)),
        ("In my free time I enjoy {v}.", "My hobby is {v}.", "On weekends I spend hours {v}.",
         "I have a strange hobby: {v}.", "Lately I have been really into {v}.",
         "To relax after work I like {v}.", "My grandfather taught me {v}."),
        ("What is your hobby again?", "Remind me, what do you do in your free time?",
         "What was that hobby of yours?"),
        ("My hobby is {v}.", "I enjoy {v}.", "I still spend my weekends {v}."),
    ),
    Slot(
        "car",
        tuple(f"{c} {v}" for c, v in product(_COLOURS, _VEHICLES)),
        ("I drive a {v}.", "My car is a {v}.", "Every day I commute in my {v}.",
         "I just bought a {v}.", "You can always spot me in my {v}.",
         "For road trips we take my {v}.", "My pride and joy is a {v}."),
        ("What car do you drive again?", "Remind me, what do you drive?",
         "What kind of car was yours?"),
        ("I drive a {v}.", "My car is a {v}.", "It is a {v}."),
    ),
    Slot(
        "band",
        tuple(f"The {w} {n}" for w, n in product(_BAND_WORDS, _BAND_NOUNS)),
        ("My favourite band is {v}.", "I listen to {v} all the time.",
         "The best concert I ever saw was {v}.", "I know every song by {v}.",
         "My favourite music is by {v}.", "I have every album of {v}.",
         "Nobody plays guitar like {v}."),
        ("What is your favourite band again?", "Remind me, which band do you love?",
         "Who was that band you like?"),
        ("My favourite band is {v}.", "I love {v}.", "It is {v}, of course."),
    ),
)

SLOT_BY_NAME = {slot.name: slot for slot in SLOTS}
