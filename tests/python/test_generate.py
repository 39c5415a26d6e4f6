"""The synthetic landing generator: layout, determinism, checksums, and exact bad-row counts.

Every defect the summary declares is re-detected here from the files themselves, with this
file's own parsers and checksum code, so a generator that miscounts or mislabels fails.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from privacy_lakehouse import cli
from privacy_lakehouse import generate as gen

CUSTOMERS = 1000
TRANSACTIONS = 4000
SEED = 7
RATE = 0.1
ROWS_PER_FILE = 1000  # 2,000 transactions per batch -> two part files per batch
CHUNK_ROWS = 400  # several chunks per part file, to test ordering across chunk borders

TS = "%Y-%m-%d %H:%M:%S"
KEYS = {
    "customers": "customer_id",
    "accounts": "account_id",
    "transactions": "transaction_id",
    "consent_events": "event_id",
    "support_cases": "case_id",
}
DATES = {
    "customers": {"birth_date": "%Y-%m-%d", "created_at": TS, "updated_at": TS},
    "accounts": {"opened_at": TS},
    "transactions": {"transaction_ts": TS},
    "consent_events": {"event_ts": TS},
    "support_cases": {"opened_at": TS},
}
EVENT_TIME = {"transactions": "transaction_ts", "consent_events": "event_ts"}
AMOUNTS = {"accounts": "balance", "transactions": "amount"}
ENUMS = {
    "accounts": {"account_type": {"checking", "savings", "credit"}, "status": {"open", "closed"}},
    "transactions": {"channel": {"pos", "online", "atm"}},
    "consent_events": {
        "purpose": {"analytics", "marketing", "fraud_prevention", "partner_sharing"},
        "action": {"grant", "revoke"},
        "channel": {"app", "web", "branch"},
    },
}
AMOUNT = re.compile(r"-?[0-9]+\.[0-9]{2}")
QUARANTINABLE = {"malformed_date", "missing_key", "unknown_enum", "bad_amount", "unparseable_line"}


def _generate(out_dir: Path, seed: int = SEED, **overrides) -> dict:
    parameters = {
        "customers": CUSTOMERS,
        "transactions": TRANSACTIONS,
        "seed": seed,
        "batches": 2,
        "bad_row_rate": RATE,
        "rows_per_file": ROWS_PER_FILE,
    }
    parameters.update(overrides)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gen, "_CHUNK_ROWS", CHUNK_ROWS)
        return gen.generate_landing(out_dir, **parameters)


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("landing")
    return out_dir, _generate(out_dir)


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


# --------------------------------------------------------------------------------------------
# Reading the files back, independently of the generator
# --------------------------------------------------------------------------------------------


def read_records(path: Path) -> list[tuple[str | None, dict | None]]:
    """(raw line for JSONL else None, parsed record or None when the line does not parse)."""
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return [(None, row) for row in csv.DictReader(handle)]
    if path.suffix == ".parquet":
        return [(None, row) for row in pq.read_table(path).to_pylist()]
    records = []
    for line in path.read_text(encoding="utf-8").split("\n")[:-1]:
        try:
            records.append((line, json.loads(line)))
        except json.JSONDecodeError:
            records.append((line, None))
    return records


def _parses(value, fmt: str) -> bool:
    try:
        datetime.strptime(value, fmt)
    except (TypeError, ValueError):
        return False
    return True


def detect_defects(source: str, records, window_start: datetime, enums: dict) -> list[list[str]]:
    """Every defect found in each row, by this test's own reading of the contract."""
    found: list[list[str]] = []
    seen: set = set()
    previous_time: datetime | None = None
    for raw, row in records:
        defects: list[str] = []
        found.append(defects)
        if row is None:
            defects.append("unparseable_line")
            continue
        identity = raw if raw is not None else tuple(sorted(row.items(), key=lambda kv: kv[0]))
        if identity in seen:
            defects.append("duplicate")
        seen.add(identity)
        if row.get(KEYS[source]) in ("", None):
            defects.append("missing_key")
        if not all(_parses(row.get(c), f) for c, f in DATES[source].items()):
            defects.append("malformed_date")
        if any(row.get(c) not in allowed for c, allowed in enums.items()):
            defects.append("unknown_enum")
        if source in AMOUNTS and not AMOUNT.fullmatch(str(row[AMOUNTS[source]])):
            defects.append("bad_amount")
        if source in EVENT_TIME and _parses(row[EVENT_TIME[source]], TS):
            when = datetime.strptime(row[EVENT_TIME[source]], TS)
            if when < window_start:
                defects.append("late_event")
            else:
                if previous_time is not None and when < previous_time:
                    defects.append("out_of_order")
                previous_time = when
    return found


