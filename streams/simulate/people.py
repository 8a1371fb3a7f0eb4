"""Who joins the simulated meetings: real names, the names they show, the provider's name.

The pseudonym rule compares token sets (spec: "Pseudonym"), so the vocabularies
here are built to make that comparison known in advance: every display name
that is not a pseudonym keeps the person's first name verbatim (a token of two or
more letters, also in the provider's profile name), and no token of a pseudonym
is a token of any real name. Whether a join is pseudonymous is therefore a fact
the generator decides, not something it has to compute.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "FIRST_NAMES",
    "LAST_NAMES",
    "PSEUDONYM_WORDS",
    "Person",
    "display_name",
    "new_person",
]

FIRST_NAMES = (
    "Zoë", "Rowan", "José", "Amélie", "Siobhán", "Mateo", "Aiko", "Priya", "Chen", "Fatima",
    "Jürgen", "Noah", "Olivia", "Liam", "Emma", "Ana", "Björn", "Chloé", "Dmitri", "Ingrid",
    "Kwame", "Leïla", "Marta", "Nikos", "Ramón", "Sofía", "Thu", "Yusuf", "Hana", "Omar",
    "Elif", "Tomasz", "Aoife", "Raj", "Mei", "Øyvind", "Łukasz",
)
LAST_NAMES = (
    "Müller", "Vale", "García", "Dubois", "Hansen", "Kowalski", "O'Brien", "Rossi", "Tanaka",
    "Sharma", "Wang", "Haddad", "Schröder", "Smith", "Johnson", "Nguyễn", "Pérez",
    "Lindqvist", "Mensah", "Novák", "Petrov", "Silva", "Öztürk", "Kim", "Andersson", "Costa",
    "Brown", "Fernández", "Jensen", "Moreau", "Papadopoulos", "Yilmaz", "Walsh", "Ibrahim",
)
_ADJECTIVES = ("Night", "Quiet", "Blue", "Silver", "Lucky", "Sleepy", "Brave", "Hidden")
_NOUNS = ("Owl", "Fox", "Heron", "Otter", "Comet", "Badger", "Falcon", "Maple")
_DEVICES = ("iPhone", "Galaxy S24", "Conference Room B", "Pixel 8", "MacBook Pro")
# Every word a pseudonym is made of (numbers aside): none is a token of a real name.
PSEUDONYM_WORDS = (*_ADJECTIVES, *_NOUNS, "Guest", *_DEVICES)
_MIDDLE = "ABCDEFGHJKLMNPRSTW"


@dataclass(frozen=True, slots=True)
class Person:
    first: str
    last: str
    email: str | None
    profile_name: str  # the name on the provider's profile: always carries `first`

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


def new_person(rng: random.Random, number: int, guest: bool, domain: str) -> Person:
    """A person with a real name, an email (members always, guests sometimes)."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    email: str | None = None
    if not guest or rng.random() < 0.3:
        email = f"p{number}@{domain}"
    r = rng.random()
    if r < 0.8:
        profile = f"{first} {last}"
    elif r < 0.9:
        profile = f"{first} {rng.choice(_MIDDLE)}. {last}"
    else:
        profile = f"{first} {rng.choice(LAST_NAMES)}-{last}"  # a double-barrelled name
    return Person(first, last, email, profile)


def display_name(rng: random.Random, person: Person, pseudonym: bool) -> str:
    """The name shown in the meeting: a pseudonym shares no token with any real name;
    every other form keeps the first name, so it shares that token with the profile."""
    if pseudonym:
        r = rng.random()
        if r < 0.6:
            return f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        if r < 0.8:
            return f"Guest {rng.randint(1000, 9999)}"
        return rng.choice(_DEVICES)
    r = rng.random()
    if r < 0.7:
        return person.name
    if r < 0.8:
        return person.first
    if r < 0.9:
        return f"{person.first} {person.last[0]}."
    return person.name.lower()
