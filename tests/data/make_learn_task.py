#!/usr/bin/env python3
"""A small synthetic tool-calling task for the fine-tuning learning check (tests/cli/finetune_learn.sh).

    python3 make_learn_task.py OUT.jsonl --n 1500 --seed 1 [--exclude OTHER.jsonl]

Writes N Needle JSONL lines ({"query", "tools", "answers"}; tools and answers as JSON values),
deterministically for a seed (Python's random.Random, stable across Python 3 versions).

Six tools with typed parameters (string, integer, number, enum; required and optional), two of
them with two or three parameters. Each example offers the right tool and one or two others, in
random order; the query comes from one of several templates per tool, filled with values drawn
from small pools (cities, rooms, people, subjects, currencies) or numbers (one or two digits,
and 100), which the call must copy into its arguments. Every example calls exactly one tool. With --exclude, no line has the
same query and tool list as a line of OTHER.jsonl, so a held-out file shares no example with
the training file (only the value pools and templates).

The words were chosen to tokenize into few pieces with tests/data/tiny_tok.model (vocab 1000),
so that the `tiny` fixture model (d 64) learns the task in a short CPU run.
"""
import argparse
import json
import random

CITIES = ["Lima", "Tokyo", "Perth", "Porto", "Riga", "Seoul", "Quito", "Dakar", "Lagos", "Paris"]
ROOMS = ["kitchen", "bedroom", "office", "garage", "living room"]
PEOPLE = ["alice", "bob", "carol", "dan", "eve"]
SUBJECTS = ["Lunch", "Meeting", "Hello", "Quarterly report", "Lunch plans"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF"]


def prop(type_, desc, required=True, enum=None):
    p = {"type": type_, "description": desc}
    if enum:
        p["enum"] = enum
    p["required"] = required
    return p


TOOLS = {
    "get_weather": {"name": "get_weather", "description": "Get the weather in a city.",
                    "parameters": {"city": prop("string", "City name."),
                                   "unit": prop("string", "Unit.", False, ["celsius", "fahrenheit"])}},
    "set_timer": {"name": "set_timer", "description": "Start a timer.",
                  "parameters": {"minutes": prop("integer", "Duration in minutes.")}},
    "toggle_lights": {"name": "toggle_lights", "description": "Turn the lights in a room on or off.",
                      "parameters": {"room": prop("string", "Room name."),
                                     "state": prop("string", "on or off.", True, ["on", "off"])}},
    "send_email": {"name": "send_email", "description": "Send an email.",
                   "parameters": {"to": prop("string", "Recipient."), "subject": prop("string", "Subject line.")}},
    "set_volume": {"name": "set_volume", "description": "Set the speaker volume.",
                   "parameters": {"level": prop("integer", "Volume level, 0 to 100.")}},
    "convert_currency": {"name": "convert_currency", "description": "Convert an amount between currencies.",
                         "parameters": {"amount": prop("number", "Amount."),
                                        "from_currency": prop("string", "Source code."),
                                        "to_currency": prop("string", "Target code.")}},
}


def weather(r):
    city = r.choice(CITIES)
    if r.random() < 0.35:
        unit = r.choice(["celsius", "fahrenheit"])
        q = r.choice(["weather in {c} in {u}", "What's the weather in {c} in {u}?",
                      "temperature in {c} in {u} please", "How hot is it in {c}, in {u}?"]).format(c=city, u=unit)
        return q, {"city": city, "unit": unit}
    q = r.choice(["What's the weather in {c}?", "weather in {c}", "Is it raining in {c}?",
                  "Tell me the forecast for {c}", "How hot is it in {c} today?"]).format(c=city)
    return q, {"city": city}


def timer(r):
    n = r.choice([r.randint(1, 9), r.randint(10, 90)])  # as many one-digit as two-digit numbers
    q = r.choice(["Set a timer for {n} minutes", "Start a {n} minute countdown", "remind me in {n} minutes",
                  "timer for {n} minutes please", "Countdown {n} minutes"]).format(n=n)
    return q, {"minutes": n}


def lights(r):
    room, state = r.choice(ROOMS), r.choice(["on", "off"])
    q = r.choice(["Turn {s} the {r} lights", "Switch {s} the lights in the {r}", "{r} lights {s} please",
                  "lights {s} in the {r}", "Please turn the {r} lights {s}"]).format(r=room, s=state)
    return q[0].upper() + q[1:], {"room": room, "state": state}


def email(r):
    to, subject = r.choice(PEOPLE), r.choice(SUBJECTS)
    q = r.choice(["Send an email to {t} titled {s}", "Email {t} with subject {s}", "Write to {t} about {s}",
                  "send {t} an email with the subject {s}"]).format(t=to, s=subject)
    return q, {"to": to, "subject": subject}


def volume(r):
    n = 100 if r.random() < 0.1 else r.randint(0, 99)  # "100" is one query token: give it examples
    q = r.choice(["Set the volume to {n}", "volume {n} please", "Turn the volume to {n} percent",
                  "Set the speaker volume to {n}", "Change the volume level to {n}"]).format(n=n)
    return q, {"level": n}


def currency(r):
    amount = r.choice([r.randint(1, 9), r.randint(10, 99)])
    a, b = r.sample(CURRENCIES, 2)
    q = r.choice(["Convert {n} {a} to {b}", "How much is {n} {a} in {b}?", "{n} {a} to {b} please",
                  "convert {n} {a} into {b}"]).format(n=amount, a=a, b=b)
    return q, {"amount": amount, "from_currency": a, "to_currency": b}


MAKERS = {"get_weather": weather, "set_timer": timer, "toggle_lights": lights, "send_email": email,
          "set_volume": volume, "convert_currency": currency}


def example(r):
    name = r.choice(sorted(MAKERS))
    query, args = MAKERS[name](r)
    others = r.sample([t for t in sorted(TOOLS) if t != name], r.randint(1, 2))
    tools = [TOOLS[t] for t in others + [name]]
    r.shuffle(tools)
    return {"query": query, "tools": tools, "answers": [{"name": name, "arguments": args}]}


def key(e):
    return json.dumps([e["query"], e["tools"]], sort_keys=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--exclude", help="JSONL file whose (query, tools) pairs must not appear")
    a = ap.parse_args()
    seen = set()
    if a.exclude:
        with open(a.exclude) as f:
            seen = {key(json.loads(line)) for line in f if line.strip()}
    r = random.Random(a.seed)
    with open(a.out, "w") as f:
        written = 0
        while written < a.n:
            e = example(r)
            if key(e) in seen:
                continue
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
            written += 1


if __name__ == "__main__":
    main()