def _enums(source: str, summary: dict) -> dict:
    if source in ENUMS:
        return ENUMS[source]
    return {column: set(values) for column, values in summary["contracts"][source]["enums"].items()}


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number][::-1]
    total = sum(d if k % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for k, d in enumerate(digits))
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def bsn_ok(number: str) -> bool:
    digits = [int(c) for c in number]
    return (sum((9 - k) * digits[k] for k in range(8)) - digits[8]) % 11 == 0


def _clean_rows(out_dir: Path, summary: dict, source: str, batch: int | None = None) -> list:
    rows = []
    for entry in summary["files"]:
        if entry["source"] != source or (batch is not None and entry["batch"] != batch):
            continue
        window = datetime.strptime(entry["window_start"], TS)
        records = read_records(out_dir / entry["path"])
        defects = detect_defects(source, records, window, _enums(source, summary))
        rows += [row for (_, row), found in zip(records, defects, strict=True) if not found]
    return rows


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_layout_is_exactly_what_bronze_globs_for(landing):
    out_dir, summary = landing
    expected = {
        "_generator.json",
        "core_banking/customers/customers_b001.csv",
        "core_banking/customers/customers_b002.csv",
        "core_banking/accounts/accounts_b001.csv",
        "core_banking/accounts/accounts_b002.csv",
        "cards/transactions/transactions_b001_p001.parquet",
        "cards/transactions/transactions_b001_p002.parquet",
        "cards/transactions/transactions_b002_p001.parquet",
        "cards/transactions/transactions_b002_p002.parquet",
        "consent/events/consent_events_b001.jsonl",
        "consent/events/consent_events_b002.jsonl",
        "support/cases/support_cases_b001.jsonl",
        "support/cases/support_cases_b002.jsonl",
    }
    assert set(_file_bytes(out_dir)) == expected
    assert {f["path"] for f in summary["files"]} == expected - {"_generator.json"}
    assert json.loads((out_dir / "_generator.json").read_text()) == summary
    assert summary["seed"] == SEED
    assert summary["parameters"]["customers"] == CUSTOMERS
    assert summary["parameters"]["transactions"] == TRANSACTIONS
    assert summary["parameters"]["bad_row_rate"] == RATE
    assert set(summary["quarantinable_kinds"]) == QUARANTINABLE


def test_small_transaction_batches_get_one_unsplit_file(tmp_path):
    summary = gen.generate_landing(tmp_path, customers=20, transactions=30, batches=1)
    paths = [f["path"] for f in summary["files"] if f["source"] == "transactions"]
    assert paths == ["cards/transactions/transactions_b001.parquet"]
    assert pq.read_metadata(tmp_path / paths[0]).num_rows == 30


