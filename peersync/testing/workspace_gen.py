"""Deterministic, realistic OpenClaw agent workspaces — and realistic edits to them — for tests and benchmarks."""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from peersync.testing.trees import is_selected

# Fixed, so that a seed gives the same tree whatever day it runs (the seed's example day).
END_DATE = date(2026, 1, 26)
SPAN_DAYS = 730  # about two years of daily notes
MIN_FILES = 60
DAILY = re.compile(r"memory/\d{4}-\d{2}-\d{2}\.md")

# Share of the files left after the fixed ones; "topics" takes what the others leave.
SHARES = {"daily": 0.12, "items": 0.33, "people": 0.04, "logs": 0.08, "skillfiles": 0.05,
          "junk": 0.06}

SKILLS = {
    # name: (item folder, item kind)
    "streaming-buddy": ("shows", "show"),
    "reading-list": ("books", "book"),
    "recipe-box": ("recipes", "recipe"),
    "fitness-tracker": ("workouts", "workout"),
    "weather": ("observations", "weather"),
    "finance": ("transactions", "transaction"),
    "travel-planner": ("trips", "trip"),
    "home-assistant": ("automations", "automation"),
    "email-triage": ("threads", "thread"),
    "github-watch": ("repos", "repo"),
    "calendar-sync": ("events", "event"),
    "news-digest": ("digests", "digest"),
}

FIRST = ["Alex", "Sam", "Maria", "Jonas", "Priya", "Chen", "Lena", "Omar", "Sofia", "Mateo", "Hannah",
         "Yuki", "Noah", "Ines", "Felix", "Amara", "Lukas", "Zoe", "Ravi", "Elif", "Tomas", "Nora",
         "Kai", "Julia", "Ben", "Aisha", "Leo", "Mila", "David", "Sara"]
LAST = ["Kim", "Novak", "Schmidt", "Garcia", "Patel", "Okafor", "Rossi", "Nguyen", "Larsen", "Costa",
        "Weber", "Tanaka", "Silva", "Fischer", "Haddad", "Moreau", "Jensen", "Kowalski", "Ali", "Brown"]
TOPICS = ["home server migration", "tax return", "kitchen renovation", "the Lisbon trip", "sourdough",
          "marathon training", "the quarterly report", "garden irrigation", "piano practice",
          "the new laptop", "Tailscale ACLs", "the birthday party", "insurance renewal", "meal prep",
          "the podcast idea", "backup strategy", "language lessons", "the car service", "solar panels",
          "the book club", "job interviews", "the photo archive", "Home Assistant dashboards",
          "the wedding", "newsletter drafts", "the side project", "dentist appointments"]
ACTIONS = ["send the invoice", "book the tickets", "call the plumber", "review the draft",
           "renew the passport", "back up the photos", "order new filters", "water the plants",
           "reply to the landlord", "update the budget sheet", "cancel the trial", "pay the electricity bill",
           "prepare the slides", "check the flight status", "refill the prescription", "rotate the API key",
           "clean up the downloads folder", "schedule the vet visit", "buy a birthday gift"]
THINGS = ["oat milk", "dark mode", "short summaries", "morning workouts", "paper books", "window seats",
          "green tea", "bullet points", "quiet cafés", "early flights", "jazz playlists", "spicy food",
          "voice notes", "weekly reviews", "metric units", "24-hour time"]
SHOWS = ["Severance", "The Bear", "Dark", "Shōgun", "Slow Horses", "Arcane", "Andor", "Fargo",
         "The Expanse", "Bluey", "Mr. Robot", "Succession", "Blue Eye Samurai", "Frieren"]
BOOKS = ["Project Hail Mary", "The Overstory", "Piranesi", "Sapiens", "Deep Work", "Dune",
         "The Pragmatic Programmer", "Klara and the Sun", "Designing Data-Intensive Applications",
         "A Psalm for the Wild-Built", "The Left Hand of Darkness", "Thinking, Fast and Slow"]
CITIES = ["Berlin", "Lisbon", "Toronto", "Osaka", "Austin", "Copenhagen", "Melbourne", "Vienna",
          "Porto", "Seoul", "Zürich", "Montréal"]
