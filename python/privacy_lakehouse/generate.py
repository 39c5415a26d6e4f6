"""Synthetic landing data for the demo retail bank, at any scale, byte-for-byte reproducible.

Files land where the bronze models read them (one file per source and batch; batch N covers
calendar month N counted from January 2024):

    core_banking/customers/customers_b001.csv     CSV; batch >= 2 adds preferred_language
    core_banking/accounts/accounts_b001.csv       CSV
    cards/transactions/transactions_b001.parquet  all-string Parquet; batch >= 2 adds device_id;
                                                  transactions_b001_p001.parquet... when split
    consent/events/consent_events_b001.jsonl      JSON lines
    support/cases/support_cases_b001.jsonl        JSON lines; notes, ~30% with personal data
    _generator.json                               the summary: files, rows, bad rows by kind

Every file carries about `bad_row_rate` intentionally bad rows, each with exactly one defect so
the counts in the summary are exact. Contract breaks that bronze must quarantine:
malformed_date, missing_key (the file's key column empty, or null in JSON/Parquet),
unknown_enum, bad_amount, unparseable_line (truncated JSON). Valid rows that silver must handle:
duplicate (a row repeated verbatim, right after its original), late_event (event time 14-42 days
before the batch window) and out_of_order (event time earlier than the previous row's).
In event files (transactions, consent, support) a bad row takes the place of a generated row, so
a file holds exactly the requested number of rows; in reference files (customers, accounts) every
entity keeps one clean row and the bad rows are extra, corrupted re-sends of it, so no customer or
account goes missing downstream.

Randomness comes from numpy generators seeded with (seed, stream, batch, ...): each customer's
attributes depend only on the seed and the customer number, so an appended batch agrees with the
files written before it. Determinism holds for one numpy version (numpy may change its streams).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from privacy_lakehouse.settings import load_settings

Progress = Callable[[str], None]

SUMMARY_FILE = "_generator.json"
FORMAT_VERSION = 1

# Defect kinds. Quarantinable ones break the source contract; the others are valid rows.
MALFORMED_DATE = "malformed_date"
MISSING_KEY = "missing_key"
UNKNOWN_ENUM = "unknown_enum"
BAD_AMOUNT = "bad_amount"
UNPARSEABLE_LINE = "unparseable_line"
DUPLICATE = "duplicate"
LATE_EVENT = "late_event"
OUT_OF_ORDER = "out_of_order"
QUARANTINABLE_KINDS = (MALFORMED_DATE, MISSING_KEY, UNKNOWN_ENUM, BAD_AMOUNT, UNPARSEABLE_LINE)
VALID_KINDS = (DUPLICATE, LATE_EVENT, OUT_OF_ORDER)

DEFAULT_ROWS_PER_FILE = 1_000_000
_CHUNK_ROWS = 500_000  # transactions are generated and written in chunks of this size
_BLOCK = 1 << 16  # customers' attributes are drawn in fixed blocks so they never depend on totals
_NEW_CUSTOMER_RATE = 0.02  # new customers per later batch, relative to the first batch
_UPDATE_RATE = 0.05  # customers updated in each later batch
_APPEND_UPDATE_RATE = 0.01
_ACCOUNT_CLOSE_RATE = 0.005  # open savings accounts closed in each later batch

# Random streams: each part of the data has its own, so adding one never shifts another.
_S_POPULATION, _S_SCRAMBLE, _S_UPDATES, _S_CUSTOMER_FILE, _S_ACCOUNTS = 1, 2, 3, 4, 5
_S_TRANSACTIONS, _S_CONSENT, _S_SUPPORT, _S_CLOSURES = 6, 7, 8, 9

_EPOCH = date(1970, 1, 1)
_DAY = 86_400
_LATE_MIN_DAYS, _LATE_MAX_DAYS = 14, 42
# Generated event times start this long after the window opens, so an out-of-order row (moved up
# to an hour before its predecessor) still falls inside the window and is never mistaken as late.
_WINDOW_MARGIN = 3_600

MALFORMED_DATES = ("2024-13-45", "31/02/2024", "yesterday")
MALFORMED_TIMESTAMPS = ("2024-13-45 10:15:00", "31/02/2024 14:05", "yesterday")

CUSTOMER_COLUMNS = (
    "customer_id", "first_name", "last_name", "email", "phone", "national_id", "birth_date",
    "street_address", "postcode", "city", "country", "created_at", "updated_at",
)  # fmt: skip
CUSTOMER_DRIFT_COLUMNS = ("preferred_language",)
ACCOUNT_COLUMNS = (
    "account_id", "customer_id", "account_type", "iban", "currency", "opened_at", "status",
    "balance",
)  # fmt: skip
TRANSACTION_COLUMNS = (
    "transaction_id", "account_id", "customer_id", "card_number", "amount", "currency",
    "merchant_category", "merchant_country", "transaction_ts", "channel",
)  # fmt: skip
TRANSACTION_DRIFT_COLUMNS = ("device_id",)
CONSENT_COLUMNS = ("event_id", "customer_id", "purpose", "action", "event_ts", "channel")
SUPPORT_COLUMNS = ("case_id", "customer_id", "opened_at", "channel", "category", "status", "note")

ACCOUNT_TYPES = ("checking", "savings", "credit")
ACCOUNT_STATUSES = ("open", "closed")
TRANSACTION_CHANNELS = ("pos", "online", "atm")
PURPOSES = ("analytics", "marketing", "fraud_prevention", "partner_sharing")
CONSENT_ACTIONS = ("grant", "revoke")
CONSENT_CHANNELS = ("app", "web", "branch")
SUPPORT_CHANNELS = ("phone", "email", "chat", "branch")
SUPPORT_CATEGORIES = (
    "card_lost", "card_blocked", "transaction_dispute", "fee_question", "address_change",
    "login_problem", "fraud_report", "complaint", "product_question",
)  # fmt: skip
SUPPORT_STATUSES = ("open", "pending", "resolved", "closed")
NOTE_PII_TYPES = ("email", "phone", "card_number", "name")

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_FORMAT = "%Y-%m-%d"
AMOUNT_PATTERN = r"^-?[0-9]+\.[0-9]{2}$"

# What each source promises; written into the summary so consumers and tests check the same thing.
CONTRACTS: dict[str, dict] = {
    "customers": {
        "key": "customer_id",
        "columns": list(CUSTOMER_COLUMNS),
        "drift_columns": {"preferred_language": 2},
        "dates": {"birth_date": DATE_FORMAT, "created_at": TIMESTAMP_FORMAT,
                  "updated_at": TIMESTAMP_FORMAT},
        "enums": {},
        "amounts": [],
        "event_time": None,
        "defects": [MALFORMED_DATE, MISSING_KEY, DUPLICATE],
    },
    "accounts": {
        "key": "account_id",
        "columns": list(ACCOUNT_COLUMNS),
        "drift_columns": {},
        "dates": {"opened_at": TIMESTAMP_FORMAT},
        "enums": {"account_type": list(ACCOUNT_TYPES), "status": list(ACCOUNT_STATUSES)},
        "amounts": ["balance"],
        "event_time": None,
        "defects": [MALFORMED_DATE, MISSING_KEY, UNKNOWN_ENUM, BAD_AMOUNT, DUPLICATE],
    },
    "transactions": {
        "key": "transaction_id",
        "columns": list(TRANSACTION_COLUMNS),
        "drift_columns": {"device_id": 2},
        "dates": {"transaction_ts": TIMESTAMP_FORMAT},
        "enums": {"channel": list(TRANSACTION_CHANNELS)},
        "amounts": ["amount"],
        "event_time": "transaction_ts",
        "defects": [MALFORMED_DATE, MISSING_KEY, UNKNOWN_ENUM, BAD_AMOUNT, DUPLICATE, LATE_EVENT,
                    OUT_OF_ORDER],
    },
    "consent_events": {
        "key": "event_id",
        "columns": list(CONSENT_COLUMNS),
        "drift_columns": {},
        "dates": {"event_ts": TIMESTAMP_FORMAT},
        "enums": {"purpose": list(PURPOSES), "action": list(CONSENT_ACTIONS),
                  "channel": list(CONSENT_CHANNELS)},
        "amounts": [],
        "event_time": "event_ts",
        "defects": [MALFORMED_DATE, MISSING_KEY, UNKNOWN_ENUM, UNPARSEABLE_LINE, DUPLICATE,
                    LATE_EVENT, OUT_OF_ORDER],
    },
    "support_cases": {
        "key": "case_id",
        "columns": list(SUPPORT_COLUMNS),
        "drift_columns": {},
        "dates": {"opened_at": TIMESTAMP_FORMAT},
        "enums": {"channel": list(SUPPORT_CHANNELS), "category": list(SUPPORT_CATEGORIES),
                  "status": list(SUPPORT_STATUSES)},
        "amounts": [],
        "event_time": None,
        "defects": [MALFORMED_DATE, MISSING_KEY, UNKNOWN_ENUM, UNPARSEABLE_LINE, DUPLICATE],
    },
}  # fmt: skip


class LandingError(ValueError):
    """The generator refuses to run with these arguments or into this folder."""


# --------------------------------------------------------------------------------------------
# Reference data
# --------------------------------------------------------------------------------------------

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _nl_postcode(raw: int) -> str:
    return f"{1000 + raw % 9000} {_LETTERS[raw // 9000 % 26]}{_LETTERS[raw // 234000 % 26]}"


def _five_digit_postcode(raw: int) -> str:
    return f"{1000 + raw % 98000:05d}"


def _be_postcode(raw: int) -> str:
    return str(1000 + raw % 9000)


def _gb_postcode(raw: int) -> str:
    letters = [_LETTERS[raw // 26**k % 26] for k in range(4)]
    return f"{letters[0]}{letters[1]}{1 + raw % 9} {raw // 7 % 10}{letters[2]}{letters[3]}"


def _pl_postcode(raw: int) -> str:
    return f"{raw % 100:02d}-{raw // 100 % 1000:03d}"


@dataclass(frozen=True)
class _Country:
    code: str
    weight: float
    languages: tuple[str, ...]
    # (eight unique digits, one spare digit) -> a mobile number in the country's usual layout
    phone: Callable[[str, int], str]
    postcode: Callable[[int], str]
    house_number_first: bool
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    streets: tuple[str, ...]
    cities: tuple[str, ...]


COUNTRIES: tuple[_Country, ...] = (
    _Country(
        "NL", 0.80, ("nl",),
        lambda d, x: f"+31 6 {d}",
        _nl_postcode, False,
        ("Emma", "Sophie", "Julia", "Zoë", "Tess", "Noor", "Fenna", "Sanne", "Anouk", "Lotte",
         "Joëlle", "Daan", "Sem", "Lucas", "Levi", "Finn", "Bram", "Jesse", "Thijs", "Ruben",
         "Maarten", "Gijs", "Inge", "Wouter"),
        ("de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen",
         "Visser", "Smit", "Meijer", "de Boer", "Mulder", "de Groot", "Bos", "Vos", "Peters",
         "Hendriks", "van Leeuwen", "Dekker", "Brouwer", "de Wit", "Dijkstra", "van der Meer",
         "Kuijpers", "Koç", "El Amrani"),
        ("Kerkstraat", "Dorpsstraat", "Schoolstraat", "Molenweg", "Stationsweg", "Julianalaan",
         "Beatrixlaan", "Prinsengracht", "Herengracht", "Lindenlaan", "Wilhelminastraat",
         "Kastanjelaan", "Eikenlaan", "Brugstraat", "Van Goghstraat"),
        ("Amsterdam", "Rotterdam", "Den Haag", "Utrecht", "Eindhoven", "Groningen", "Tilburg",
         "Almere", "Breda", "Nijmegen", "Apeldoorn", "Haarlem", "Arnhem", "Amersfoort",
         "'s-Hertogenbosch", "Leeuwarden", "Zwolle", "Maastricht", "Delft", "Enschede"),
    ),
    _Country(
        "DE", 0.05, ("de",),
        lambda d, x: f"+49 15{x} {d}",
        _five_digit_postcode, False,
        ("Lukas", "Leon", "Jonas", "Maximilian", "Felix", "Paul", "Mia", "Hannah", "Lea", "Lena",
         "Jürgen", "Sören", "Anna", "Käthe", "Björn", "Jörg"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
         "Schulz", "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Schröder",
         "Krüger", "Hübner", "Yılmaz"),
        ("Hauptstraße", "Schulstraße", "Gartenstraße", "Bahnhofstraße", "Dorfstraße",
         "Bergstraße", "Lindenstraße", "Kirchstraße", "Goethestraße"),
        ("Berlin", "Hamburg", "München", "Köln", "Frankfurt am Main", "Stuttgart", "Düsseldorf",
         "Leipzig", "Dortmund", "Essen", "Bremen", "Dresden"),
    ),
    _Country(
        "BE", 0.05, ("nl", "fr"),
        lambda d, x: f"+32 4{d[:2]} {d[2:4]} {d[4:6]} {d[6:]}",
        _be_postcode, False,
        ("Lars", "Arthur", "Louis", "Jules", "Victor", "Olivia", "Marie", "Elise", "Noah", "Liam",
         "Hélène", "Léon", "Amélie", "Wout", "Jens"),
        ("Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems", "Claes", "Goossens",
         "Wouters", "De Smet", "Dubois", "Lambert", "Dupont", "Vermeulen", "Van Damme"),
        ("Kerkstraat", "Stationsstraat", "Rue de la Station", "Dorpstraat", "Rue de l'Église",
         "Molenstraat", "Nieuwstraat", "Avenue Louise"),
        ("Antwerpen", "Gent", "Charleroi", "Liège", "Bruxelles", "Brugge", "Namur", "Leuven",
         "Mons", "Mechelen"),
    ),
    _Country(
        "FR", 0.03, ("fr",),
        lambda d, x: f"+33 6 {d[:2]} {d[2:4]} {d[4:6]} {d[6:]}",
        _five_digit_postcode, True,
        ("Camille", "Léa", "Chloé", "Manon", "Inès", "Louise", "Gabriel", "Raphaël", "Hugo",
         "Théo", "Étienne", "Noé", "Maëlle", "François", "Adèle", "Jérôme"),
        ("Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois",
         "Moreau", "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "Fournier",
         "Lemaître", "Girard"),
        ("rue de la République", "rue Victor Hugo", "avenue Jean Jaurès", "rue Pasteur",
         "boulevard Voltaire", "rue de la Paix", "place de l'Église", "allée des Tilleuls"),
        ("Paris", "Marseille", "Lyon", "Toulouse", "Nice", "Nantes", "Strasbourg", "Montpellier",
         "Bordeaux", "Lille", "Besançon", "Orléans"),
    ),
    _Country(
        "GB", 0.02, ("en",),
        lambda d, x: f"+44 7{x}{d[:2]} {d[2:]}",
        _gb_postcode, True,
        ("Oliver", "George", "Harry", "Jack", "Amelia", "Isla", "Ava", "Emily", "Charlotte",
         "Siobhan", "Niamh", "Rhys", "Aoife", "James", "William"),
        ("Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
         "Johnson", "Roberts", "O'Brien", "MacDonald", "Wright", "Walker"),
        ("High Street", "Station Road", "Church Lane", "Victoria Road", "Green Lane",
         "Manor Road", "Park Avenue", "Queen's Road"),
        ("London", "Birmingham", "Manchester", "Leeds", "Glasgow", "Liverpool", "Bristol",
         "Edinburgh", "Cardiff", "Belfast"),
    ),
    _Country(
        "ES", 0.02, ("es",),
        lambda d, x: f"+34 6{d[:2]} {d[2:5]} {d[5:]}",
        _five_digit_postcode, False,
        ("Lucía", "Sofía", "Martina", "María", "Hugo", "Mateo", "Martín", "Álvaro", "Javier",
         "Iñigo", "Begoña", "José", "Nuria", "Ángel"),
        ("García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez",
         "Pérez", "Gómez", "Jiménez", "Ruiz", "Hernández", "Díaz", "Muñoz", "Ibáñez"),
        ("Calle Mayor", "Calle Real", "Avenida de la Constitución", "Plaza de España",
         "Calle del Sol", "Calle de Alcalá", "Gran Vía"),
        ("Madrid", "Barcelona", "Valencia", "Sevilla", "Zaragoza", "Málaga", "Bilbao", "Córdoba",
         "Alicante", "A Coruña"),
    ),
    _Country(
        "IT", 0.015, ("it",),
        lambda d, x: f"+39 3{x}{d[:1]} {d[1:]}",
        _five_digit_postcode, False,
        ("Leonardo", "Francesco", "Alessandro", "Lorenzo", "Sofia", "Giulia", "Aurora", "Alice",
         "Niccolò", "Chiara", "Federica", "Mattia"),
        ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci",
         "Marino", "Greco", "Bruno", "Gallo", "Conti", "De Luca", "Mancini", "Costa"),
        ("Via Roma", "Via Garibaldi", "Corso Italia", "Via Dante", "Via Giuseppe Mazzini",
         "Piazza della Libertà", "Via Cavour"),
        ("Roma", "Milano", "Napoli", "Torino", "Palermo", "Genova", "Bologna", "Firenze", "Forlì",
         "Cagliari"),
    ),
    _Country(
        "PL", 0.015, ("pl",),
        lambda d, x: f"+48 5{d[:2]} {d[2:5]} {d[5:]}",
        _pl_postcode, False,
        ("Zofia", "Zuzanna", "Julia", "Hanna", "Antoni", "Jan", "Jakub", "Szymon", "Łukasz",
         "Małgorzata", "Agnieszka", "Wojciech", "Katarzyna", "Paweł", "Michał"),
        ("Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski",
         "Zieliński", "Szymański", "Woźniak", "Dąbrowski", "Kozłowski", "Jankowski", "Mazur"),
        ("ul. Polna", "ul. Leśna", "ul. Słoneczna", "ul. Krótka", "ul. Szkolna", "ul. Ogrodowa",
         "ul. Lipowa", "al. Jana Pawła II"),
        ("Warszawa", "Kraków", "Łódź", "Wrocław", "Poznań", "Gdańsk", "Szczecin", "Bydgoszcz",
         "Lublin", "Białystok"),
    ),
)  # fmt: skip
_COUNTRY_WEIGHTS = np.array([c.weight for c in COUNTRIES]) / sum(c.weight for c in COUNTRIES)
LANGUAGES = ("nl", "de", "fr", "en", "es", "it", "pl")
EMAIL_DOMAINS = (
    "example.com", "example.nl", "example.org", "mail.example", "post.example", "inbox.example",
)  # fmt: skip

# Merchant categories: (MCC, share of transactions, median amount EUR, spread, share online).
MERCHANT_CATEGORIES = (
    ("5411", 0.28, 35.0, 0.8, 0.05),  # grocery stores
    ("5812", 0.12, 28.0, 0.7, 0.05),  # restaurants
    ("5814", 0.08, 10.0, 0.5, 0.10),  # fast food
    ("5541", 0.07, 55.0, 0.4, 0.00),  # fuel
    ("4111", 0.08, 3.5, 0.6, 0.30),  # local transit
    ("5999", 0.08, 30.0, 1.0, 0.50),  # miscellaneous retail
    ("5732", 0.03, 180.0, 1.0, 0.50),  # electronics
    ("7011", 0.02, 140.0, 0.7, 0.70),  # hotels
    ("5912", 0.04, 18.0, 0.6, 0.20),  # pharmacies
    ("5311", 0.04, 60.0, 0.8, 0.30),  # department stores
    ("4814", 0.03, 30.0, 0.4, 0.90),  # telecom
    ("5691", 0.05, 55.0, 0.8, 0.50),  # clothing
    ("6011", 0.05, 0.0, 0.0, 0.00),  # cash withdrawals (ATM)
    ("4121", 0.03, 22.0, 0.5, 0.60),  # taxis and ride sharing
)
_ATM_CATEGORY = next(i for i, m in enumerate(MERCHANT_CATEGORIES) if m[0] == "6011")
# Countries merchants sit in, with their currency and how often a trip abroad goes there.
MERCHANT_COUNTRIES = (
    ("NL", "EUR", 0.05), ("DE", "EUR", 0.20), ("BE", "EUR", 0.15), ("FR", "EUR", 0.15),
    ("GB", "GBP", 0.08), ("ES", "EUR", 0.12), ("IT", "EUR", 0.08), ("PL", "PLN", 0.03),
    ("PT", "EUR", 0.05), ("AT", "EUR", 0.04), ("US", "USD", 0.04), ("CH", "CHF", 0.01),
)  # fmt: skip
# Card spending through the day, by hour.
_HOURLY_ACTIVITY = np.array(
    [0.10, 0.05, 0.03, 0.03, 0.04, 0.08, 0.25, 0.55, 0.75, 0.80, 0.85, 0.95,
     1.00, 0.95, 0.85, 0.85, 0.90, 1.00, 0.95, 0.80, 0.65, 0.50, 0.35, 0.20]
)  # fmt: skip

# Support notes. Each personal-data template holds exactly one kind of personal data.
_NOTES_WITH_PERSONAL_DATA = {
    "email": (
        "Customer wrote from {email} asking why the statement shows a fee twice.",
        "Please reply to {email} — klant wil een kopie van het contract. 📄",
        "Mail to {email} bounced; asked the customer to update details in the app.",
        "Kunde bittet um Rückmeldung, Kontakt nur per E-Mail: {email}.",
    ),
    "phone": (
        "Customer called from {phone} about a card payment that was declined abroad.",
        "Terugbelverzoek: {phone}, graag na vijf uur bellen. ☎️",
        "Le client a appelé depuis le {phone} — opposition sur la carte effectuée.",
        "Caller verified on {phone}; app login reset. 👍",
    ),
    "card_number": (
        "Card {card} reported stolen at the station, blocked and replacement ordered.",
        "Dispute on card {card}: the café charged twice.",
        "Kaart {card} geblokkeerd na drie foute pincodes. 🔒",
        "Karte {card} im Ausland gesperrt; Kunde möchte Entsperrung.",
    ),
    "name": (
        "{name} visited the branch to change the address after moving. ID checked.",
        "Gesprek met {name} over de hypotheekofferte. Klant is tevreden 🙂",
        "{name} se plaint des frais de tenue de compte — geste commercial accordé.",
        "Spoke with {name}; the Überweisung was returned by the receiving bank.",
    ),
}
_NOTES_WITHOUT_PERSONAL_DATA = (
    "Customer asked about savings interest rates; sent the brochure. 👍",
    "Login problem after the app update; device binding reset. Résolu.",
    "Klant vraagt naar de jaarafrekening van de creditcard.",
    "Transaction dispute at a café in München — merchant contacted, awaiting reply.",
    "Fee question: explained the monthly package price. 💶",
    "Address change requested via the app; waiting for proof of address.",
    "Client mécontent du délai de traitement. Escalated to the team lead.",
    "Phishing mail reported, no credentials shared. Warned about fake text messages. 🎣",
    "Kunde fragt nach Kontoauszügen für die Steuererklärung.",
    "Card not received yet; a new card was dispatched by post. ✉️",
)
_TRANSCRIPT_SENTENCES = (
    "Agent explained the procedure step by step.",
    "Customer was put on hold while the back office checked the history.",
    "De klant gaf aan dat de app vaak vastloopt bij het inloggen.",
    "Der Kunde war freundlich, aber ungeduldig.",
    "Nous avons vérifié les dernières opérations — rien d'anormal. ✅",
    "Follow-up scheduled for next week; ticket stays open until confirmation.",
    "Customer mentioned the naïve phishing attempt and the façade of the fake site. 😅",
)
_LONG_NOTE_RATE = 0.03
_NOTE_WITH_PERSONAL_DATA_RATE = 0.30


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def _epoch_seconds(day: date) -> int:
    return (day - _EPOCH).days * _DAY


def _window(batch: int) -> tuple[int, int]:
    """Batch N covers calendar month N, counted from January 2024: [start, end) in epoch seconds."""
    month = batch - 1
    start = date(2024 + month // 12, month % 12 + 1, 1)
    month += 1
    end = date(2024 + month // 12, month % 12 + 1, 1)
    return _epoch_seconds(start), _epoch_seconds(end)


_DAY_MIN = (date(1900, 1, 1) - _EPOCH).days
_DAY_MAX = (date(2100, 1, 1) - _EPOCH).days


@lru_cache(maxsize=1)
def _day_strings() -> list[str]:
    first = date(1900, 1, 1)
    return [(first + timedelta(days=k)).isoformat() for k in range(_DAY_MAX - _DAY_MIN)]


@lru_cache(maxsize=1)
def _time_of_day_strings() -> list[str]:
    return [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(_DAY)]


@lru_cache(maxsize=1)
def _time_of_day_array() -> pa.Array:
    return pa.array(_time_of_day_strings(), pa.string())


def _format_day(epoch_day: int) -> str:
    return _day_strings()[epoch_day - _DAY_MIN]


def _format_ts(epoch_second: int) -> str:
    day = _day_strings()[epoch_second // _DAY - _DAY_MIN]
    return f"{day} {_time_of_day_strings()[epoch_second % _DAY]}"


def _format_ts_array(seconds: np.ndarray) -> pa.Array:
    """Epoch seconds to 'YYYY-MM-DD HH:MM:SS' strings, vectorized through two lookup tables."""
    if len(seconds) == 0:
        return pa.array([], pa.string())
    days = seconds // _DAY
    first = int(days.min())
    table = pa.array([_format_day(d) for d in range(first, int(days.max()) + 1)], pa.string())
    return pc.binary_join_element_wise(
        table.take(pa.array(days - first)),
        _time_of_day_array().take(pa.array(seconds % _DAY)),
        " ",
    )


def _prefixed_numbers(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Identifiers like 'C0000042' for an array of numbers, vectorized."""
    digits = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _format_cents(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _bad_amount(cents: int, variant: int) -> str:
    """An amount the way a careless export writes it: decimal comma and a currency word."""
    sign = "-" if cents < 0 else ""
    euros, rest = abs(cents) // 100, abs(cents) % 100
    return f"{sign}{euros},{rest:02d} EUR" if variant % 2 == 0 else f"EUR {sign}{euros}.{rest:02d}"


def _scramble(index: np.ndarray, modulus: int, seed: int, salt: int) -> np.ndarray:
    """A bijection of [0, modulus) applied to index: unique, random-looking numbers."""
    rng = np.random.default_rng([seed, _S_SCRAMBLE, salt])
    multiplier = int(rng.integers(10**6, 2**33))  # small enough that index * multiplier fits int64
    while math.gcd(multiplier, modulus) != 1:
        multiplier += 1
    offset = int(rng.integers(0, modulus))
    return (index.astype(np.int64) * multiplier + offset) % modulus


def luhn_check_digit(payload: np.ndarray) -> np.ndarray:
    """The Luhn check digit for each number (the digit to append on the right)."""
    total = np.zeros_like(payload)
    rest = payload.copy()
    position = 0
    while rest.any():
        digit = rest % 10
        # The payload's rightmost digit is doubled, as the check digit will follow it.
        if position % 2 == 0:
            digit = digit * 2
            digit = np.where(digit > 9, digit - 9, digit)
        total += digit
        rest //= 10
        position += 1
    return (10 - total % 10) % 10


def luhn_valid(number: str) -> bool:
    if not number.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


_IBAN_LETTER_DIGITS = str.maketrans({c: str(10 + k) for k, c in enumerate(_LETTERS)})


def _iban_digits(text: str) -> str:
    """IBAN letters as numbers (A=10 ... Z=35), for the mod-97 check."""
    return text.upper().translate(_IBAN_LETTER_DIGITS)


def iban_valid(iban: str) -> bool:
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", iban):
        return False
    return int(_iban_digits(iban[4:] + iban[:4])) % 97 == 1


def bsn_valid(number: str) -> bool:
    """The Dutch citizen service number's '11-check'."""
    if len(number) != 9 or not number.isdigit():
        return False
    digits = [int(c) for c in number]
    return (
        sum(w * d for w, d in zip(range(9, 1, -1), digits[:8], strict=True)) - digits[8]
    ) % 11 == 0


def _bsn_numbers(index: np.ndarray, seed: int) -> np.ndarray:
    """Unique 9-digit numbers that pass the BSN 11-check: 7 scrambled digits, then 2 solved."""
    first7 = 1_000_000 + _scramble(index, 9_000_000, seed, salt=3)
    weighted = np.zeros_like(first7)
    rest = first7.copy()
    for weight in range(3, 10):  # rightmost of the seven digits has weight 3
        weighted += weight * (rest % 10)
        rest //= 10
    last = (index.astype(np.int64) * 7 + 3) % 10
    # 9*d1 + ... + 2*d8 - d9 = 0 (mod 11), and 6 is the inverse of 2 modulo 11.
    eighth = 6 * (last - weighted) % 11
    last = np.where(eighth == 10, (last + 1) % 10, last)
    eighth = 6 * (last - weighted) % 11
    return first7 * 100 + eighth * 10 + last


@lru_cache(maxsize=4096)
def _ascii_fold(text: str) -> str:
    special = str.maketrans({"ł": "l", "Ł": "L", "ß": "ss", "ø": "o", "ı": "i"})
    decomposed = unicodedata.normalize("NFKD", text.translate(special))
    return "".join(c for c in decomposed if c.isascii() and c.isalpha()).lower()


def _email(first: str, last: str, pattern: int, domain: int, number: int) -> str:
    f, ln = _ascii_fold(first), _ascii_fold(last)
    local = (f"{f}.{ln}", f"{f[:1]}.{ln}", f"{f}{ln}", f"{ln}.{f}")[pattern % 4]
    return f"{local}{number}@{EMAIL_DOMAINS[domain % len(EMAIL_DOMAINS)]}"


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


# --------------------------------------------------------------------------------------------
# Bad-row planning
# --------------------------------------------------------------------------------------------


def _kind_counts(total: int, kinds: Sequence[str], rotate: int = 0) -> list[int]:
    """Round-robin share of `total` over kinds; `rotate` moves the remainder between chunks."""
    counts = [total // len(kinds)] * len(kinds)
    for k in range(total % len(kinds)):
        counts[(k + rotate) % len(kinds)] += 1
    return counts


def _plan_in_place(
    rng: np.random.Generator, rows: int, kinds: Sequence[str], rate: float, rotate: int = 0
) -> np.ndarray:
    """Defect code per row (0 = clean, k = kinds[k-1]) for files where bad rows replace rows.

    Bad rows sit only at odd positions, so the row before each is clean: a duplicate repeats a
    clean row and an out-of-order row is moved before a clean predecessor, one defect per row.
    """
    codes = np.zeros(rows, dtype=np.int8)
    slots = rows // 2
    total = min(round(rate * rows), slots)
    if total <= 0:
        return codes
    positions = rng.choice(slots, size=total, replace=False) * 2 + 1
    assigned = np.repeat(
        np.arange(1, len(kinds) + 1, dtype=np.int8), _kind_counts(total, kinds, rotate)
    )
    codes[positions] = rng.permutation(assigned)
    return codes


def _plan_extra(
    rng: np.random.Generator, rows: int, kinds: Sequence[str], rate: float
) -> dict[int, int]:
    """For reference files: clean row position -> defect code of the corrupted copy after it."""
    total = min(round(rate * rows), rows)
    if total <= 0:
        return {}
    positions = np.sort(rng.choice(rows, size=total, replace=False))
    assigned = np.repeat(np.arange(1, len(kinds) + 1), _kind_counts(total, kinds))
    return dict(zip(positions.tolist(), rng.permutation(assigned).tolist(), strict=True))


def _diurnal_times(rng: np.random.Generator, count: int, low: int, high: int) -> np.ndarray:
    """`count` sorted epoch seconds in [low, high), busier by day than by night."""
    accept = _HOURLY_ACTIVITY / _HOURLY_ACTIVITY.max()
    found: list[np.ndarray] = []
    needed = count
    while needed > 0:
        candidates = rng.integers(low, high, size=2 * needed + 16)
        hours = candidates % _DAY // 3600
        kept = candidates[rng.random(len(candidates)) < accept[hours]][:needed]
        found.append(kept)
        needed -= len(kept)
    times = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    times.sort()
    return times


# --------------------------------------------------------------------------------------------
# The customer population
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    """Customers first delivered in `batch`: numbers first+1 .. first+count."""

    batch: int
    first: int
    count: int


class _Population:
    """Every customer's stable attributes as arrays indexed by (customer number - 1).

    Attributes are drawn per fixed block of customers from a generator seeded by (seed, block),
    so customer 17 looks the same whether 100 or 1,000,000 customers exist. Derived identifiers
    (account, card, national id, phone) are scrambled bijections of an index: unique by design.
    """

    def __init__(self, seed: int, segments: Sequence[_Segment]):
        self.seed = seed
        self.segments = list(segments)
        self.total = sum(s.count for s in segments)
        for block in range(max(1, math.ceil(self.total / _BLOCK))):
            low = block * _BLOCK
            size = min(self.total - low, _BLOCK)
            for name, values in self._block(block).items():
                if block == 0:
                    setattr(self, name, np.empty(self.total, dtype=values.dtype))
                getattr(self, name)[low : low + size] = values[:size]
        index = np.arange(self.total, dtype=np.int64)
        self.creation_batch = np.ones(self.total, dtype=np.int16)
        created = self.created_history.copy()
        for segment in self.segments:
            if segment.batch == 1:
                continue
            start, end = _window(segment.batch)
            span = slice(segment.first, segment.first + segment.count)
            self.creation_batch[span] = segment.batch
            created[span] = (
                start
                + _WINDOW_MARGIN
                + (self.created_fraction[span] * (end - start - 2 * _WINDOW_MARGIN)).astype(
                    np.int64
                )
            )
        self.created_at = created
        self.has_credit = (self.account_count == 2) & self.second_is_credit
        self.card_count = np.where(self.has_credit, 2, 1 + self.extra_debit_card).astype(np.int8)
        self.account_offset = np.concatenate([[0], np.cumsum(self.account_count)[:-1]]).astype(
            np.int64
        )
        self.card_offset = np.concatenate([[0], np.cumsum(self.card_count)[:-1]]).astype(np.int64)
        self.national_id = _bsn_numbers(index, seed)
        self.phone_digits = _scramble(index, 10**8, seed, salt=4)
        self.account_total = int(self.account_count.sum())
        self.card_total = int(self.card_count.sum())
        self._card_numbers: np.ndarray | None = None

    def _block(self, block: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, _S_POPULATION, block])
        n = _BLOCK
        batch1_start, _ = _window(1)
        history_start = _epoch_seconds(date(2012, 1, 1))
        age_years = np.clip(rng.normal(45, 16, n), 18, 92)
        return {
            "country": rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_WEIGHTS).astype(np.int8),
            "first_raw": rng.integers(0, 2**31 - 1, size=n, dtype=np.int32),
            "last_raw": rng.integers(0, 2**31 - 1, size=n, dtype=np.int32),
            "street_raw": rng.integers(0, 2**31 - 1, size=n, dtype=np.int32),
            "house_number": rng.integers(1, 181, size=n).astype(np.int16),
            "postcode_raw": rng.integers(0, 2**31 - 1, size=n, dtype=np.int32),
            "city_raw": rng.integers(0, 2**31 - 1, size=n, dtype=np.int32),
            "birth_day": (batch1_start // _DAY - (age_years * 365.25).astype(np.int64)),
            # Recent customers are more common than old ones.
            "created_history": history_start
            + (rng.random(n) ** 0.6 * (batch1_start - _WINDOW_MARGIN - history_start)).astype(
                np.int64
            ),
            "created_fraction": rng.random(n, dtype=np.float32),
            "updated_fraction": rng.random(n, dtype=np.float32),
            "email_pattern": rng.integers(0, 4, size=n).astype(np.int8),
            "email_domain": rng.integers(0, len(EMAIL_DOMAINS), size=n).astype(np.int8),
            "speaks_english": rng.random(n) < 0.12,
            "language_pick": rng.integers(0, 2, size=n).astype(np.int8),
            "activity": rng.lognormal(0.0, 0.9, size=n).astype(np.float32),
            "account_count": (1 + (rng.random(n) < 0.55)).astype(np.int8),
            "second_is_credit": rng.random(n) < 0.4,
            "extra_debit_card": (rng.random(n) < 0.2).astype(np.int8),
            "savings_closed": rng.random(n) < 0.08,
            "usd_savings": rng.random(n) < 0.02,
            "second_open_fraction": rng.random(n, dtype=np.float32),
            "grants_analytics": rng.random(n) < 0.85,
            "grants_fraud_prevention": rng.random(n) < 0.93,
            "grants_marketing": rng.random(n) < 0.40,
            "grants_partner_sharing": rng.random(n) < 0.15,
            "consent_channel": rng.choice(3, size=n, p=[0.6, 0.3, 0.1]).astype(np.int8),
            "device_number": rng.integers(10**9, 10**10, size=n),
        }

    # --- identifiers ---------------------------------------------------------------------
    @staticmethod
    def customer_id(index: int) -> str:
        return f"C{index + 1:07d}"

    def card_numbers(self) -> np.ndarray:
        """All cards, in card-index order: debit cards 4..., credit cards 53..., Luhn-valid."""
        if self._card_numbers is None:
            card_index = np.arange(self.card_total, dtype=np.int64)
            owner = np.repeat(np.arange(self.total), self.card_count)
            is_credit = (card_index - self.card_offset[owner] == 1) & self.has_credit[owner]
            payload = np.where(
                is_credit,
                53 * 10**13 + _scramble(card_index, 10**13, self.seed, salt=5),
                4 * 10**14 + _scramble(card_index, 10**14, self.seed, salt=6),
            )
            self._card_numbers = payload * 10 + luhn_check_digit(payload)
        return self._card_numbers

    def ibans(self, account_index: np.ndarray) -> list[str]:
        """Dutch IBANs 'NL' + check + 'LAKE' + 10 digits, check digits computed vectorized."""
        numbers = _scramble(account_index, 10**10, self.seed, salt=7)
        # mod 97 of the digits of 'LAKE' + number + 'NL00', assembled piece by piece.
        bank = int(_iban_digits("LAKE")) % 97
        tail = int(_iban_digits("NL00"))
        remainder = (bank * pow(10, 16, 97) + numbers % 97 * pow(10, 6, 97) + tail % 97) % 97
        checks = (98 - remainder).tolist()
        return [f"NL{c:02d}LAKE{n:010d}" for c, n in zip(checks, numbers.tolist(), strict=True)]

    # --- personal data -------------------------------------------------------------------
    def name(self, i: int) -> tuple[str, str]:
        country = COUNTRIES[self.country[i]]
        return (
            country.first_names[self.first_raw[i] % len(country.first_names)],
            country.last_names[self.last_raw[i] % len(country.last_names)],
        )

    def email(self, i: int, pattern: int | None = None, domain: int | None = None) -> str:
        first, last = self.name(i)
        return _email(
            first,
            last,
            self.email_pattern[i] if pattern is None else pattern,
            self.email_domain[i] if domain is None else domain,
            i + 1,
        )

    def phone(self, i: int) -> str:
        return COUNTRIES[self.country[i]].phone(f"{self.phone_digits[i]:08d}", i % 9 + 1)

    def account_opened_at(self, owner: np.ndarray, which: np.ndarray) -> np.ndarray:
        """When each customer's first (which=0) or second account opened: after the customer was
        created and before the end of the batch that delivered the customer."""
        created = self.created_at[owner]
        last_batch = int(self.creation_batch.max())
        window_ends = np.array([_window(max(b, 1))[1] for b in range(last_batch + 1)])
        horizon = window_ends[self.creation_batch[owner]]
        first = created + 600 + (self.updated_fraction[owner] * 3000).astype(np.int64)
        second = (
            created
            + 3600
            + (self.second_open_fraction[owner] * (horizon - created - 7200)).astype(np.int64)
        )
        return np.where(which == 0, first, second)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


@dataclass
class _Batch:
    """What one batch delivers; its window is calendar month `number` from January 2024."""

    number: int
    mode: str  # "initial" or "append"
    customers_before: int  # customers delivered by earlier batches
    new_customers: int
    update_rate: float
    transactions: int

    @property
    def window(self) -> tuple[int, int]:
        return _window(self.number)

    @property
    def active_customers(self) -> int:
        """Customers who transact, consent and call in this batch (batch 1: everyone)."""
        return self.new_customers if self.number == 1 else self.customers_before


class _Writer:
    """Writes one batch's files for a population and returns a summary entry per file."""

    def __init__(
        self,
        out_dir: Path,
        population: _Population,
        seed: int,
        bad_row_rate: float,
        rows_per_file: int,
        progress: Progress | None,
    ):
        self.out_dir = out_dir
        self.population = population
        self.seed = seed
        self.rate = bad_row_rate
        self.rows_per_file = rows_per_file
        self.progress = progress

    # --- bookkeeping ---------------------------------------------------------------------
    def _path(self, relative: str) -> Path:
        path = self.out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _report(
        self, source: str, relative: str, batch: _Batch, fmt: str, rows: int, columns, counts,
        extra: dict | None = None,
    ) -> dict:  # fmt: skip
        kinds = CONTRACTS[source]["defects"]
        bad = {kind: int(counts.get(kind, 0)) for kind in kinds}
        quarantinable = {k: v for k, v in bad.items() if k in QUARANTINABLE_KINDS}
        start, end = batch.window
        entry = {
            "path": relative,
            "source": source,
            "batch": batch.number,
            "format": fmt,
            "rows": int(rows),
            "columns": list(columns),
            "window_start": _format_ts(start),
            "window_end": _format_ts(end),
            "bad_rows": bad,
            "quarantinable": quarantinable,
            "quarantined_rows": sum(quarantinable.values()),
            "bronze_rows": int(rows) - sum(quarantinable.values()),
        }
        if extra:
            entry.update(extra)
        if self.progress:
            self.progress(f"{source}: {rows} rows -> {self.out_dir / relative}")
        return entry

    # --- customers -----------------------------------------------------------------------
    def customers(self, batch: _Batch) -> dict:
        pop = self.population
        start, end = batch.window
        rng = np.random.default_rng([self.seed, _S_UPDATES, batch.number])
        if batch.number == 1:
            rows_index = np.arange(batch.new_customers, dtype=np.int64)
            updated = np.zeros(0, dtype=np.int64)
        else:
            update_count = round(batch.update_rate * batch.customers_before)
            updated = np.sort(rng.choice(batch.customers_before, update_count, replace=False))
            new = np.arange(
                batch.customers_before, batch.customers_before + batch.new_customers,
                dtype=np.int64,
            )  # fmt: skip
            rows_index = np.concatenate([updated, new])
        n_updated = len(updated)
        # Per-row values in file order. Updated customers moved within their country and
        # changed their email address; everything else is the population's.
        street = pop.street_raw[rows_index]
        house = pop.house_number[rows_index].astype(np.int64)
        postcode = pop.postcode_raw[rows_index]
        city = pop.city_raw[rows_index]
        pattern = pop.email_pattern[rows_index].astype(np.int64)
        domain = pop.email_domain[rows_index].astype(np.int64)
        street[:n_updated] = rng.integers(0, 2**31 - 1, size=n_updated)
        house[:n_updated] = rng.integers(1, 181, size=n_updated)
        postcode[:n_updated] = rng.integers(0, 2**31 - 1, size=n_updated)
        city[:n_updated] = rng.integers(0, 2**31 - 1, size=n_updated)
        domain[:n_updated] += rng.integers(1, len(EMAIL_DOMAINS), size=n_updated)
        pattern[:n_updated] = rng.integers(0, 4, size=n_updated)
        created = pop.created_at[rows_index]
        horizon = end if batch.number > 1 else start
        updated_at = created + (pop.updated_fraction[rows_index] * (horizon - created)).astype(
            np.int64
        )
        updated_at[:n_updated] = (
            start
            + _WINDOW_MARGIN
            + (rng.random(n_updated) * (end - start - 2 * _WINDOW_MARGIN)).astype(np.int64)
        )
        if batch.number > 1:  # change-data extracts come in the order things changed
            order = np.argsort(updated_at, kind="stable")
            rows_index, street, house, postcode, city, pattern, domain, created, updated_at = (
                a[order]
                for a in (rows_index, street, house, postcode, city, pattern, domain, created,
                          updated_at)
            )  # fmt: skip
        with_language = batch.number >= 2

        def rows() -> Iterator[list[str]]:
            days = _day_strings()
            for low in range(0, len(rows_index), _BLOCK):
                part = slice(low, low + _BLOCK)
                index = rows_index[part]
                columns = [
                    index.tolist(), pop.country[index].tolist(), pop.first_raw[index].tolist(),
                    pop.last_raw[index].tolist(), pattern[part].tolist(), domain[part].tolist(),
                    pop.phone_digits[index].tolist(), pop.national_id[index].tolist(),
                    (pop.birth_day[index] - _DAY_MIN).tolist(), street[part].tolist(),
                    house[part].tolist(), postcode[part].tolist(), city[part].tolist(),
                    _format_ts_array(created[part]).to_pylist(),
                    _format_ts_array(updated_at[part]).to_pylist(),
                    pop.speaks_english[index].tolist(), pop.language_pick[index].tolist(),
                ]  # fmt: skip
                for i, c, fr, lr, pat, dom, ph, nid, bd, st, ho, pc_, ci, cr, up, en, lp in zip(
                    *columns, strict=True
                ):
                    country = COUNTRIES[c]
                    first = country.first_names[fr % len(country.first_names)]
                    last = country.last_names[lr % len(country.last_names)]
                    street_name = country.streets[st % len(country.streets)]
                    values = [
                        f"C{i + 1:07d}", first, last, _email(first, last, pat, dom, i + 1),
                        country.phone(f"{ph:08d}", i % 9 + 1), f"{nid:09d}", days[bd],
                        f"{ho} {street_name}" if country.house_number_first
                        else f"{street_name} {ho}",
                        country.postcode(pc_), country.cities[ci % len(country.cities)],
                        country.code, cr, up,
                    ]  # fmt: skip
                    if with_language:
                        values.append(
                            "en" if en else country.languages[lp % len(country.languages)]
                        )
                    yield values

        columns = CUSTOMER_COLUMNS + (CUSTOMER_DRIFT_COLUMNS if with_language else ())
        date_columns = [columns.index(c) for c in ("birth_date", "created_at", "updated_at")]
        kinds = CONTRACTS["customers"]["defects"]

        def corrupt(values: list[str], kind: str, serial: int) -> list[str]:
            values = list(values)
            if kind == MISSING_KEY:
                values[0] = ""
            elif kind == MALFORMED_DATE:
                column = date_columns[serial % 3]
                variants = MALFORMED_DATES if column == date_columns[0] else MALFORMED_TIMESTAMPS
                values[column] = variants[serial // 3 % 3]
            return values

        relative = f"core_banking/customers/customers_b{batch.number:03d}.csv"
        plan_rng = np.random.default_rng([self.seed, _S_CUSTOMER_FILE, batch.number])
        written, counts = self._write_csv(
            relative, columns, rows(), len(rows_index), kinds, corrupt, plan_rng
        )
        return self._report(
            "customers", relative, batch, "csv", written, columns, counts,
            {"updated_customers": n_updated, "new_customers": batch.new_customers},
        )  # fmt: skip

    def _write_csv(
        self,
        relative: str,
        columns: Sequence[str],
        clean_rows: Iterator[list[str]],
        clean_count: int,
        kinds: Sequence[str],
        corrupt: Callable[[list[str], str, int], list[str]],
        rng: np.random.Generator,
    ) -> tuple[int, dict[str, int]]:
        plan = _plan_extra(rng, clean_count, kinds, self.rate)
        counts = dict.fromkeys(kinds, 0)
        written = 0
        with open(self._path(relative), "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            for position, values in enumerate(clean_rows):
                writer.writerow(values)
                written += 1
                code = plan.get(position)
                if code:
                    kind = kinds[code - 1]
                    writer.writerow(corrupt(values, kind, counts[kind]))
                    counts[kind] += 1
                    written += 1
        return written, counts

    # --- accounts ------------------------------------------------------------------------
    def accounts(self, batch: _Batch) -> dict:
        pop = self.population
        rng = np.random.default_rng([self.seed, _S_ACCOUNTS, batch.number])
        first_new = 0 if batch.number == 1 else batch.customers_before
        owners = np.arange(first_new, first_new + batch.new_customers, dtype=np.int64)
        closing = np.zeros(0, dtype=np.int64)
        if batch.number > 1 and batch.customers_before:
            before = slice(0, batch.customers_before)
            candidates = np.flatnonzero(
                (pop.account_count[before] == 2)
                & ~pop.second_is_credit[before]
                & ~pop.savings_closed[before]
            )
            count = min(len(candidates), round(_ACCOUNT_CLOSE_RATE * len(candidates)))
            closures = np.random.default_rng([self.seed, _S_CLOSURES, batch.number])
            closing = np.sort(closures.choice(candidates, count, replace=False))
        # Closures (the customer's second account, a savings account) first, then new accounts.
        counts = pop.account_count[owners].astype(np.int64)
        owner = np.concatenate([closing, np.repeat(owners, counts)])
        which = np.concatenate([
            np.ones(len(closing), dtype=np.int64),
            np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts),
        ])  # fmt: skip
        account_index = pop.account_offset[owner] + which
        kind = np.where(which == 0, 0, np.where(pop.second_is_credit[owner], 2, 1))
        cents = np.where(
            kind == 0,
            rng.lognormal(7.3, 1.1, size=len(owner)) * 100,
            np.where(
                kind == 2,
                -rng.lognormal(5.5, 1.2, size=len(owner)) * 100,
                rng.lognormal(8.6, 1.4, size=len(owner)) * 100,
            ),
        ).astype(np.int64)
        closed = (np.arange(len(owner)) < len(closing)) | ((kind == 1) & pop.savings_closed[owner])
        cents[closed] = 0
        usd = (kind == 1) & pop.usd_savings[owner]
        opened = pop.account_opened_at(owner, which)

        def rows() -> Iterator[list[str]]:
            for low in range(0, len(owner), _BLOCK):
                part = slice(low, low + _BLOCK)
                for a, o, t, iban, u, op, cl, c in zip(
                    account_index[part].tolist(), owner[part].tolist(), kind[part].tolist(),
                    pop.ibans(account_index[part]), usd[part].tolist(),
                    _format_ts_array(opened[part]).to_pylist(), closed[part].tolist(),
                    cents[part].tolist(), strict=True,
                ):  # fmt: skip
                    yield [
                        f"A{a + 1:07d}", f"C{o + 1:07d}", ACCOUNT_TYPES[t], iban,
                        "USD" if u else "EUR", op, "closed" if cl else "open", _format_cents(c),
                    ]  # fmt: skip

        kinds = CONTRACTS["accounts"]["defects"]

        def corrupt(values: list[str], kind: str, serial: int) -> list[str]:
            values = list(values)
            if kind == MISSING_KEY:
                values[0] = ""
            elif kind == MALFORMED_DATE:
                values[5] = MALFORMED_TIMESTAMPS[serial % 3]
            elif kind == UNKNOWN_ENUM:
                if serial % 2 == 0:
                    values[2] = "crypto"
                else:
                    values[6] = "frozen"
            elif kind == BAD_AMOUNT:
                cents = round(float(values[7]) * 100)
                values[7] = _bad_amount(cents, serial)
            return values

        relative = f"core_banking/accounts/accounts_b{batch.number:03d}.csv"
        written, counts = self._write_csv(
            relative, ACCOUNT_COLUMNS, rows(), len(owner), kinds, corrupt, rng
        )
        return self._report("accounts", relative, batch, "csv", written, ACCOUNT_COLUMNS, counts)

    # --- card transactions ---------------------------------------------------------------
    def transactions(self, batch: _Batch) -> list[dict]:
        total = batch.transactions
        parts = max(1, math.ceil(total / self.rows_per_file))
        columns = TRANSACTION_COLUMNS + (TRANSACTION_DRIFT_COLUMNS if batch.number >= 2 else ())
        schema = pa.schema([(name, pa.string()) for name in columns])
        lookups = self._transaction_lookups(batch)
        start, end = batch.window
        low, high = start + _WINDOW_MARGIN, end
        reports = []
        chunk_index = 0
        first_row = 0
        for part, part_rows in enumerate(_split(total, parts), start=1):
            suffix = f"_p{part:03d}" if parts > 1 else ""
            relative = f"cards/transactions/transactions_b{batch.number:03d}{suffix}.parquet"
            counts: dict[str, int] = {}
            with pq.ParquetWriter(self._path(relative), schema, compression="zstd") as writer:
                chunks = max(1, math.ceil(part_rows / _CHUNK_ROWS))
                for chunk_rows in _split(part_rows, chunks):
                    # Each chunk owns a slice of the window in proportion to its rows, so the
                    # file is in time order across chunks.
                    chunk_low = low + (high - low) * first_row // max(total, 1)
                    chunk_high = low + (high - low) * (first_row + chunk_rows) // max(total, 1)
                    table, chunk_counts = self._transaction_chunk(
                        batch, lookups, schema, chunk_index, first_row, chunk_rows,
                        max(chunk_low, low), max(chunk_high, chunk_low + 1),
                    )  # fmt: skip
                    writer.write_table(table, row_group_size=max(chunk_rows, 1))
                    for kind, count in chunk_counts.items():
                        counts[kind] = counts.get(kind, 0) + count
                    chunk_index += 1
                    first_row += chunk_rows
            reports.append(
                self._report("transactions", relative, batch, "parquet", part_rows, columns, counts)
            )
        return reports

    def _transaction_lookups(self, batch: _Batch) -> dict:
        pop = self.population
        active = max(batch.active_customers, 1)
        weights = pop.activity[:active]
        cumulative = np.cumsum(weights)
        card_numbers = pop.card_numbers()
        return {
            "active": active,
            "cdf": cumulative / cumulative[-1],
            "customer_ids": _prefixed_numbers("C", np.arange(1, active + 1), 7),
            "account_ids": _prefixed_numbers("A", np.arange(1, pop.account_total + 1), 7),
            "card_numbers": pa.array(card_numbers).cast(pa.string()),
            "device_ids": pc.binary_join_element_wise(
                "DEV", pa.array(pop.device_number[:active]).cast(pa.string()), ""
            ),
            "home_merchant_country": np.array(
                [[m[0] for m in MERCHANT_COUNTRIES].index(c.code) for c in COUNTRIES]
            ),
        }

    def _transaction_chunk(
        self, batch: _Batch, lookups: dict, schema: pa.Schema, chunk_index: int, first_row: int,
        rows: int, low: int, high: int,
    ) -> tuple[pa.Table, dict[str, int]]:  # fmt: skip
        pop = self.population
        rng = np.random.default_rng([self.seed, _S_TRANSACTIONS, batch.number, chunk_index])
        customer = np.minimum(
            np.searchsorted(lookups["cdf"], rng.random(rows), side="right"), lookups["active"] - 1
        )
        second_card = (rng.random(rows) < 0.35) & (pop.card_count[customer] == 2)
        card = pop.card_offset[customer] + second_card
        on_credit = second_card & pop.has_credit[customer]
        account = pop.account_offset[customer] + on_credit
        category = rng.choice(
            len(MERCHANT_CATEGORIES), size=rows, p=_normalized([m[1] for m in MERCHANT_CATEGORIES])
        )
        medians = np.array([m[2] for m in MERCHANT_CATEGORIES])
        spreads = np.array([m[3] for m in MERCHANT_CATEGORIES])
        online_share = np.array([m[4] for m in MERCHANT_CATEGORIES])
        channel = np.where(
            category == _ATM_CATEGORY, 2, np.where(rng.random(rows) < online_share[category], 1, 0)
        )
        cents = np.maximum(
            np.round(np.exp(np.log(np.maximum(medians[category], 0.01))
                            + spreads[category] * rng.standard_normal(rows)) * 100),
            1,
        ).astype(np.int64)  # fmt: skip
        cents = np.where(category == _ATM_CATEGORY, rng.integers(2, 31, size=rows) * 1000, cents)
        abroad = rng.random(rows) > np.where(channel == 1, 0.55, 0.88)
        travel = rng.choice(
            len(MERCHANT_COUNTRIES), size=rows, p=_normalized([m[2] for m in MERCHANT_COUNTRIES])
        )
        merchant = np.where(abroad, travel, lookups["home_merchant_country"][pop.country[customer]])
        when = _diurnal_times(rng, rows, low, high)
        sequence = np.arange(first_row + 1, first_row + rows + 1, dtype=np.int64)

        kinds = CONTRACTS["transactions"]["defects"]
        codes = _plan_in_place(rng, rows, kinds, self.rate, rotate=chunk_index)
        code_of = {kind: k + 1 for k, kind in enumerate(kinds)}
        duplicates = np.flatnonzero(codes == code_of[DUPLICATE])
        if len(duplicates):
            source = np.arange(rows)
            source[duplicates] -= 1
            customer, card, account, category, channel, cents, merchant, when, sequence = (
                a[source]
                for a in (customer, card, account, category, channel, cents, merchant, when,
                          sequence)
            )  # fmt: skip
        start, _ = batch.window
        late = np.flatnonzero(codes == code_of[LATE_EVENT])
        when[late] = start - rng.integers(_LATE_MIN_DAYS * _DAY, _LATE_MAX_DAYS * _DAY, len(late))
        moved = np.flatnonzero(codes == code_of[OUT_OF_ORDER])
        when[moved] = when[moved - 1] - rng.integers(1, _WINDOW_MARGIN + 1, len(moved))

        amount = pc.binary_join_element_wise(
            pa.array(cents // 100).cast(pa.string()),
            pc.utf8_lpad(pa.array(cents % 100).cast(pa.string()), width=2, padding="0"),
            ".",
        )
        currencies = pa.array([m[1] for m in MERCHANT_COUNTRIES], pa.string())
        arrays = {
            "transaction_id": _prefixed_numbers(f"T{batch.number:02d}", sequence, 8),
            "account_id": lookups["account_ids"].take(pa.array(account)),
            "customer_id": lookups["customer_ids"].take(pa.array(customer)),
            "card_number": lookups["card_numbers"].take(pa.array(card)),
            "amount": amount,
            "currency": currencies.take(pa.array(merchant)),
            "merchant_category": pa.array([m[0] for m in MERCHANT_CATEGORIES]).take(
                pa.array(category)
            ),
            "merchant_country": pa.array([m[0] for m in MERCHANT_COUNTRIES]).take(
                pa.array(merchant)
            ),
            "transaction_ts": _format_ts_array(when),
            "channel": pa.array(list(TRANSACTION_CHANNELS)).take(pa.array(channel)),
        }
        if "device_id" in schema.names:
            arrays["device_id"] = pc.if_else(
                pa.array(channel == 1),
                lookups["device_ids"].take(pa.array(customer)),
                pa.scalar(None, pa.string()),
            )

        def patch(column: str, kind: str, values: Callable[[int, int], str | None]) -> None:
            positions = np.flatnonzero(codes == code_of[kind])
            if len(positions):
                arrays[column] = pc.replace_with_mask(
                    arrays[column],
                    pa.array(codes == code_of[kind]),
                    pa.array([values(int(p), k) for k, p in enumerate(positions)], pa.string()),
                )

        patch("transaction_ts", MALFORMED_DATE, lambda p, k: MALFORMED_TIMESTAMPS[k % 3])
        patch("transaction_id", MISSING_KEY, lambda p, k: "" if k % 2 == 0 else None)
        patch("channel", UNKNOWN_ENUM, lambda p, k: ("telepathy", "carrier_pigeon")[k % 2])
        patch("amount", BAD_AMOUNT, lambda p, k: _bad_amount(int(cents[p]), k))
        counts = {kind: int((codes == code_of[kind]).sum()) for kind in kinds}
        return pa.table([arrays[name] for name in schema.names], schema=schema), counts

    # --- JSON lines ----------------------------------------------------------------------
    def _write_jsonl(
        self,
        relative: str,
        records: Iterator[dict],
        codes: np.ndarray,
        kinds: Sequence[str],
        key: str,
        corrupt: Callable[[dict, str, int], dict],
        render: Callable[[dict], str] | None = None,
    ) -> dict[str, int]:
        """Write records, applying each row's planned defect (codes from _plan_in_place).

        `render` may replace json.dumps for clean rows when it gives the same text faster.
        """
        render = render or _json_line
        counts = dict.fromkeys(kinds, 0)
        previous: str | None = None
        buffer: list[str] = []
        with open(self._path(relative), "w", encoding="utf-8", newline="\n") as handle:
            for code, record in zip(codes.tolist(), records, strict=True):
                kind = kinds[code - 1] if code else None
                if kind == DUPLICATE:
                    line = previous
                elif kind == UNPARSEABLE_LINE:
                    text = json.dumps(record, ensure_ascii=False)
                    cut = max(1, len(text) // 2 - counts[kind] % 7)
                    line = text[:cut]  # any proper prefix of a JSON object fails to parse
                elif kind == MISSING_KEY:
                    record = dict(record)
                    record[key] = "" if counts[kind] % 2 == 0 else None
                    line = json.dumps(record, ensure_ascii=False)
                elif kind is not None and kind not in (LATE_EVENT, OUT_OF_ORDER):
                    line = json.dumps(corrupt(dict(record), kind, counts[kind]),
                                      ensure_ascii=False)  # fmt: skip
                else:  # clean, late and out-of-order rows: their time was set by the caller
                    line = render(record)
                if kind:
                    counts[kind] += 1
                buffer.append(line)
                previous = line
                if len(buffer) >= 50_000:
                    handle.write("\n".join(buffer) + "\n")
                    buffer.clear()
            if buffer:
                handle.write("\n".join(buffer) + "\n")
        return counts

    @staticmethod
    def _shift_times(
        rng: np.random.Generator, when: np.ndarray, codes: np.ndarray, kinds: Sequence[str],
        window_start: int,
    ) -> None:  # fmt: skip
        """Give late and out-of-order rows their time (rows are otherwise in time order)."""
        code_of = {kind: k + 1 for k, kind in enumerate(kinds)}
        late = np.flatnonzero(codes == code_of[LATE_EVENT])
        when[late] = window_start - rng.integers(
            _LATE_MIN_DAYS * _DAY, _LATE_MAX_DAYS * _DAY, len(late)
        )
        moved = np.flatnonzero(codes == code_of[OUT_OF_ORDER])
        when[moved] = when[moved - 1] - rng.integers(1, _WINDOW_MARGIN + 1, len(moved))

    # --- consent events ------------------------------------------------------------------
    def consent_events(self, batch: _Batch) -> dict:
        pop = self.population
        rng = np.random.default_rng([self.seed, _S_CONSENT, batch.number])
        start, end = batch.window
        low = start + _WINDOW_MARGIN
        grants = {
            "analytics": pop.grants_analytics,
            "marketing": pop.grants_marketing,
            "fraud_prevention": pop.grants_fraud_prevention,
            "partner_sharing": pop.grants_partner_sharing,
        }
        customers_, purposes_, actions_, times_, channels_ = [], [], [], [], []

        def add(who: np.ndarray, purpose: str, action: int, when: np.ndarray, channel) -> None:
            customers_.append(who)
            purposes_.append(np.full(len(who), PURPOSES.index(purpose), dtype=np.int8))
            actions_.append(np.full(len(who), action, dtype=np.int8))
            times_.append(when.astype(np.int64))
            channels_.append(np.asarray(channel, dtype=np.int8))

        first_new = 0 if batch.number == 1 else batch.customers_before
        newcomers = np.arange(first_new, first_new + batch.new_customers, dtype=np.int64)
        for purpose in PURPOSES:
            who = newcomers[grants[purpose][newcomers]]
            if batch.number == 1:  # the consent platform went live with batch 1: all grants now
                when = rng.integers(low, end, size=len(who))
            else:  # new customers consent while signing up
                when = np.minimum(pop.created_at[who] + rng.integers(0, 600, len(who)), end - 1)
            add(who, purpose, 0, when, pop.consent_channel[who])
            if batch.number == 1:  # some change their mind within the month
                change = rng.random(len(who)) < {"marketing": 0.05, "partner_sharing": 0.08}.get(
                    purpose, 0.005
                )
                later = when[change] + (rng.random(change.sum()) * (end - when[change])).astype(
                    np.int64
                )
                add(who[change], purpose, 1, np.minimum(later, end - 1),
                    rng.integers(0, 3, change.sum()))  # fmt: skip
        if batch.number > 1 and batch.customers_before:
            existing = np.arange(batch.customers_before, dtype=np.int64)
            # (purpose, customers it applies to, share who act, action)
            changes = (
                ("marketing", grants["marketing"][existing], 0.03, 1),
                ("partner_sharing", grants["partner_sharing"][existing], 0.05, 1),
                ("analytics", grants["analytics"][existing], 0.005, 1),
                ("marketing", ~grants["marketing"][existing], 0.015, 0),
                ("partner_sharing", ~grants["partner_sharing"][existing], 0.01, 0),
            )
            for purpose, eligible, share, action in changes:
                who = existing[eligible & (rng.random(len(existing)) < share)]
                add(who, purpose, action, rng.integers(low, end, size=len(who)),
                    rng.integers(0, 3, len(who)))  # fmt: skip

        who = np.concatenate(customers_) if customers_ else np.zeros(0, np.int64)
        order = np.argsort(np.concatenate(times_), kind="stable") if customers_ else who
        who = who[order]
        purpose = np.concatenate(purposes_)[order] if customers_ else who
        action = np.concatenate(actions_)[order] if customers_ else who
        when = np.concatenate(times_)[order] if customers_ else who.copy()
        channel = np.concatenate(channels_)[order] if customers_ else who
        kinds = CONTRACTS["consent_events"]["defects"]
        codes = _plan_in_place(rng, len(who), kinds, self.rate)
        self._shift_times(rng, when, codes, kinds, start)

        def records() -> Iterator[dict]:
            for low in range(0, len(who), _BLOCK):  # in blocks: bounded memory at any scale
                part = slice(low, low + _BLOCK)
                for k, i, p, a, t, c in zip(
                    range(low + 1, low + len(who[part]) + 1), who[part].tolist(),
                    purpose[part].tolist(), action[part].tolist(),
                    _format_ts_array(when[part]).to_pylist(), channel[part].tolist(), strict=True,
                ):  # fmt: skip
                    yield {
                        "event_id": f"E{batch.number:02d}{k:08d}",
                        "customer_id": f"C{i + 1:07d}",
                        "purpose": PURPOSES[p],
                        "action": CONSENT_ACTIONS[a],
                        "event_ts": t,
                        "channel": CONSENT_CHANNELS[c],
                    }

        def corrupt(record: dict, kind: str, serial: int) -> dict:
            if kind == MALFORMED_DATE:
                record["event_ts"] = MALFORMED_TIMESTAMPS[serial % 3]
            elif kind == UNKNOWN_ENUM:
                if serial % 2 == 0:
                    record["purpose"] = "telepathy"
                else:
                    record["action"] = "maybe"
            return record

        relative = f"consent/events/consent_events_b{batch.number:03d}.jsonl"
        counts = self._write_jsonl(
            relative, records(), codes, kinds, "event_id", corrupt, _consent_line
        )
        return self._report(
            "consent_events", relative, batch, "jsonl", len(who), CONSENT_COLUMNS, counts
        )

    # --- support cases -------------------------------------------------------------------
    def support_cases(self, batch: _Batch) -> dict:
        pop = self.population
        rng = np.random.default_rng([self.seed, _S_SUPPORT, batch.number])
        start, end = batch.window
        share = 0.08 if batch.number == 1 else 0.04
        active = batch.active_customers
        count = round(share * active)
        who = rng.integers(0, max(active, 1), size=count)
        when = np.sort(rng.integers(start + _WINDOW_MARGIN, end, size=count))
        channel = rng.choice(len(SUPPORT_CHANNELS), size=count, p=[0.45, 0.25, 0.2, 0.1])
        category = rng.integers(0, len(SUPPORT_CATEGORIES), size=count)
        status = rng.choice(len(SUPPORT_STATUSES), size=count, p=[0.2, 0.15, 0.35, 0.3])
        pii_kind = np.where(
            rng.random(count) < _NOTE_WITH_PERSONAL_DATA_RATE,
            rng.integers(0, len(NOTE_PII_TYPES), size=count),
            -1,
        )
        template = rng.integers(0, 1 << 30, size=count)
        long_note = rng.random(count) < _LONG_NOTE_RATE
        grouped_card = rng.random(count) < 0.5
        second_card = rng.random(count) < 0.3
        card_numbers = pop.card_numbers()
        kinds = CONTRACTS["support_cases"]["defects"]
        codes = _plan_in_place(rng, count, kinds, self.rate)

        def note(k: int, i: int) -> str:
            kind = int(pii_kind[k])
            if kind < 0:
                text = _NOTES_WITHOUT_PERSONAL_DATA[template[k] % len(_NOTES_WITHOUT_PERSONAL_DATA)]
            else:
                pii = NOTE_PII_TYPES[kind]
                options = _NOTES_WITH_PERSONAL_DATA[pii]
                text = options[template[k] % len(options)]
                if pii == "email":
                    text = text.format(email=pop.email(i))
                elif pii == "phone":
                    text = text.format(phone=pop.phone(i))
                elif pii == "name":
                    text = text.format(name=" ".join(pop.name(i)))
                else:
                    card_index = pop.card_offset[i] + (second_card[k] & (pop.card_count[i] == 2))
                    digits = str(card_numbers[card_index])
                    if grouped_card[k]:
                        digits = " ".join(digits[g : g + 4] for g in range(0, 16, 4))
                    text = text.format(card=digits)
            if long_note[k]:
                sentences = [
                    _TRANSCRIPT_SENTENCES[(template[k] + s) % len(_TRANSCRIPT_SENTENCES)]
                    for s in range(25 + int(template[k] % 40))
                ]
                text = f"{text} Transcript: {' '.join(sentences)}"
            return text

        def records() -> Iterator[dict]:
            for k in range(count):
                i = int(who[k])
                yield {
                    "case_id": f"S{batch.number:02d}{k + 1:08d}",
                    "customer_id": pop.customer_id(i),
                    "opened_at": _format_ts(int(when[k])),
                    "channel": SUPPORT_CHANNELS[channel[k]],
                    "category": SUPPORT_CATEGORIES[category[k]],
                    "status": SUPPORT_STATUSES[status[k]],
                    "note": note(k, i),
                }

        def corrupt(record: dict, kind: str, serial: int) -> dict:
            if kind == MALFORMED_DATE:
                record["opened_at"] = MALFORMED_TIMESTAMPS[serial % 3]
            elif kind == UNKNOWN_ENUM:
                if serial % 2 == 0:
                    record["status"] = "limbo"
                else:
                    record["channel"] = "carrier_pigeon"
            return record

        relative = f"support/cases/support_cases_b{batch.number:03d}.jsonl"
        counts = self._write_jsonl(relative, records(), codes, kinds, "case_id", corrupt)
        # Personal data in notes, counted over the lines that parse (duplicates included).
        personal = dict.fromkeys(NOTE_PII_TYPES, 0)
        code_unparseable = kinds.index(UNPARSEABLE_LINE) + 1
        code_duplicate = kinds.index(DUPLICATE) + 1
        for k in range(count):
            source = k - 1 if codes[k] == code_duplicate else k
            if codes[k] != code_unparseable and pii_kind[source] >= 0:
                personal[NOTE_PII_TYPES[pii_kind[source]]] += 1
        return self._report(
            "support_cases", relative, batch, "jsonl", count, SUPPORT_COLUMNS, counts,
            {"notes_with_personal_data": personal},
        )  # fmt: skip


def _json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def _consent_line(record: dict) -> str:
    """json.dumps output for a clean consent record, built directly: its values are plain ASCII
    identifiers, enum words and timestamps that need no escaping (3x faster at scale)."""
    return (
        f'{{"event_id": "{record["event_id"]}", "customer_id": "{record["customer_id"]}", '
        f'"purpose": "{record["purpose"]}", "action": "{record["action"]}", '
        f'"event_ts": "{record["event_ts"]}", "channel": "{record["channel"]}"}}'
    )


def _normalized(weights: Sequence[float]) -> np.ndarray:
    array = np.asarray(weights, dtype=float)
    return array / array.sum()


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _validate(customers: int, transactions: int, seed: int, bad_row_rate: float) -> None:
    if customers < 1:
        raise LandingError("customers must be at least 1")
    if customers > 9_999_999:
        raise LandingError("customers must be below 10,000,000 (customer ids have 7 digits)")
    if transactions < 0 or transactions > 99_999_999:
        raise LandingError("transactions per batch must be between 0 and 99,999,999")
    if seed < 0:
        raise LandingError("seed must be a non-negative integer")
    if not 0.0 <= bad_row_rate <= 0.5:
        raise LandingError("bad_row_rate must be between 0 and 0.5")


def _new_customers(customers: int) -> int:
    return max(1, round(customers * _NEW_CUSTOMER_RATE))


def _write_batch(writer: _Writer, batch: _Batch) -> tuple[list[dict], dict]:
    files = [writer.customers(batch), writer.accounts(batch)]
    files += writer.transactions(batch)
    files += [writer.consent_events(batch), writer.support_cases(batch)]
    start, end = batch.window
    entry = {
        "batch": batch.number,
        "mode": batch.mode,
        "window_start": _format_ts(start),
        "window_end": _format_ts(end),
        "customers_total": batch.customers_before + batch.new_customers,
        "new_customers": batch.new_customers,
        "updated_customers": files[0]["updated_customers"],
        "transactions": batch.transactions,
    }
    return files, entry


def _write_summary(out_dir: Path, summary: dict) -> None:
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    (out_dir / SUMMARY_FILE).write_text(text, encoding="utf-8")


def read_summary(out_dir: Path) -> dict | None:
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def generate_landing(
    out_dir: Path,
    customers: int = 2000,
    transactions: int = 20000,
    seed: int = 42,
    batches: int = 2,
    bad_row_rate: float = 0.02,
    progress: Progress | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
) -> dict:
    """Write `batches` batches of landing files into out_dir and return the summary.

    `transactions` is the total over all batches (batch 1 takes any remainder first). Files of
    an earlier run with the same names are overwritten; other files are left alone.
    """
    _validate(customers, transactions, seed, bad_row_rate)
    if batches < 1:
        raise LandingError("batches must be at least 1")
    if rows_per_file < 1:
        raise LandingError("rows_per_file must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    segments = [_Segment(1, 0, customers)]
    for number in range(2, batches + 1):
        segments.append(
            _Segment(number, segments[-1].first + segments[-1].count, _new_customers(customers))
        )
    population = _Population(seed, segments)
    writer = _Writer(out_dir, population, seed, bad_row_rate, rows_per_file, progress)
    files: list[dict] = []
    batch_entries: list[dict] = []
    for segment, count in zip(segments, _split(transactions, batches), strict=True):
        batch = _Batch(
            number=segment.batch,
            mode="initial",
            customers_before=segment.first,
            new_customers=segment.count,
            update_rate=_UPDATE_RATE,
            transactions=count,
        )
        batch_files, entry = _write_batch(writer, batch)
        files += batch_files
        batch_entries.append(entry)
    summary = {
        "generator": "privacy_lakehouse.generate",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "parameters": {
            "customers": customers,
            "transactions": transactions,
            "batches": batches,
            "bad_row_rate": bad_row_rate,
            "rows_per_file": rows_per_file,
        },
        "quarantinable_kinds": list(QUARANTINABLE_KINDS),
        "valid_kinds": list(VALID_KINDS),
        "contracts": CONTRACTS,
        "batches": batch_entries,
        "files": files,
    }
    _write_summary(out_dir, summary)
    return summary


def append_batch(
    out_dir: Path,
    batch: int,
    transactions: int = 20000,
    seed: int | None = None,
    customers: int | None = None,
    bad_row_rate: float = 0.02,
    progress: Progress | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    overwrite: bool = False,
) -> dict:
    """Write one extra batch numbered `batch` (>= 2) for incremental runs; return the summary.

    The batch holds `transactions` transactions, new consent events and support cases, ~1%
    customer updates and a few account closures; no new customers. Seed and customer counts come
    from out_dir's summary when there is one (explicit values must agree with it); without one,
    the earlier batches are assumed to be what generate_landing writes for these parameters.
    """
    out_dir = Path(out_dir)
    summary = read_summary(out_dir)
    if summary is not None:
        if seed is not None and seed != summary["seed"]:
            raise LandingError(
                f"{out_dir} was generated with seed {summary['seed']}; --seed {seed} disagrees"
            )
        base_customers = summary["parameters"]["customers"]
        if customers is not None and customers != base_customers:
            raise LandingError(
                f"{out_dir} was generated with {base_customers} customers; "
                f"--customers {customers} disagrees"
            )
        seed = summary["seed"]
        customers = base_customers
    seed = 42 if seed is None else seed
    customers = 2000 if customers is None else customers
    _validate(customers, transactions, seed, bad_row_rate)
    if batch < 2:
        raise LandingError("an appended batch is numbered 2 or higher (batch 1 is the full load)")
    known = {entry["batch"]: entry for entry in (summary or {}).get("batches", [])}
    existing = [
        p for p in out_dir.rglob(f"*_b{batch:03d}*") if p.is_file()
    ] if out_dir.exists() else []  # fmt: skip
    if (batch in known or existing) and not overwrite:
        raise LandingError(f"batch {batch} already exists in {out_dir} (use --force to overwrite)")
    # Rebuild who exists, and in which batch each customer arrived. Batches the summary lists
    # say so; a batch it does not list was never written when the summary holds the full load
    # (batch 1), and otherwise is assumed to be what generate_landing writes.
    segments = [_Segment(1, 0, customers)]
    next_customer = customers
    for number in range(2, batch):
        if number in known:
            count = known[number]["new_customers"]
        else:
            count = 0 if 1 in known else _new_customers(customers)
        if count:
            segments.append(_Segment(number, next_customer, count))
            next_customer += count
    population = _Population(seed, segments)
    writer = _Writer(out_dir, population, seed, bad_row_rate, rows_per_file, progress)
    for path in existing:
        path.unlink()
    files, entry = _write_batch(
        writer,
        _Batch(
            number=batch,
            mode="append",
            customers_before=population.total,
            new_customers=0,
            update_rate=_APPEND_UPDATE_RATE,
            transactions=transactions,
        ),
    )
    entry["parameters"] = {"transactions": transactions, "bad_row_rate": bad_row_rate}
    if summary is None:
        summary = {
            "generator": "privacy_lakehouse.generate",
            "format_version": FORMAT_VERSION,
            "seed": seed,
            "parameters": {"customers": customers},
            "quarantinable_kinds": list(QUARANTINABLE_KINDS),
            "valid_kinds": list(VALID_KINDS),
            "contracts": CONTRACTS,
            "batches": [],
            "files": [],
        }
    summary["batches"] = [b for b in summary["batches"] if b["batch"] != batch] + [entry]
    summary["files"] = [f for f in summary["files"] if f["batch"] != batch] + files
    _write_summary(out_dir, summary)
    return summary


def remove_generated(out_dir: Path) -> int:
    """Delete the files an earlier run listed in its summary (and the summary); return how many."""
    out_dir = Path(out_dir)
    summary = read_summary(out_dir)
    removed = 0
    for entry in (summary or {}).get("files", []):
        path = out_dir / entry["path"]
        if path.is_file():
            path.unlink()
            removed += 1
    if summary is not None:
        (out_dir / SUMMARY_FILE).unlink()
    return removed


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="landing folder to write (default: the project's landing folder, "
        "PRIVACY_LAKEHOUSE_LANDING overrides)",
    )
    parser.add_argument("--customers", type=int, default=None,
                        help="customers in batch 1 (default 2000)")  # fmt: skip
    parser.add_argument(
        "--transactions",
        type=int,
        default=20000,
        help="card transactions over all batches; with --append-batch, in that batch "
        "(default 20000)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 42)")
    parser.add_argument("--batches", type=int, default=2, help="batches to write (default 2)")
    parser.add_argument(
        "--bad-row-rate",
        type=float,
        default=0.02,
        help="share of intentionally bad rows in each file (default 0.02)",
    )
    parser.add_argument(
        "--rows-per-file",
        type=int,
        default=DEFAULT_ROWS_PER_FILE,
        help="split a batch's transactions into Parquet files of at most this many rows "
        f"(default {DEFAULT_ROWS_PER_FILE:,})",
    )
    parser.add_argument(
        "--append-batch",
        type=int,
        metavar="N",
        default=None,
        help="write only one extra batch numbered N (new transactions, consent events, "
        "support cases, ~1%% customer updates) into an existing landing folder",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty folder: files listed by an earlier run's summary are "
        "replaced, other files are left alone",
    )


def run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out) if args.out else load_settings().landing_dir

    # Progress goes through the package's logger, so `privacy-lakehouse -q generate` is quiet;
    # errors are printed whatever the verbosity.
    progress = logging.getLogger(__name__)

    def report(message: str) -> None:
        progress.info("%s", message)

    def fail(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    began = time.perf_counter()
    try:
        if args.append_batch is not None:
            summary = append_batch(
                out_dir,
                args.append_batch,
                transactions=args.transactions,
                seed=args.seed,
                customers=args.customers,
                bad_row_rate=args.bad_row_rate,
                progress=report,
                rows_per_file=args.rows_per_file,
                overwrite=args.force,
            )
        else:
            if out_dir.exists() and any(out_dir.iterdir()):
                if not args.force:
                    fail(
                        f"error: {out_dir} is not empty; use --force to overwrite an earlier "
                        "run, or --append-batch N to add a batch"
                    )
                    return 2
                remove_generated(out_dir)
            summary = generate_landing(
                out_dir,
                customers=2000 if args.customers is None else args.customers,
                transactions=args.transactions,
                seed=42 if args.seed is None else args.seed,
                batches=args.batches,
                bad_row_rate=args.bad_row_rate,
                progress=report,
                rows_per_file=args.rows_per_file,
            )
    except LandingError as error:
        fail(f"error: {error}")
        return 2
    rows = sum(f["rows"] for f in summary["files"])
    bad = sum(sum(f["bad_rows"].values()) for f in summary["files"])
    report(
        f"done: {len(summary['files'])} files, {rows} rows ({bad} intentionally bad) in "
        f"{time.perf_counter() - began:.1f}s; summary -> {out_dir / SUMMARY_FILE}"
    )
    return 0