def test_same_seed_and_parameters_give_byte_identical_files(landing, tmp_path):
    out_dir, _ = landing
    _generate(tmp_path / "again")
    first, second = _file_bytes(out_dir), _file_bytes(tmp_path / "again")
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_another_seed_gives_different_data(landing, tmp_path):
    out_dir, _ = landing
    _generate(tmp_path / "other", seed=SEED + 1)
    first, other = _file_bytes(out_dir), _file_bytes(tmp_path / "other")
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_row_counts_in_the_summary_match_the_files(landing):
    out_dir, summary = landing
    for entry in summary["files"]:
        path = out_dir / entry["path"]
        if entry["format"] == "parquet":
            rows = pq.read_metadata(path).num_rows
        elif entry["format"] == "csv":
            rows = len(path.read_text(encoding="utf-8").splitlines()) - 1  # minus the header
        else:
            rows = path.read_text(encoding="utf-8").count("\n")
        assert rows == entry["rows"], entry["path"]
        assert entry["bronze_rows"] + entry["quarantined_rows"] == rows
    transactions = [f["rows"] for f in summary["files"] if f["source"] == "transactions"]
    assert sum(transactions) == TRANSACTIONS
    assert max(transactions) <= ROWS_PER_FILE
    assert [b["transactions"] for b in summary["batches"]] == [2000, 2000]


def test_every_declared_bad_row_is_found_in_the_files_and_nothing_else(landing):
    out_dir, summary = landing
    totals: dict[str, Counter] = defaultdict(Counter)
    for entry in summary["files"]:
        source = entry["source"]
        assert entry["window_start"] == f"2024-{entry['batch']:02d}-01 00:00:00"
        window = datetime.strptime(entry["window_start"], TS)
        records = read_records(out_dir / entry["path"])
        defects = detect_defects(source, records, window, _enums(source, summary))
        assert [d for d in defects if len(d) > 1] == [], f"{entry['path']}: rows with 2 defects"
        found = Counter(kind for row in defects for kind in row)
        declared = {kind: count for kind, count in entry["bad_rows"].items() if count}
        assert dict(found) == declared, entry["path"]
        quarantined = sum(1 for row in defects if row and row[0] in QUARANTINABLE)
        assert entry["quarantined_rows"] == quarantined
        assert entry["quarantinable"] == {
            k: v for k, v in entry["bad_rows"].items() if k in QUARANTINABLE
        }
        bad = sum(1 for row in defects if row)
        if source in ("customers", "accounts"):  # bad rows are extra copies
            assert bad == round(RATE * (entry["rows"] - bad))
        else:
            assert bad == pytest.approx(RATE * entry["rows"], abs=len(entry["bad_rows"]) + 1)
        totals[source].update(found)
    expected_kinds = {
        "customers": {"malformed_date", "missing_key", "duplicate"},
        "accounts": {"malformed_date", "missing_key", "unknown_enum", "bad_amount", "duplicate"},
        "transactions": {"malformed_date", "missing_key", "unknown_enum", "bad_amount",
                         "duplicate", "late_event", "out_of_order"},
        "consent_events": {"malformed_date", "missing_key", "unknown_enum", "unparseable_line",
                           "duplicate", "late_event", "out_of_order"},
        "support_cases": {"malformed_date", "missing_key", "unknown_enum", "unparseable_line",
                          "duplicate"},
    }  # fmt: skip
    assert {source: set(kinds) for source, kinds in totals.items()} == expected_kinds


def test_malformed_values_look_like_real_export_mistakes(landing):
    out_dir, summary = landing
    dates, amounts = set(), set()
    for entry in summary["files"]:
        if entry["source"] != "transactions":
            continue
        for row in pq.read_table(out_dir / entry["path"]).to_pylist():
            if not _parses(row["transaction_ts"], TS):
                dates.add(row["transaction_ts"])
            if not AMOUNT.fullmatch(row["amount"]):
                amounts.add(row["amount"])
    assert any(d.startswith("2024-13-45") for d in dates)
    assert any(d.startswith("31/02/2024") for d in dates)
    assert "yesterday" in dates
    assert any(re.fullmatch(r"[0-9]+,[0-9]{2} EUR", a) for a in amounts)


def test_no_bad_rows_when_the_rate_is_zero(tmp_path):
    summary = gen.generate_landing(tmp_path, customers=200, transactions=600, bad_row_rate=0.0)
    for entry in summary["files"]:
        assert set(entry["bad_rows"].values()) == {0}
        window = datetime.strptime(entry["window_start"], TS)
        records = read_records(tmp_path / entry["path"])
        defects = detect_defects(entry["source"], records, window, _enums(entry["source"], summary))
        assert not any(defects), entry["path"]