WEATHER = ["light rain", "clear skies", "fog in the morning", "strong wind", "snow showers",
           "thunderstorms later", "humid and cloudy", "sunny spells"]
OPINIONS = ["really good", "slow start but worth it", "not for me", "would recommend to Sam",
            "great soundtrack", "too long", "the user loved it", "keep for a rainy day"]
LESSONS = ["always confirm the time zone before booking", "summaries work better as bullet points",
           "ask before deleting anything", "check the calendar before suggesting a time",
           "the user prefers one message over three", "keep receipts in memory/finance",
           "retry the weather API once before reporting an outage", "never share the home address"]
TOOLS = ["weather", "calendar", "web_search", "browser", "exec", "email", "home_assistant", "spotify",
         "github", "notes", "reminders", "maps"]
WORDS = ("about after again agent also backup before better calendar change check clean config "
         "daily done draft email evening family first fix follow friday home idea inbox later "
         "list memory message monday morning music next note notes order plan project quick "
         "read remind reply review run schedule script search send server share skill sleep "
         "small soon summary sync task team thanks today tomorrow travel trip update user week "
         "weekend work write").split()
TEMPLATES = [
    "Talked with {person} about {topic}; agreed to {action} by {weekday}.",
    "{person} prefers {thing} over {thing2} — remember this next time.",
    "Reminder: {action} before {hh}:{mm}.",
    "Finished the {topic} checklist; took about {n} minutes.",
    "User asked me to {action}. Done, confirmation saved.",
    "Idea for {topic}: {words}.",
    "Watched {show} (S{s}E{e}) — {opinion}.",
    "Read {n} pages of *{book}*; {opinion}.",
    "Weather in {city}: {t}°C, {weather}.",
    "Spent €{price} on {thing} for {topic}.",
    "Lesson learned: {lesson}.",
    "Heartbeat check: {n} unread emails, nothing urgent.",
    "Synced notes about {topic} with {person}.",
    "Note to self: {words}.",
    "Moved {topic} to next week because {person} is travelling to {city}.",
    "{person} recommended {book}; added to the reading list.",
    "Ran the `{tool}` tool {n} times for {topic}; all good.",
    "Open question about {topic}: {words}?",
]


@dataclass(frozen=True)
class Stats:
    """What `generate` wrote: totals, the part in peersync's default selection, and per kind."""

    files: int
    bytes: int
    selected_files: int
    selected_bytes: int
    kinds: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"files": self.files, "bytes": self.bytes, "selected_files": self.selected_files,
                "selected_bytes": self.selected_bytes, "kinds": dict(self.kinds)}


class _Text:
    """Sentence-level fake prose from a seeded generator; a pool keeps big trees fast."""

    def __init__(self, rng: random.Random, pool_size: int = 3000):
        self.rng = rng
        self.pool = [self.sentence() for _ in range(pool_size)]
        self.avg = sum(map(len, self.pool)) / len(self.pool) + 1

    def person(self) -> str:
        return f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}"

    def words(self, lo: int = 4, hi: int = 10) -> str:
        return " ".join(self.rng.choices(WORDS, k=self.rng.randint(lo, hi)))

    def sentence(self) -> str:
        r = self.rng
        return r.choice(TEMPLATES).format(
            person=self.person(), topic=r.choice(TOPICS), action=r.choice(ACTIONS),
            weekday=r.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
            thing=r.choice(THINGS), thing2=r.choice(THINGS), hh=f"{r.randint(7, 22):02d}",
            mm=f"{r.choice([0, 15, 30, 45]):02d}", n=r.randint(2, 90), words=self.words(),
            show=r.choice(SHOWS), s=r.randint(1, 4), e=r.randint(1, 10), opinion=r.choice(OPINIONS),
            book=r.choice(BOOKS), city=r.choice(CITIES), t=r.randint(-8, 34), weather=r.choice(WEATHER),
            price=f"{r.randint(3, 400)}.{r.randint(0, 99):02d}", lesson=r.choice(LESSONS),
            tool=r.choice(TOOLS),
        )

    def sentences(self, size: int) -> list[str]:
        return self.rng.choices(self.pool, k=max(1, int(size / self.avg) + 1))

    def paragraph(self, size: int) -> str:
        return " ".join(self.sentences(size))

    def bullets(self, size: int, prefix: str = "- ") -> str:
        return "".join(f"{prefix}{s}\n" for s in self.sentences(size))