def test_schema_drift_arrives_in_batch_two(landing):
    out_dir, _ = landing
    header_1 = (out_dir / "core_banking/customers/customers_b001.csv").read_text().split("\n")[0]
    header_2 = (out_dir / "core_banking/customers/customers_b002.csv").read_text().split("\n")[0]
    base = ("customer_id,first_name,last_name,email,phone,national_id,birth_date,"
            "street_address,postcode,city,country,created_at,updated_at")  # fmt: skip
    assert header_1 == base
    assert header_2 == base + ",preferred_language"
    columns = [
        "transaction_id", "account_id", "customer_id", "card_number", "amount", "currency",
        "merchant_category", "merchant_country", "transaction_ts", "channel",
    ]  # fmt: skip
    schema_1 = pq.read_schema(out_dir / "cards/transactions/transactions_b001_p001.parquet")
    schema_2 = pq.read_schema(out_dir / "cards/transactions/transactions_b002_p002.parquet")
    assert schema_1.names == columns
    assert schema_2.names == columns + ["device_id"]
    assert {str(t) for t in schema_1.types} | {str(t) for t in schema_2.types} == {"string"}
    languages = {r["preferred_language"] for r in _clean_rows(out_dir, landing[1], "customers", 2)}
    assert "nl" in languages and languages <= {"nl", "de", "fr", "en", "es", "it", "pl"}
    devices = [
        r["device_id"] for r in _clean_rows(out_dir, landing[1], "transactions", 2)
        if r["channel"] == "online"
    ]  # fmt: skip
    assert devices and all(re.fullmatch(r"DEV[0-9]{10}", d) for d in devices)


def test_identifiers_are_well_formed_and_pass_their_checksums(landing):
    out_dir, summary = landing
    customers = _clean_rows(out_dir, summary, "customers")
    accounts = _clean_rows(out_dir, summary, "accounts")
    transactions = _clean_rows(out_dir, summary, "transactions")
    assert customers and accounts and transactions
    for row in customers:
        assert re.fullmatch(r"C[0-9]{7}", row["customer_id"])
        assert re.fullmatch(r"[0-9]{9}", row["national_id"]) and bsn_ok(row["national_id"])
        assert row["phone"].startswith("+") and re.fullmatch(r"\+[0-9]{2}( [0-9]+)+", row["phone"])
        assert re.fullmatch(r"[a-z.]+[0-9]+@[a-z.]+", row["email"])
    # A wrong checksum must fail the test's own checks (they can fail).
    assert not luhn_ok("4111111111111112") and luhn_ok("4111111111111111")
    assert not iban_ok("NL92LAKE0123456789") or not iban_ok("NL93LAKE0123456789")
    assert not bsn_ok("111222334") and bsn_ok("111222333")
    for row in accounts:
        assert re.fullmatch(r"A[0-9]{7}", row["account_id"])
        assert re.fullmatch(r"NL[0-9]{2}LAKE[0-9]{10}", row["iban"]) and iban_ok(row["iban"])
        assert gen.iban_valid(row["iban"])
    for row in transactions:
        assert re.fullmatch(r"T[0-9]{10}", row["transaction_id"])
        assert re.fullmatch(r"[0-9]{16}", row["card_number"]) and luhn_ok(row["card_number"])
        assert gen.luhn_valid(row["card_number"])
    assert len({r["iban"] for r in accounts}) == len({r["account_id"] for r in accounts})
    national_ids = {r["customer_id"]: r["national_id"] for r in customers}
    assert len(set(national_ids.values())) == len(national_ids)


def test_accounts_and_cards_belong_to_their_customers(landing):
    out_dir, summary = landing
    accounts = _clean_rows(out_dir, summary, "accounts", 1) + _clean_rows(
        out_dir, summary, "accounts", 2
    )
    owner = {row["account_id"]: row["customer_id"] for row in accounts}
    per_customer = Counter(owner.values())
    assert set(per_customer.values()) == {1, 2}
    assert len(per_customer) == CUSTOMERS + summary["batches"][1]["new_customers"]
    cards_of: dict[str, set] = defaultdict(set)
    card_owner: dict[str, set] = defaultdict(set)
    for row in _clean_rows(out_dir, summary, "transactions"):
        assert owner[row["account_id"]] == row["customer_id"]
        cards_of[row["customer_id"]].add(row["card_number"])
        card_owner[row["card_number"]].add(row["customer_id"])
    assert {len(cards) for cards in cards_of.values()} == {1, 2}
    assert {len(owners) for owners in card_owner.values()} == {1}


def test_values_follow_the_demo_banks_formats(landing):
    out_dir, summary = landing
    customers = _clean_rows(out_dir, summary, "customers", 1)
    countries = Counter(row["country"] for row in customers)
    assert countries.most_common(1)[0][0] == "NL"
    assert 0.7 < countries["NL"] / len(customers) < 0.9
    assert len(countries) >= 5
    for row in customers:
        if row["country"] == "NL":
            assert re.fullmatch(r"[1-9][0-9]{3} [A-Z]{2}", row["postcode"])
            assert re.fullmatch(r"\+31 6 [0-9]{8}", row["phone"])
        if row["country"] in ("DE", "FR", "ES", "IT"):
            assert re.fullmatch(r"[0-9]{5}", row["postcode"])
        assert datetime.strptime(row["created_at"], TS) <= datetime.strptime(row["updated_at"], TS)
        assert 18 <= 2024 - int(row["birth_date"][:4]) <= 93
    assert any(not row["last_name"].isascii() for row in customers)  # unicode names
    accounts = _clean_rows(out_dir, summary, "accounts", 1)
    assert {row["account_type"] for row in accounts} == {"checking", "savings", "credit"}
    assert {row["status"] for row in accounts} == {"open", "closed"}
    transactions = _clean_rows(out_dir, summary, "transactions")
    amounts = sorted(float(row["amount"]) for row in transactions)
    median, top = amounts[len(amounts) // 2], amounts[int(len(amounts) * 0.99)]
    assert 5 < median < 80 and top > 4 * median  # skewed, lognormal-like
    categories = Counter(row["merchant_category"] for row in transactions)
    assert categories.most_common(1)[0][0] == "5411"
    assert {"5812", "5999", "4111", "5541", "7011", "5732"} <= set(categories)
    for row in transactions:
        assert row["channel"] == "atm" if row["merchant_category"] == "6011" else True
        if row["merchant_country"] in ("NL", "DE", "FR"):
            assert row["currency"] == "EUR"
        if row["merchant_country"] == "GB":
            assert row["currency"] == "GBP"


def test_consent_follows_the_expected_mix(landing):
    out_dir, summary = landing
    granted: dict[str, set] = defaultdict(set)
    revoked = 0
    for row in _clean_rows(out_dir, summary, "consent_events", 1):
        if row["action"] == "grant":
            granted[row["purpose"]].add(row["customer_id"])
        else:
            revoked += 1
    # Bad rows take the place of generated events, so about RATE of each purpose's grants is gone.
    share = {purpose: len(who) / CUSTOMERS / (1 - RATE) for purpose, who in granted.items()}
    assert 0.78 < share["analytics"] < 0.92
    assert 0.88 < share["fraud_prevention"] < 0.98
    assert 0.33 < share["marketing"] < 0.47
    assert 0.10 < share["partner_sharing"] < 0.20
    assert revoked > 0
    later = _clean_rows(out_dir, summary, "consent_events", 2)
    assert {row["action"] for row in later} == {"grant", "revoke"}


def test_support_notes_carry_the_declared_personal_data(landing):
    out_dir, summary = landing
    names = {
        row["customer_id"]: f"{row['first_name']} {row['last_name']}"
        for row in _clean_rows(out_dir, summary, "customers")
    }
    email = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
    phone = re.compile(r"\+[0-9]{2} [0-9]")
    card = re.compile(r"\b[0-9]{4} ?[0-9]{4} ?[0-9]{4} ?[0-9]{4}\b")
    notes = []
    for entry in (f for f in summary["files"] if f["source"] == "support_cases"):
        found = Counter()
        for _, record in read_records(out_dir / entry["path"]):
            if record is None:
                continue
            note = record["note"]
            notes.append(note)
            found["email"] += bool(email.search(note))
            found["phone"] += bool(phone.search(note))
            found["card_number"] += bool(card.search(note))
            found["name"] += names.get(record["customer_id"], "\0") in note
        assert dict(found) == entry["notes_with_personal_data"], entry["path"]
        with_pii = sum(entry["notes_with_personal_data"].values())
        assert 0.15 < with_pii / entry["rows"] < 0.45
        assert all(count > 0 for count in entry["notes_with_personal_data"].values())
    assert any(not note.isascii() for note in notes)
    assert any(any(ord(c) > 0xFFFF for c in note) for note in notes)  # emoji
    assert max(len(note) for note in notes) > 1000


def test_batch_two_updates_existing_customers_and_adds_new_ones(landing):
    out_dir, summary = landing
    first = {r["customer_id"]: r for r in _clean_rows(out_dir, summary, "customers", 1)}
    second = _clean_rows(out_dir, summary, "customers", 2)
    updates = [r for r in second if r["customer_id"] in first]
    new = [r for r in second if r["customer_id"] not in first]
    batch = summary["batches"][1]
    assert len(updates) == batch["updated_customers"] == round(0.05 * CUSTOMERS)
    assert len(new) == batch["new_customers"] > 0
    for row in updates:
        before = first[row["customer_id"]]
        assert row["email"] != before["email"]
        assert (row["street_address"], row["postcode"]) != (
            before["street_address"], before["postcode"],
        )  # fmt: skip
        for same in ("first_name", "last_name", "national_id", "birth_date", "created_at"):
            assert row[same] == before[same]
        assert row["updated_at"] > before["updated_at"]
        assert row["updated_at"].startswith("2024-02")
    for row in new:
        assert row["created_at"].startswith("2024-02")


def test_append_batch_writes_only_that_batch(landing, tmp_path, capsys):
    source, summary = landing
    out_dir = tmp_path / "landing"
    shutil.copytree(source, out_dir)
    before = _file_bytes(out_dir)
    code = cli.main(["generate", "--out", str(out_dir), "--append-batch", "3",
                     "--transactions", "500"])  # fmt: skip
    assert code == 0
    after = _file_bytes(out_dir)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {
        "_generator.json",
        "core_banking/customers/customers_b003.csv",
        "core_banking/accounts/accounts_b003.csv",
        "cards/transactions/transactions_b003.parquet",
        "consent/events/consent_events_b003.jsonl",
        "support/cases/support_cases_b003.jsonl",
    }
    appended = json.loads(after["_generator.json"])
    assert [b["batch"] for b in appended["batches"]] == [1, 2, 3]
    assert appended["files"][: len(summary["files"])] == summary["files"]
    appended_transactions = out_dir / "cards/transactions/transactions_b003.parquet"
    assert pq.read_metadata(appended_transactions).num_rows == 500
    # ~1% updates of known customers, no new ones, and the same people as before.
    known = {r["customer_id"]: r for r in _clean_rows(out_dir, appended, "customers", 1)}
    known.update({r["customer_id"]: r for r in _clean_rows(out_dir, appended, "customers", 2)})
    updates = _clean_rows(out_dir, appended, "customers", 3)
    assert len(updates) == round(0.01 * len(known))
    for row in updates:
        assert row["national_id"] == known[row["customer_id"]]["national_id"]
        assert row["last_name"] == known[row["customer_id"]]["last_name"]
        assert row["updated_at"].startswith("2024-03")
    transactions = _clean_rows(out_dir, appended, "transactions", 3)
    assert {r["customer_id"] for r in transactions} <= set(known)
    earlier = _clean_rows(out_dir, appended, "transactions", 1)
    card_owner = {r["card_number"]: r["customer_id"] for r in earlier}
    assert any(r["card_number"] in card_owner for r in transactions)
    for row in transactions:
        assert card_owner.get(row["card_number"], row["customer_id"]) == row["customer_id"]
    capsys.readouterr()
    # The same batch again is refused.
    again = cli.main(["generate", "--out", str(out_dir), "--append-batch", "3"])
    assert again == 2
    assert "already exists" in capsys.readouterr().err
    assert _file_bytes(out_dir) == after


def test_append_batch_rejects_a_disagreeing_seed(landing, tmp_path, capsys):
    source, _ = landing
    out_dir = tmp_path / "landing"
    shutil.copytree(source, out_dir)
    code = cli.main(["generate", "--out", str(out_dir), "--append-batch", "3", "--seed", "1"])
    assert code == 2
    assert "seed" in capsys.readouterr().err
    assert not list(out_dir.rglob("*_b003*"))


def test_cli_refuses_a_non_empty_folder_and_force_keeps_foreign_files(tmp_path, capsys):
    out_dir = tmp_path / "landing"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("keep me")
    arguments = ["generate", "--out", str(out_dir), "--customers", "30", "--transactions", "90"]
    assert cli.main(arguments) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out_dir.iterdir()] == ["notes.txt"]
    assert cli.main(arguments + ["--force"]) == 0
    assert (out_dir / "notes.txt").read_text() == "keep me"
    assert (out_dir / "core_banking/customers/customers_b002.csv").is_file()
    # --force over an earlier, bigger run removes the files that run wrote.
    assert cli.main(arguments + ["--force", "--batches", "1"]) == 0
    assert not (out_dir / "core_banking/customers/customers_b002.csv").exists()
    assert (out_dir / "notes.txt").is_file()