class _Writer:
    """Writes files under root, counting them, and stamps each with its logical time."""

    def __init__(self, root: Path):
        self.root = root
        self.dirs: set[str] = set()
        self.kinds: dict[str, int] = {}
        self.files = self.bytes = self.selected_files = self.selected_bytes = 0

    def write(self, rel: str, data: str | bytes, when: datetime, kind: str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        parent = rel.rpartition("/")[0]
        if parent and parent not in self.dirs:
            os.makedirs(self.root / parent, exist_ok=True)
            self.dirs.add(parent)
        path = self.root / rel
        with open(path, "wb") as f:
            f.write(raw)
        ns = int(when.timestamp()) * 1_000_000_000
        os.utime(path, ns=(ns, ns))
        self.files += 1
        self.bytes += len(raw)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if is_selected(rel):
            self.selected_files += 1
            self.selected_bytes += len(raw)


def _size(rng: random.Random, lo: int, hi: int, scale: float) -> int:
    """Log-uniform between lo and hi bytes (many small files, some big), times `scale`."""
    return max(16, int(lo * (hi / lo) ** rng.random() * scale))


def _at(day: date, rng: random.Random) -> datetime:
    return datetime(day.year, day.month, day.day, rng.randint(7, 23), rng.randint(0, 59),
                    rng.randint(0, 59), tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-").replace("--", "-")


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


def generate(root: Path | str, *, files: int = 3000, seed: int = 0, size_scale: float = 1.0) -> Stats:
    """Write a workspace of exactly `files` files under `root` (created; should be empty).

    Same `files`, `seed` and `size_scale` → byte-identical tree, mtimes included.  About 4 KB a
    file on average at size_scale 1.0 (10,000 files ≈ 40 MB); ~5 % is junk that the default
    selection excludes (node_modules/, .git/, cache/, *.tmp, .DS_Store).
    """
    if files < MIN_FILES:
        raise ValueError(f"files must be at least {MIN_FILES}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    text = _Text(rng)
    out = _Writer(root)
    start = END_DATE - timedelta(days=SPAN_DAYS - 1)
    end_time = datetime(END_DATE.year, END_DATE.month, END_DATE.day, 21, 30, tzinfo=timezone.utc)

    def some_day() -> date:
        return start + timedelta(days=rng.randrange(SPAN_DAYS))

    skills = list(SKILLS)[: min(len(SKILLS), 4 + files // 800)]
    people_taken: set[str] = set()

    # -- fixed files ---------------------------------------------------------------------
    _write_top_level(out, text, rng, skills, end_time, size_scale)
    _write_config(out, rng, skills, end_time)
    for skill in skills:
        _write_skill(out, text, rng, skill, some_day, size_scale)
    out.write(".DS_Store", _ds_store(rng), end_time, "junk")
    out.write("memory/.DS_Store", _ds_store(rng), end_time, "junk")
    out.write("memory/.MEMORY.md.swp.tmp", text.paragraph(400), end_time, "junk")
    for rel, body in (("HEAD", "ref: refs/heads/main\n"),
                      ("config", "[core]\n\trepositoryformatversion = 0\n\tbare = false\n"),
                      ("description", "Unnamed repository; edit this file 'description' to name the repository.\n"),
                      ("refs/heads/main", f"{rng.getrandbits(160):040x}\n")):
        out.write(f".git/{rel}", body, end_time, "junk")

    # -- scaled files ----------------------------------------------------------------------
    remaining = files - out.files
    counts = {kind: int(remaining * share) for kind, share in SHARES.items()}
    counts["daily"] = min(counts["daily"], SPAN_DAYS)
    counts["topics"] = remaining - sum(counts.values())

    days = sorted(rng.sample(range(SPAN_DAYS), counts["daily"]))
    for index in days:
        day = start + timedelta(days=index)
        out.write(f"memory/{day.isoformat()}.md", _daily_note(text, rng, day, size_scale),
                  datetime(day.year, day.month, day.day, 23, 40, tzinfo=timezone.utc), "daily")

    item_taken: set[str] = set()
    for i in range(counts["items"]):
        skill = skills[i % len(skills)]
        folder, kind = SKILLS[skill]
        day = some_day()
        name, ext, body = _skill_item(text, rng, kind, day, size_scale)
        rel = _unique(f"memory/{skill}/{folder}/{day.year}/{name}", item_taken)
        out.write(f"{rel}.{ext}", body, _at(day, rng), "items")

    for _ in range(counts["people"]):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        slug = _unique(_slug(f"{first} {last}"), people_taken)
        out.write(f"memory/people/{slug}.md", _person(text, rng, f"{first} {last}", some_day, size_scale),
                  _at(some_day(), rng), "people")

    for i in range(counts["logs"]):
        day = some_day()
        big = i % 10 == 0  # every tenth log is tens of KB
        size = _size(rng, 20_000, 90_000, size_scale) if big else _size(rng, 1_500, 12_000, size_scale)
        rel = _unique(f"memory/logs/{day:%Y-%m}/session-{day.isoformat()}-{rng.getrandbits(24):06x}", item_taken)
        out.write(f"{rel}.jsonl", _jsonl(text, rng, day, size), _at(day, rng), "logs")

    for i in range(counts["skillfiles"]):
        skill = skills[i % len(skills)]
        name = _unique(f"skills/{skill}/references/{_slug(rng.choice(TOPICS))}", item_taken)
        out.write(f"{name}.md", f"# {skill} reference\n\n" + text.bullets(_size(rng, 500, 6000, size_scale)),
                  end_time, "skillfiles")

    for i in range(counts["junk"]):
        _write_junk(out, text, rng, skills, i, end_time, item_taken, size_scale)

    topic_taken: set[str] = set()
    for _ in range(counts["topics"]):
        day = some_day()
        title = rng.choice(TOPICS)
        area = rng.choice(["topics", "projects", "notes", "ideas"])
        slug = _unique(f"memory/{area}/{day.year}/{_slug(title)}", topic_taken)
        out.write(f"{slug}.md", _topic_note(text, rng, title, day, size_scale), _at(day, rng), "topics")

    return Stats(out.files, out.bytes, out.selected_files, out.selected_bytes, dict(sorted(out.kinds.items())))


# -- fixed content ---------------------------------------------------------------------------
def _write_top_level(out: _Writer, text: _Text, rng: random.Random, skills, when, scale) -> None:
    user = text.person()
    out.write("MEMORY.md", (
        "# MEMORY.md — long-term memory\n\n"
        "## About the user\n" + text.bullets(_size(rng, 1500, 3000, scale)) +
        "\n## Preferences\n" + "".join(f"- Prefers {rng.choice(THINGS)} over {rng.choice(THINGS)}\n" for _ in range(12)) +
        "\n## Ongoing projects\n" + "".join(f"- {t}: {text.words()}\n" for t in rng.sample(TOPICS, 8)) +
        "\n## Lessons learned\n" + "".join(f"- {lesson}\n" for lesson in LESSONS) +
        "\n## Notes\n" + text.bullets(_size(rng, 4000, 12000, scale))
    ), when, "top")
    out.write("USER.md", (
        f"# USER.md\n\n- **Name:** {user}\n- **Pronouns:** they/them\n"
        f"- **Timezone:** Europe/{rng.choice(['Berlin', 'Lisbon', 'Vienna', 'Zurich'])}\n"
        f"- **Language:** English, some German\n- **Home city:** {rng.choice(CITIES)}\n\n"
        "## Context\n" + text.paragraph(_size(rng, 800, 2500, scale)) + "\n"
    ), when, "top")
    out.write("IDENTITY.md", (
        f"# IDENTITY.md\n\n- **Name:** {rng.choice(['Clawd', 'Molty', 'Pinch', 'Shelly'])}\n"
        "- **Creature:** a helpful lobster\n- **Vibe:** calm, concise, a bit dry\n- **Emoji:** 🦞\n"
        f"- **Instance:** {rng.choice(['mac-mini', 'laptop', 'server'])}\n"
    ), when, "top")
    out.write("HEARTBEAT.md", (
        "# HEARTBEAT.md\n\n"
        "- Run `skills/clawdbot-sync/handler.sh heartbeat $WORKSPACE` and report only if it prints something.\n"
        "- Check the inbox for anything urgent.\n- Glance at the calendar for the next 2 hours.\n"
    ), when, "top")
    out.write("AGENTS.md", (
        "# AGENTS.md — your workspace\n\n## Every session\n1. Read SOUL.md, USER.md and MEMORY.md.\n"
        "2. Read memory/ notes for today and yesterday.\n\n## Memory\n"
        "- Daily notes: `memory/YYYY-MM-DD.md` (raw log of what happened).\n"
        "- Long-term: `MEMORY.md` (curated; update it when something matters).\n\n"
        "## Safety\n- Don't exfiltrate private data.\n- Ask before destructive commands.\n"
    ), when, "top")
    out.write("SOUL.md", "# SOUL.md\n\n" + text.paragraph(_size(rng, 800, 2000, scale)) + "\n", when, "top")
    out.write("TOOLS.md", "# TOOLS.md — local notes\n\n" + "".join(
        f"## {tool}\n{text.words()}\n\n" for tool in TOOLS), when, "top")


def _write_config(out: _Writer, rng: random.Random, skills, when) -> None:
    docs = {
        "openclaw.json": {"agent": {"model": "anthropic/claude-opus-4-5", "thinking": "low",
                                    "workspace": "~/clawd"},
                          "heartbeat": {"everyMinutes": rng.choice([15, 30, 60])},
                          "skills": {name: {"enabled": True} for name in skills}},
        "channels.json": {"telegram": {"enabled": True, "allowFrom": [f"+4915{rng.randint(10**7, 10**8 - 1)}"]},
                          "whatsapp": {"enabled": rng.random() < 0.5}},
        "models.json": {"default": "anthropic/claude-sonnet-4-5",
                        "fallbacks": ["openai/gpt-5-mini", "ollama/llama3.1:8b"]},
        "cron.json": {"jobs": [{"name": "morning-brief", "schedule": "0 7 * * *"},
                               {"name": "weekly-review", "schedule": "0 18 * * 5"}]},
    }
    for name, doc in docs.items():
        out.write(f"config/{name}", json.dumps(doc, indent=2, ensure_ascii=False) + "\n", when, "config")


def _write_skill(out: _Writer, text: _Text, rng, skill: str, some_day, scale) -> None:
    day = some_day()
    out.write(f"skills/{skill}/SKILL.md", (
        f"---\nname: {skill}\ndescription: {text.words(6, 12)}\n---\n\n# {skill}\n\n"
        + text.paragraph(_size(rng, 400, 1500, scale)) + "\n\n## Usage\n"
        "```bash\nhandler.sh status $WORKSPACE\n```\n"
    ), _at(day, rng), "skills")
    out.write(f"skills/{skill}/handler.sh", (
        "#!/usr/bin/env bash\nset -euo pipefail\nWORKSPACE=\"${@: -1}\"\n"
        f"exec python3 \"$(dirname \"$0\")/scripts/{skill.replace('-', '_')}.py\" \"$@\"\n"
    ), _at(day, rng), "skills")
    out.write(f"skills/{skill}/scripts/{skill.replace('-', '_')}.py", (
        f'"""{skill} helper."""\nimport json, sys\n\n\ndef main(argv):\n'
        f'    print(json.dumps({{"skill": "{skill}", "args": argv}}))\n\n\n'
        'if __name__ == "__main__":\n    main(sys.argv[1:])\n'
    ), _at(day, rng), "skills")
    moment = _at(some_day(), rng)
    prefs = {"updatedAt": _iso(moment), "enabled": True, "notify": rng.choice(["always", "digest", "never"]),
             "favorites": rng.sample(THINGS, 3), "avoid": rng.sample(THINGS, 2)}
    if skill == "streaming-buddy":
        prefs.update({"favoriteGenres": ["sci-fi", "drama", "animation"], "services": ["Netflix", "Apple TV+"],
                      "watchlist": rng.sample(SHOWS, 5), "subtitles": "en"})
    out.write(f"memory/{skill}/preferences.json", json.dumps(prefs, indent=2, ensure_ascii=False) + "\n",
              moment, "skilldata")
    state = {"lastRun": _iso(moment), "runs": rng.randint(3, 900), "cursor": f"{rng.getrandbits(64):016x}"}
    out.write(f"memory/{skill}/state.json", json.dumps(state, indent=2) + "\n", moment, "skilldata")
    out.write(f"memory/{skill}/history.jsonl", _jsonl(text, rng, moment.date(), _size(rng, 2000, 30000, scale)),
              moment, "skilldata")


def _write_junk(out: _Writer, text: _Text, rng, skills, i: int, when, taken: set[str], scale) -> None:
    skill = skills[i % len(skills)]
    kind = i % 4
    if kind == 0:
        pkg = rng.choice(["lodash", "axios", "dayjs", "zod", "commander", "chalk", "ws", "undici"])
        rel = _unique(f"skills/{skill}/node_modules/{pkg}/lib/{rng.choice(WORDS)}", taken)
        out.write(f"{rel}.js", "'use strict';\n" + "".join(
            f"function {w}_{n}(a, b) {{ return a + b; }}\nmodule.exports.{w}_{n} = {w}_{n};\n"
            for n, w in enumerate(rng.choices(WORDS, k=_size(rng, 200, 6000, scale) // 90 + 1))), when, "junk")
    elif kind == 1:
        digest = f"{rng.getrandbits(160):040x}"
        out.write(f".git/objects/{digest[:2]}/{digest[2:]}", rng.randbytes(_size(rng, 100, 4000, scale)),
                  when, "junk")
    elif kind == 2:
        rel = _unique(f"memory/{skill}/cache/{rng.getrandbits(64):016x}", taken)
        out.write(f"{rel}.json", json.dumps({"fetchedAt": _iso(when), "body": text.paragraph(
            _size(rng, 300, 5000, scale))}) + "\n", when, "junk")
    else:
        rel = _unique(f"memory/{skill}/.{rng.choice(WORDS)}-{rng.getrandbits(32):08x}", taken)
        out.write(f"{rel}.tmp", text.paragraph(_size(rng, 100, 2000, scale)), when, "junk")


def _ds_store(rng: random.Random) -> bytes:
    return b"\x00\x00\x00\x01Bud1" + rng.randbytes(6140)


# -- scaled content ---------------------------------------------------------------------------
def _daily_note(text: _Text, rng, day: date, scale) -> str:
    size = _size(rng, 1_500, 9_000, scale)
    entries = text.sentences(size * 0.8)
    times = sorted((rng.randint(6, 23), rng.randint(0, 59)) for _ in entries)
    log = "".join(f"- {h:02d}:{m:02d} — {s}\n" for (h, m), s in zip(times, entries))
    todo = "".join(f"- [{rng.choice(' x')}] {rng.choice(ACTIONS).capitalize()}\n" for _ in range(rng.randint(1, 5)))
    return (f"# {day.isoformat()} ({day:%A})\n\n## Summary\n{text.paragraph(size * 0.15)}\n\n"
            f"## Log\n{log}\n## Follow-ups\n{todo}")


def _topic_note(text: _Text, rng, title: str, day: date, scale) -> str:
    size = _size(rng, 1_200, 14_000, scale)
    tags = " ".join(f"#{w}" for w in rng.sample(WORDS, 3))
    return (f"# {title[0].upper()}{title[1:]}\n\n_Last updated: {day.isoformat()}_ · tags: {tags}\n\n"
            f"## Context\n{text.paragraph(size * 0.3)}\n\n## Notes\n{text.bullets(size * 0.6)}\n"
            f"## Links\n- [[memory/{day.isoformat()}.md]]\n- [[memory/people/{_slug(text.person())}.md]]\n")


def _person(text: _Text, rng, name: str, some_day, scale) -> str:
    notes = "".join(f"- {some_day().isoformat()}: {s}\n" for s in text.sentences(_size(rng, 300, 2500, scale)))
    return (f"# {name}\n\n- **Relationship:** {rng.choice(['friend', 'colleague', 'family', 'neighbour', 'client'])}\n"
            f"- **Birthday:** {rng.randint(1955, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}\n"
            f"- **Likes:** {rng.choice(THINGS)}, {rng.choice(THINGS)}\n- **City:** {rng.choice(CITIES)}\n\n"
            f"## Notes\n{notes}")


def _skill_item(text: _Text, rng, kind: str, day: date, scale) -> tuple[str, str, str]:
    """(name, extension, body) of one per-skill record."""
    if kind == "recipe":
        title = f"{rng.choice(['Quick', 'Spicy', 'Lemon', 'Sunday', 'Green', 'Smoky'])} {rng.choice(['pasta', 'curry', 'salad', 'soup', 'tacos', 'risotto', 'bowl'])}"
        steps = "".join(f"{n}. {s}\n" for n, s in enumerate(text.sentences(_size(rng, 300, 2500, scale)), 1))
        return _slug(title), "md", f"# {title}\n\nServes {rng.randint(1, 6)} · {rng.randint(10, 90)} min\n\n## Steps\n{steps}"
    record: dict = {"id": f"{rng.getrandbits(48):012x}", "createdAt": _iso(_at(day, rng))}
    if kind == "show":
        record.update(title=rng.choice(SHOWS), season=rng.randint(1, 5), episode=rng.randint(1, 10),
                      rating=rng.randint(1, 5), service=rng.choice(["Netflix", "Apple TV+", "Prime", "Disney+"]))
        name = _slug(record["title"])
    elif kind == "book":
        record.update(title=rng.choice(BOOKS), status=rng.choice(["to-read", "reading", "done"]),
                      pages=rng.randint(120, 900), recommendedBy=text.person())
        name = _slug(record["title"])
    elif kind == "weather":
        record.update(city=rng.choice(CITIES), tempC=rng.randint(-10, 36), conditions=rng.choice(WEATHER),
                      windKmh=rng.randint(0, 70))
        name = f"{day.isoformat()}-{_slug(record['city'])}"
    elif kind == "transaction":
        record.update(amount=round(rng.uniform(2, 900), 2), currency="EUR", category=rng.choice(
            ["groceries", "rent", "travel", "subscriptions", "dining", "health"]), merchant=rng.choice(WORDS).title())
        name = f"{day.isoformat()}-{record['category']}"
    else:
        record.update(title=f"{rng.choice(TOPICS)}", status=rng.choice(["open", "done", "snoozed"]),
                      owner=text.person(), tags=rng.sample(WORDS, 3))
        name = f"{kind}-{_slug(record['title'])}"
    record["notes"] = text.sentences(_size(rng, 400, 5000, scale))
    return name, "json", json.dumps(record, indent=2, ensure_ascii=False) + "\n"


def _jsonl(text: _Text, rng, day: date, size: int) -> str:
    lines: list[str] = []
    total = 0
    moment = _at(day, rng)
    session = f"s-{rng.getrandbits(32):08x}"
    while total < size:
        moment += timedelta(seconds=rng.randint(1, 240))
        role = rng.choice(["user", "assistant", "assistant", "tool"])
        event = {"ts": _iso(moment), "session": session, "role": role}
        if role == "tool":
            event.update(tool=rng.choice(TOOLS), ok=rng.random() < 0.95, ms=rng.randint(20, 4000))
        else:
            event.update(text=rng.choice(text.pool), tokens=rng.randint(8, 600))
        line = json.dumps(event, ensure_ascii=False) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)


def session_log(root: Path | str, rel: str, size: int, *, seed: int = 0) -> int:
    """Append about `size` bytes of realistic JSONL session events to `rel` (created if needed);
    returns the bytes appended.  An agent's session log grows like this all day."""
    rng = random.Random(seed)
    data = _jsonl(_Text(rng, pool_size=300), rng, END_DATE, size)
    _append(Path(root), rel, data)
    return len(data.encode())


# -- edits ------------------------------------------------------------------------------------
def mutate(root: Path | str, *, seed: int, n: int) -> list[str]:
    """Make `n` realistic edits inside the default selection of the workspace at `root`: append to
    a daily note (or start the next one), append JSONL events, edit a JSON record, create a note,
    delete a note.  Returns the touched relpaths (created, changed or deleted), in order, once
    each.  Deterministic for the same tree and seed; never touches the state dir."""
    root = Path(root)
    rng = random.Random(seed)
    text = _Text(rng, pool_size=300)
    files = _selected(root)
    touched: dict[str, None] = {}
    ops = [_append_daily] * 30 + [_append_jsonl] * 25 + [_edit_json] * 20 + [_create_note] * 15 + [_delete_note] * 10
    for _ in range(n):
        rel = rng.choice(ops)(root, files, rng, text)
        touched[rel] = None
    return list(touched)


def _selected(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if is_selected(rel) and not os.path.islink(os.path.join(dirpath, name)):
                out.append(rel)
    return out


def _is_daily(rel: str) -> bool:
    return DAILY.fullmatch(rel) is not None


def _append(root: Path, rel: str, data: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)


def _append_daily(root: Path, files: list[str], rng, text: _Text) -> str:
    daily = sorted(f for f in files if _is_daily(f))
    if daily and rng.random() < 0.8:
        rel = rng.choice(daily[-3:])
    else:
        last = date.fromisoformat(daily[-1][7:17]) if daily else END_DATE
        rel = f"memory/{last + timedelta(days=1)}.md"
        if rel not in files:
            files.append(rel)
            _append(root, rel, f"# {rel[7:17]}\n\n## Log\n")
    _append(root, rel, f"- {rng.randint(6, 23):02d}:{rng.randint(0, 59):02d} — {rng.choice(text.pool)}\n")
    return rel


def _append_jsonl(root: Path, files: list[str], rng, text: _Text) -> str:
    logs = [f for f in files if f.endswith(".jsonl")]
    rel = rng.choice(logs) if logs else "memory/logs/events.jsonl"
    if rel not in files:
        files.append(rel)
    _append(root, rel, _jsonl(text, rng, END_DATE + timedelta(days=rng.randint(1, 30)), rng.randint(100, 1200)))
    return rel


def _edit_json(root: Path, files: list[str], rng, text: _Text) -> str:
    docs = [f for f in files if f.endswith(".json")]
    while docs:
        rel = docs.pop(rng.randrange(len(docs)))
        try:
            doc = json.loads((root / rel).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            doc["updatedAt"] = _iso(_at(END_DATE + timedelta(days=rng.randint(1, 30)), rng))
            doc[rng.choice(["mood", "note", "lastChoice", "favorite"])] = rng.choice(text.pool)
            (root / rel).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            return rel
    return _create_note(root, files, rng, text)


def _create_note(root: Path, files: list[str], rng, text: _Text) -> str:
    stems = {f[:-3] for f in files if f.endswith(".md")}
    rel = _unique(f"memory/notes/{_slug(rng.choice(TOPICS))}-{rng.choice(WORDS)}", stems) + ".md"
    files.append(rel)
    _append(root, rel, f"# {rng.choice(TOPICS).capitalize()}\n\n{text.bullets(rng.randint(200, 1500))}")
    return rel


def _delete_note(root: Path, files: list[str], rng, text: _Text) -> str:
    notes = [f for f in files if f.endswith(".md") and f.startswith("memory/") and not _is_daily(f)]
    if not notes:
        return _create_note(root, files, rng, text)
    rel = rng.choice(notes)
    files.remove(rel)
    os.unlink(root / rel)
    return rel