def test_cli_prints_progress_and_uses_the_landing_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRIVACY_LAKEHOUSE_LANDING", str(tmp_path / "from_env"))
    assert cli.main(["generate", "--customers", "40", "--transactions", "100"]) == 0
    err = capsys.readouterr().err
    customers_file = tmp_path / "from_env" / "core_banking/customers/customers_b001.csv"
    assert f"customers: {len(customers_file.read_text().splitlines()) - 1} rows -> " in err
    assert str(customers_file) in err
    assert "transactions: 50 rows -> " in err
    # -q: no progress, and nothing else on success
    assert cli.main(["-q", "generate", "--out", str(tmp_path / "quiet"), "--customers", "40"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_rejects_invalid_parameters(tmp_path, capsys):
    code = cli.main(["generate", "--out", str(tmp_path / "x"), "--bad-row-rate", "0.9"])
    assert code == 2
    assert "bad_row_rate" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--customers", "--transactions", "--seed", "--batches",
                   "--bad-row-rate", "--append-batch", "--force", "--rows-per-file"):  # fmt: skip
        assert option in text


def test_appended_batch_does_not_depend_on_the_earlier_files_being_present(tmp_path):
    full, alone = tmp_path / "full", tmp_path / "alone"
    gen.generate_landing(full, customers=200, transactions=400, seed=5, bad_row_rate=0.05)
    for out_dir in (full, alone):
        gen.append_batch(out_dir, 3, transactions=150, seed=5, customers=200, bad_row_rate=0.05)
    written = _file_bytes(alone)
    assert sorted(written) == sorted(
        [
            "_generator.json",
            "core_banking/customers/customers_b003.csv",
            "core_banking/accounts/accounts_b003.csv",
            "cards/transactions/transactions_b003.parquet",
            "consent/events/consent_events_b003.jsonl",
            "support/cases/support_cases_b003.jsonl",
        ]
    )
    for name, content in written.items():
        if name != "_generator.json":
            assert (full / name).read_bytes() == content, name
    # A further batch on top of an append-only summary still knows every customer.
    summary = gen.append_batch(alone, 4, transactions=50)
    assert summary["seed"] == 5
    assert [b["customers_total"] for b in summary["batches"]] == [204, 204]
